//! Where settings come from, end to end: flags beat environment variables, which beat
//! `sluice.toml`, which beats the defaults.

mod common;

use common::Sandbox;

/// Runs `sluice logs` (which opens the database) and returns which database files exist.
fn databases_after(sb: &Sandbox, env: &[(&str, &str)], args: &[&str]) -> Vec<String> {
    let mut cmd = sb.command();
    cmd.env_remove("SLUICE_DATABASE_URL")
        .envs(env.iter().copied())
        .args(["logs", "none"]);
    cmd.args(args);
    let out = cmd.output().expect("run sluice");
    assert_eq!(
        out.status.code(),
        Some(1),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mut found: Vec<String> = std::fs::read_dir(sb.path())
        .expect("read dir")
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .filter(|n| n.ends_with(".db"))
        .collect();
    found.sort();
    for name in &found {
        let _ = std::fs::remove_file(sb.path().join(name));
    }
    found
}

#[test]
fn flags_beat_environment_beat_file_beat_defaults() {
    let sb = Sandbox::new();
    assert_eq!(databases_after(&sb, &[], &[]), ["sluice.db"], "the default");
    sb.write("sluice.toml", "database = \"from-file.db\"\n");
    assert_eq!(databases_after(&sb, &[], &[]), ["from-file.db"]);
    let env = [("SLUICE_DATABASE_URL", "from-env.db")];
    assert_eq!(databases_after(&sb, &env, &[]), ["from-env.db"]);
    assert_eq!(
        databases_after(&sb, &env, &["--database", "from-flag.db"]),
        ["from-flag.db"]
    );
}

#[test]
fn a_broken_config_file_is_a_clear_error() {
    let sb = Sandbox::new();
    sb.write("sluice.toml", "databse = \"x.db\"\n");
    let out = sb
        .command()
        .env_remove("SLUICE_DATABASE_URL")
        .args(["logs", "none"])
        .output()
        .expect("run");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_ne!(out.status.code(), Some(0));
    assert!(
        stderr.contains("sluice.toml") && stderr.contains("databse"),
        "{stderr}"
    );
    let missing = sb
        .command()
        .args(["--config", "nope.toml", "logs", "none"])
        .output()
        .expect("run");
    assert!(String::from_utf8_lossy(&missing.stderr).contains("nope.toml"));
}

#[test]
fn migrate_applies_and_lists_the_migrations() {
    let sb = Sandbox::new();
    let out = sb
        .command()
        .args(["migrate", "--database", "fresh.db"])
        .output()
        .expect("run");
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let listed = String::from_utf8_lossy(&out.stdout);
    assert!(
        listed
            .lines()
            .any(|l| l.starts_with("m20261127_000001_initial")),
        "{listed}"
    );
    assert!(sb.path().join("fresh.db").exists());
    // Running it again changes nothing and still succeeds.
    let again = sb
        .command()
        .args(["migrate", "--database", "fresh.db"])
        .output()
        .expect("run");
    assert_eq!(String::from_utf8_lossy(&again.stdout), listed);
}
