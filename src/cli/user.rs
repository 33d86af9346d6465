//! `sluice user`: web UI accounts. `add` creates a user (or replaces its password and role),
//! `list` shows them, `remove` deletes one; `hash` prints the argon2 hash of a password for
//! `ui.admin_password_hash` in sluice.toml. Weak passwords — short ones, and those on the
//! shipped list of the most common ones — are refused for every role.
//! Passwords are read from stdin (a prompt without echo on a terminal), never taken from the
//! command line, where other users of the machine could see them.

use std::io::{BufRead, IsTerminal, Write};
use std::process::ExitCode;

use anyhow::Context;

use super::{DatabaseArgs, EXIT_USAGE};
use crate::store::{Role, Store};
use crate::web::auth::{ADMIN, hash_password};

#[derive(Debug, clap::Args)]
pub struct UserArgs {
    #[command(subcommand)]
    pub command: UserCommand,
}

#[derive(Debug, clap::Subcommand)]
pub enum UserCommand {
    /// Create a UI user, or set an existing user's password and role (their sessions end).
    Add(AddArgs),
    /// List the UI users and their roles.
    List(ListArgs),
    /// Delete a UI user; their sessions end at once.
    Remove(RemoveArgs),
    /// Print the argon2 hash of a password, for `ui.admin_password_hash` in sluice.toml.
    Hash,
}

#[derive(Debug, clap::Args)]
pub struct ListArgs {
    #[command(flatten)]
    pub database: DatabaseArgs,
}

#[derive(Debug, clap::Args)]
pub struct RemoveArgs {
    /// The user to delete.
    pub name: String,
    #[command(flatten)]
    pub database: DatabaseArgs,
}

/// The fewest characters a password may have (NIST SP 800-63B's floor for passwords chosen by
/// people, who are also checked against a list of common ones).
const MIN_PASSWORD_CHARS: usize = 8;

/// Passwords that lead the lists of leaked ones; `#` lines are comments.
const COMMON_PASSWORDS: &str = include_str!("common_passwords.txt");

/// Why a password is too weak to use, if it is.
fn password_problem(name: Option<&str>, password: &str) -> Option<String> {
    if password.chars().count() < MIN_PASSWORD_CHARS {
        return Some(format!(
            "the password is too short: use at least {MIN_PASSWORD_CHARS} characters (a few \
             unrelated words make a long one that is easy to remember)"
        ));
    }
    let lowered = password.to_lowercase();
    if name.is_some_and(|n| n.to_lowercase() == lowered) {
        return Some("the password is the user name: choose another".into());
    }
    let common = COMMON_PASSWORDS
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .any(|l| l == lowered);
    if common {
        return Some(
            "the password is one of the most common passwords, which are tried first: choose \
             another"
                .into(),
        );
    }
    None
}

#[derive(Debug, clap::Args)]
pub struct AddArgs {
    /// The user name people log in with.
    pub name: String,
    /// viewer (read only), operator (may trigger, cancel, clear, pause) or admin.
    #[arg(long, value_parser = parse_role)]
    pub role: Role,
    #[command(flatten)]
    pub database: DatabaseArgs,
}

fn parse_role(text: &str) -> Result<Role, String> {
    text.parse()
        .map_err(|e: crate::store::UnknownRole| e.to_string())
}

/// Why a user name cannot be used, if it cannot.
fn name_problem(name: &str) -> Option<String> {
    if name == ADMIN {
        return Some(
            "the `admin` user's password comes from SLUICE_ADMIN_PASSWORD or `ui.admin_password_hash`; \
             choose another name"
                .into(),
        );
    }
    if name.is_empty() || name.chars().count() > 64 {
        return Some("a user name has 1 to 64 characters".into());
    }
    if name.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Some(format!("`{name}` contains spaces or control characters"));
    }
    None
}

