//! The account `shell` tasks run as (`run_as` in `sluice.toml`): looked up once at start-up,
//! then applied in each task's process between fork and exec (supplementary groups, group,
//! user), so a task cannot read or signal the Sluice process that started it.

use std::ffi::{CStr, CString};
use std::os::unix::ffi::OsStrExt;
use std::path::PathBuf;
use std::sync::OnceLock;

/// The account every `shell` task of this process runs as, when `run_as` is set.
static TASK_USER: OnceLock<TaskUser> = OnceLock::new();

/// A looked-up account: what `initgroups` + `setgid` + `setuid` need, and the `HOME`, `USER`
/// and `LOGNAME` its tasks get.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TaskUser {
    pub name: String,
    pub uid: libc::uid_t,
    pub gid: libc::gid_t,
    /// Supplementary groups, read here because `initgroups` reads files and so cannot run
    /// between fork and exec.
    pub groups: Vec<libc::gid_t>,
    pub home: PathBuf,
}

/// Why `run_as` cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum TaskUserError {
    #[error("`run_as`: there is no user `{0}` on this machine")]
    Unknown(String),
    #[error("`run_as`: `{0}` is not a user name")]
    BadName(String),
    #[error("`run_as`: cannot look up the user `{name}`: {source}")]
    Lookup {
        name: String,
        source: std::io::Error,
    },
    #[error(
        "`run_as = \"{0}\"` needs Sluice to run as root, to switch tasks to that user; \
         start Sluice as root or remove `run_as`"
    )]
    NotRoot(String),
    #[error("`run_as` is already set to another user in this process")]
    AlreadySet,
}

impl TaskUser {
    /// Looks `name` up in the user database (`getpwnam_r`, `getgrouplist`).
    pub fn lookup(name: &str) -> Result<TaskUser, TaskUserError> {
        let c_name = CString::new(name).map_err(|_| TaskUserError::BadName(name.to_owned()))?;
        let mut buffer = vec![0 as libc::c_char; 16 * 1024];
        // SAFETY: passwd is plain old data; getpwnam_r fills it with pointers into `buffer`.
        let mut entry: libc::passwd = unsafe { std::mem::zeroed() };
        let mut found: *mut libc::passwd = std::ptr::null_mut();
        loop {
            // SAFETY: every pointer is valid for the sizes given.
            let status = unsafe {
                libc::getpwnam_r(
                    c_name.as_ptr(),
                    &mut entry,
                    buffer.as_mut_ptr(),
                    buffer.len(),
                    &mut found,
                )
            };
            match status {
                0 => break,
                libc::ERANGE if buffer.len() < 1024 * 1024 => {
                    buffer.resize(buffer.len() * 4, 0);
                }
                code => {
                    return Err(TaskUserError::Lookup {
                        name: name.to_owned(),
                        source: std::io::Error::from_raw_os_error(code),
                    });
                }
            }
        }
        if found.is_null() {
            return Err(TaskUserError::Unknown(name.to_owned()));
        }
        let home = if entry.pw_dir.is_null() {
            PathBuf::from("/")
        } else {
            // SAFETY: a non-null pw_dir points at a NUL-terminated string inside `buffer`.
            let dir = unsafe { CStr::from_ptr(entry.pw_dir) };
            PathBuf::from(std::ffi::OsStr::from_bytes(dir.to_bytes()))
        };
        let mut groups: Vec<libc::gid_t> = vec![0; 64];
        loop {
            let mut count = libc::c_int::try_from(groups.len()).unwrap_or(libc::c_int::MAX);
            // SAFETY: `groups` holds `count` entries; getgrouplist writes at most that many.
            let status = unsafe {
                libc::getgrouplist(
                    c_name.as_ptr(),
                    entry.pw_gid,
                    groups.as_mut_ptr(),
                    &mut count,
                )
            };
            let count = usize::try_from(count).unwrap_or(0);
            if status >= 0 {
                groups.truncate(count);
                break;
            }
            // Too small: `count` now says how many there are.
            if count <= groups.len() || count > 65_536 {
                groups.clear();
                groups.push(entry.pw_gid);
                break;
            }
            groups.resize(count, 0);
        }
        Ok(TaskUser {
            name: name.to_owned(),
            uid: entry.pw_uid,
            gid: entry.pw_gid,
            groups,
            home,
        })
    }

    /// Makes this the account of every `shell` task this process starts. Switching users
    /// needs root, unless it is the account Sluice already runs as.
    pub fn install(self) -> Result<(), TaskUserError> {
        // SAFETY: geteuid(2) cannot fail.
        let euid = unsafe { libc::geteuid() };
        if euid != 0 && euid != self.uid {
            return Err(TaskUserError::NotRoot(self.name));
        }
        let name = self.name.clone();
        match TASK_USER.set(self) {
            Ok(()) => Ok(()),
            Err(_) if TASK_USER.get().is_some_and(|u| u.name == name) => Ok(()),
            Err(_) => Err(TaskUserError::AlreadySet),
        }
    }

    /// Switches the calling process to this account: supplementary groups first, then the
    /// group, then the user (after which the first two would be refused).
    ///
    /// Only async-signal-safe calls: this runs between fork and exec.
    pub(super) fn switch(&self) -> std::io::Result<()> {
        // SAFETY: setgroups(2) reads `groups.len()` entries from a live slice.
        if unsafe { libc::setgroups(self.groups.len(), self.groups.as_ptr()) } != 0 {
            return Err(std::io::Error::last_os_error());
        }
        // SAFETY: plain syscalls without pointers.
        if unsafe { libc::setgid(self.gid) } != 0 {
            return Err(std::io::Error::last_os_error());
        }
        // SAFETY: as above.
        if unsafe { libc::setuid(self.uid) } != 0 {
            return Err(std::io::Error::last_os_error());
        }
        Ok(())
    }
}

/// The account `shell` tasks run as, when `run_as` is set.
pub fn task_user() -> Option<&'static TaskUser> {
    TASK_USER.get()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn looks_up_root_and_refuses_unknown_users() {
        let root = TaskUser::lookup("root").expect("root exists");
        assert_eq!((root.uid, root.gid), (0, 0));
        assert!(root.groups.contains(&0), "{root:?}");
        let err = TaskUser::lookup("no-such-user-sluice").unwrap_err();
        assert!(
            err.to_string().contains("no user `no-such-user-sluice`"),
            "{err}"
        );
        let err = TaskUser::lookup("a\0b").unwrap_err();
        assert!(err.to_string().contains("not a user name"), "{err}");
    }
}
