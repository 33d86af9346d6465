//! The reaper: a small process forked at start-up that kills the process groups of running
//! `shell` tries as soon as the Sluice process that started them is gone, however it went
//! (`kill -9`, a crash, the out-of-memory killer).
//!
//! Sluice tells it about each group through a pipe (`+PGID` when a try starts, `-PGID` when
//! its group is gone). Sluice holds the only write end, so the kernel closes it when Sluice
//! dies; the reaper then reads end-of-file, kills every group still listed and exits. A pipe
//! is used rather than `PR_SET_PDEATHSIG` on each child because that signal follows the
//! *thread* that spawned the child (tokio's threads come and go) and reaches only the child,
//! not the grandchildren `sh -c` starts in the same group.

use std::collections::BTreeSet;
use std::fs::File;
use std::io::{BufRead, BufReader, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::sync::{Mutex, OnceLock};

/// The write end of the pipe to the reaper, once it has been started.
static LIFELINE: OnceLock<Mutex<File>> = OnceLock::new();

/// Why the reaper could not be started.
#[derive(Debug, thiserror::Error)]
pub enum ReaperError {
    #[error("cannot create the pipe to the process reaper: {0}")]
    Pipe(std::io::Error),
    #[error("cannot start the process reaper: {0}")]
    Fork(std::io::Error),
}

/// Starts the reaper. Without it (tests of the operator alone), tries' processes are still
/// killed when their try ends, but not when the process dies.
///
/// # Safety
///
/// Must be called while this process has a single thread (before any runtime starts): the
/// forked child runs ordinary Rust code, which is only sound when no other thread could have
/// held a lock at the moment of the fork.
pub unsafe fn start() -> Result<(), ReaperError> {
    if LIFELINE.get().is_some() {
        return Ok(());
    }
    let mut fds = [0; 2];
    // SAFETY: `fds` has room for the two descriptors pipe2(2) writes.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
        return Err(ReaperError::Pipe(std::io::Error::last_os_error()));
    }
    // SAFETY: pipe2 succeeded, so both descriptors are open and owned by nobody else.
    let (read_end, write_end) =
        unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
    // SAFETY: the caller guarantees a single thread; the child only runs `reap`.
    match unsafe { libc::fork() } {
        -1 => Err(ReaperError::Fork(std::io::Error::last_os_error())),
        0 => {
            drop(write_end);
            reap(File::from(read_end))
        }
        _ => {
            drop(read_end);
            let write_end = File::from(write_end);
            // A stuck reaper must never stall a task start: writes that cannot go through
            // at once are dropped (with a warning) instead of waiting.
            // SAFETY: fcntl(2) on a descriptor this function owns.
            let fd = write_end.as_raw_fd();
            unsafe {
                let flags = libc::fcntl(fd, libc::F_GETFL);
                libc::fcntl(fd, libc::F_SETFL, flags | libc::O_NONBLOCK);
            }
            let _ = LIFELINE.set(Mutex::new(write_end));
            Ok(())
        }
    }
}

/// The reaper's whole life: keep the list of live groups until Sluice is gone, then kill them.
fn reap(lifeline: File) -> ! {
    // SAFETY: plain syscalls on this (single-threaded, freshly forked) process.
    unsafe {
        // Its own process group, so a Ctrl-C or a signal to Sluice's group does not end it
        // before Sluice; it ends by itself when Sluice does.
        libc::setpgid(0, 0);
        for signal in [libc::SIGINT, libc::SIGTERM, libc::SIGHUP, libc::SIGQUIT] {
            libc::signal(signal, libc::SIG_IGN);
        }
        // Hold none of Sluice's standard streams open: whoever reads Sluice's output must see
        // it end when Sluice ends.
        let null = libc::open(c"/dev/null".as_ptr(), libc::O_RDWR);
        if null >= 0 {
            for fd in 0..=2 {
                libc::dup2(null, fd);
            }
            if null > 2 {
                libc::close(null);
            }
        }
    }
    let mut groups = BTreeSet::new();
    for line in BufReader::new(lifeline).lines() {
        let Ok(line) = line else { break };
        if let Some(Ok(pgid)) = line.strip_prefix('+').map(str::parse::<i32>) {
            // 0 and 1 would address this process's own group or every process.
            if pgid > 1 {
                groups.insert(pgid);
            }
        } else if let Some(Ok(pgid)) = line.strip_prefix('-').map(str::parse::<i32>) {
            groups.remove(&pgid);
        }
    }
    for pgid in groups {
        // SAFETY: kill(2) has no memory-safety preconditions; the group is a try's own.
        unsafe { libc::kill(-pgid, libc::SIGKILL) };
    }
    // SAFETY: _exit(2) ends the process without running the parent's exit handlers, which
    // this forked copy must not run a second time.
    unsafe { libc::_exit(0) }
}

/// Tells the reaper a try's process group started.
pub fn watch(pgid: i32) {
    send(&format!("+{pgid}\n"));
}

/// Tells the reaper a try's process group is gone.
pub fn release(pgid: i32) {
    send(&format!("-{pgid}\n"));
}

fn send(message: &str) {
    let Some(lifeline) = LIFELINE.get() else {
        return;
    };
    let mut lifeline = lifeline.lock().unwrap_or_else(|p| p.into_inner());
    // One write of a few bytes: atomic on a pipe (below PIPE_BUF), and non-blocking.
    if let Err(e) = lifeline.write_all(message.as_bytes()) {
        tracing::warn!(
            error = %e,
            "Cannot reach the process reaper: if Sluice dies now, a task's processes may outlive it."
        );
    }
}