pub async fn execute(config: Option<&std::path::Path>, args: UserArgs) -> anyhow::Result<ExitCode> {
    match args.command {
        UserCommand::Hash => {
            let Some(password) = read_password()? else {
                return Ok(ExitCode::from(EXIT_USAGE));
            };
            if let Some(problem) = password_problem(None, &password) {
                eprintln!("error: {problem}");
                return Ok(ExitCode::from(EXIT_USAGE));
            }
            println!("{}", hash_password(&password)?);
            Ok(ExitCode::SUCCESS)
        }
        UserCommand::Add(add) => {
            if let Some(problem) = name_problem(&add.name) {
                eprintln!("error: {problem}");
                return Ok(ExitCode::from(EXIT_USAGE));
            }
            let settings = add.database.settings(config)?;
            let Some(password) = read_password()? else {
                return Ok(ExitCode::from(EXIT_USAGE));
            };
            if let Some(problem) = password_problem(Some(&add.name), &password) {
                eprintln!("error: {problem}");
                return Ok(ExitCode::from(EXIT_USAGE));
            }
            let hash = hash_password(&password)?;
            let store = Store::open(&settings.store()).await?;
            store.upsert_user(&add.name, &hash, add.role).await?;
            eprintln!("User `{}` can log in as {}.", add.name, add.role);
            Ok(ExitCode::SUCCESS)
        }
        UserCommand::List(list) => {
            let settings = list.database.settings(config)?;
            let store = Store::open(&settings.store()).await?;
            let users = store.users().await?;
            if users.is_empty() {
                eprintln!(
                    "No users besides `admin` (whose password comes from SLUICE_ADMIN_PASSWORD \
                     or `ui.admin_password_hash`); add one with `sluice user add NAME --role ROLE`."
                );
                return Ok(ExitCode::SUCCESS);
            }
            let width = users
                .iter()
                .map(|u| u.name.chars().count())
                .max()
                .unwrap_or(0)
                .max(4);
            println!(
                "{:<width$}  {:<8}  {:<16}  CHANGED",
                "NAME", "ROLE", "CREATED"
            );
            for user in &users {
                println!(
                    "{:<width$}  {:<8}  {:<16}  {}",
                    user.name,
                    user.role.as_str(),
                    user.created_at.format("%Y-%m-%d %H:%M"),
                    user.updated_at.format("%Y-%m-%d %H:%M"),
                );
            }
            Ok(ExitCode::SUCCESS)
        }
        UserCommand::Remove(remove) => {
            if remove.name == ADMIN {
                eprintln!(
                    "error: the `admin` user is not stored: it can log in while \
                     SLUICE_ADMIN_PASSWORD or `ui.admin_password_hash` is set for `sluice \
                     serve`; unset both to turn it off"
                );
                return Ok(ExitCode::from(EXIT_USAGE));
            }
            let settings = remove.database.settings(config)?;
            let store = Store::open(&settings.store()).await?;
            if store.remove_user(&remove.name).await? {
                eprintln!(
                    "User `{}` is removed; their sessions have ended.",
                    remove.name
                );
                Ok(ExitCode::SUCCESS)
            } else {
                eprintln!(
                    "error: there is no user `{}`; `sluice user list` shows them",
                    remove.name
                );
                Ok(ExitCode::FAILURE)
            }
        }
    }
}

/// The password: typed twice without echo on a terminal, else the first line of stdin.
/// `None` (after saying why) when it is empty or the two entries differ.
fn read_password() -> anyhow::Result<Option<String>> {
    let stdin = std::io::stdin();
    let password = if stdin.is_terminal() {
        let first = prompt("Password: ")?;
        let again = prompt("Password again: ")?;
        if first != again {
            eprintln!("error: the two passwords differ");
            return Ok(None);
        }
        first
    } else {
        let mut line = String::new();
        stdin
            .lock()
            .read_line(&mut line)
            .context("cannot read the password from stdin")?;
        line.trim_end_matches(['\r', '\n']).to_owned()
    };
    if password.is_empty() {
        eprintln!("error: the password is empty; type it at the prompt or pipe it on stdin");
        return Ok(None);
    }
    Ok(Some(password))
}

/// Reads one line from the terminal with echo switched off.
fn prompt(text: &str) -> anyhow::Result<String> {
    let mut stderr = std::io::stderr();
    write!(stderr, "{text}")?;
    stderr.flush()?;
    let fd = libc::STDIN_FILENO;
    // SAFETY: termios is plain data; tcgetattr fills it for a valid descriptor, and we only
    // restore what it returned.
    let mut original: libc::termios = unsafe { std::mem::zeroed() };
    let have_terminal = unsafe { libc::tcgetattr(fd, &mut original) } == 0;
    if have_terminal {
        let mut quiet = original;
        quiet.c_lflag &= !libc::ECHO;
        // SAFETY: a valid descriptor and a termios derived from its own settings.
        unsafe { libc::tcsetattr(fd, libc::TCSANOW, &quiet) };
    }
    let mut line = String::new();
    let read = std::io::stdin().lock().read_line(&mut line);
    if have_terminal {
        // SAFETY: restores the settings read above.
        unsafe { libc::tcsetattr(fd, libc::TCSANOW, &original) };
    }
    writeln!(stderr)?;
    read.context("cannot read the password")?;
    Ok(line.trim_end_matches(['\r', '\n']).to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn user_names_are_checked() {
        assert_eq!(name_problem("ann"), None);
        assert!(name_problem("admin").is_some_and(|p| p.contains("SLUICE_ADMIN_PASSWORD")));
        assert!(name_problem("").is_some());
        assert!(name_problem("a b").is_some());
        assert!(name_problem(&"x".repeat(65)).is_some());
        assert_eq!(parse_role("viewer"), Ok(Role::Viewer));
        assert!(
            password_problem(Some("ann"), "short")
                .is_some_and(|p| p.contains("at least 8 characters"))
        );
        for common in ["password123", "Password123", "qwertyuiop", "12345678"] {
            assert!(
                password_problem(Some("ann"), common).is_some_and(|p| p.contains("most common")),
                "{common}"
            );
        }
        assert!(password_problem(Some("annabelle"), "AnnaBelle").is_some());
        assert_eq!(password_problem(Some("ann"), "tide-lantern-orbit"), None);
        assert_eq!(password_problem(None, "viewer-pw"), None);
        assert!(
            parse_role("root")
                .unwrap_err()
                .contains("viewer, operator or admin")
        );
    }
}
