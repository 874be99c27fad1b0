//! One npm-watchdog per state database: an exclusive lock on a file beside it (`state.db.lock` for
//! `state.db`), held for as long as the process runs.
//!
//! Two daemons on one state file would both alert on every finding, race each other's outbox rows
//! and undo each other's bookkeeping, and `harden` must not record into a state a running daemon is
//! working from. SQLite's own locking only keeps single writes apart, not whole processes, hence this.
//!
//! The lock is an operating-system file lock, not the file's existence: the kernel drops it when the
//! process ends, however it ends, so a crash or `kill -9` never leaves a stale lock behind and there is
//! nothing to clean up by hand. For the same reason the file is never deleted: removing it while
//! another process has it open would let two processes lock two different files of the same name.
//! The holder writes its pid into the file only so that a second process can name it in its error;
//! the pid is never trusted for anything else.

use std::fs::{File, OpenOptions, TryLockError};
use std::io::{Read, Seek, Write};
use std::path::{Path, PathBuf};

#[derive(Debug, thiserror::Error)]
pub enum LockError {
    #[error(
        "state database {} is in use by another npm-watchdog ({}; lock file {}): stop it first, or give this one its own state.path",
        .state.display(),
        match .pid { Some(pid) => format!("pid {pid}"), None => "pid unknown".to_string() },
        .path.display()
    )]
    Held {
        /// The state database.
        state: PathBuf,
        /// The lock file.
        path: PathBuf,
        /// The holder's pid as it wrote it, if it could be read.
        pid: Option<u32>,
    },
    #[error("state database {}: cannot create its folder: {problem}", .state.display())]
    Folder {
        /// The state database.
        state: PathBuf,
        /// What is in the way, in words (`/x/npm-watchdog is a file, not a folder`).
        problem: String,
    },
    #[error("cannot create, open or lock the lock file {}: {source}", .path.display())]
    Io {
        /// The lock file.
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// The exclusive lock on a state database, held until this is dropped (closing the file releases
/// it).
#[derive(Debug)]
pub struct StateLock {
    // Never read: it is kept open because the lock lives exactly as long as this handle.
    #[allow(dead_code)]
    file: File,
}

impl StateLock {
    /// Take the lock for the state database at `state_path`, creating its folder and the lock file
    /// if needed. Fails at once (never waits) with [`LockError::Held`] when another process holds it.
    pub fn acquire(state_path: &Path) -> Result<StateLock, LockError> {
        let path = lock_path(state_path);
        let io = |source| LockError::Io {
            path: path.clone(),
            source,
        };
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(|e| LockError::Folder {
                state: state_path.to_path_buf(),
                problem: folder_problem(dir, &e),
            })?;
        }
        // No truncation on open: while the lock is not ours the file holds the holder's pid.
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .map_err(io)?;
        match file.try_lock() {
            Ok(()) => {}
            Err(TryLockError::WouldBlock) => {
                return Err(LockError::Held {
                    state: state_path.to_path_buf(),
                    pid: read_pid(&mut file),
                    path,
                })
            }
            Err(TryLockError::Error(source)) => return Err(io(source)),
        }
        if let Err(e) = write_pid(&mut file) {
            // The lock is held, which is all that matters; only the name in a rival's error is lost.
            tracing::warn!(lock_file = %path.display(), error = %e, "cannot write the pid into the lock file");
        }
        Ok(StateLock { file })
    }
}

/// Why `dir` could not be created, naming what is in the way: `create_dir_all` reports a file
/// where a folder should be as a bare "File exists", which reads as if the lock file were the problem.
fn folder_problem(dir: &Path, e: &std::io::Error) -> String {
    let blocker = dir.ancestors().find(|a| a.exists()).filter(|a| !a.is_dir());
    match blocker {
        Some(file) => format!("{} is a file, not a folder", file.display()),
        None => format!("{}: {e}", dir.display()),
    }
}

/// `<state path>.lock`, beside the database.
pub fn lock_path(state_path: &Path) -> PathBuf {
    let mut p = state_path.as_os_str().to_owned();
    p.push(".lock");
    PathBuf::from(p)
}

fn write_pid(file: &mut File) -> std::io::Result<()> {
    file.set_len(0)?;
    file.rewind()?;
    writeln!(file, "{}", std::process::id())?;
    file.flush()
}

/// The pid the holder wrote; `None` if it has not written it yet or it is not a number.
fn read_pid(file: &mut File) -> Option<u32> {
    let mut text = String::new();
    file.rewind().ok()?;
    file.take(64).read_to_string(&mut text).ok()?;
    text.trim().parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_handle_is_refused_with_the_holders_pid_until_the_first_is_dropped() {
        let dir = tempfile::tempdir().expect("tempdir");
        let db = dir.path().join("state.db");
        let first = StateLock::acquire(&db).expect("first lock");
        assert_eq!(
            std::fs::read_to_string(dir.path().join("state.db.lock")).expect("lock file"),
            format!("{}\n", std::process::id())
        );

        // Each acquire opens its own file description, and those conflict even within one process.
        let err = StateLock::acquire(&db).expect_err("second lock refused");
        match &err {
            LockError::Held { state, path, pid } => {
                assert_eq!(state, &db);
                assert_eq!(path, &dir.path().join("state.db.lock"));
                assert_eq!(*pid, Some(std::process::id()));
            }
            other => panic!("expected Held, got {other:?}"),
        }
        assert_eq!(
            err.to_string(),
            format!(
                "state database {} is in use by another npm-watchdog (pid {}; lock file {}): stop it first, or give this one its own state.path",
                db.display(),
                std::process::id(),
                dir.path().join("state.db.lock").display()
            )
        );

        drop(first);
        let _again = StateLock::acquire(&db).expect("free after drop");
    }

    #[test]
    fn a_raw_file_lock_conflicts_with_another_handle_in_the_same_process() {
        // What `acquire` relies on: std's file locks belong to the open file, not to the process.
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("x.lock");
        let a = File::create(&path).expect("a");
        let b = File::open(&path).expect("b");
        a.try_lock().expect("a locks");
        assert!(matches!(b.try_lock(), Err(TryLockError::WouldBlock)));
        a.unlock().expect("unlock");
        b.try_lock().expect("b locks once a let go");
    }

    #[test]
    fn an_unreadable_pid_is_reported_as_unknown() {
        let dir = tempfile::tempdir().expect("tempdir");
        let db = dir.path().join("state.db");
        let lock = dir.path().join("state.db.lock");
        // Someone else holds the lock but has not written a pid (or wrote something else).
        let holder = File::create(&lock).expect("holder");
        holder.try_lock().expect("holder locks");
        std::fs::write(&lock, "not a pid\n").expect("write");
        let err = StateLock::acquire(&db).expect_err("held");
        assert!(matches!(err, LockError::Held { pid: None, .. }), "{err:?}");
        assert!(
            err.to_string().contains("(pid unknown; lock file "),
            "{err}"
        );
    }

    #[test]
    fn a_missing_folder_is_created() {
        let dir = tempfile::tempdir().expect("tempdir");
        let db = dir.path().join("a/b/state.db");
        let _lock = StateLock::acquire(&db).expect("lock");
        assert!(dir.path().join("a/b/state.db.lock").is_file());
    }

    #[test]
    fn an_unusable_place_is_an_error_naming_what_is_in_the_way() {
        let dir = tempfile::tempdir().expect("tempdir");
        // The folder would have to be made inside a regular file (fails even for root).
        std::fs::write(dir.path().join("file"), "").expect("file");
        let db = dir.path().join("file/state.db");
        let err = StateLock::acquire(&db).expect_err("no folder");
        assert!(matches!(err, LockError::Folder { .. }), "{err:?}");
        assert_eq!(
            err.to_string(),
            format!(
                "state database {}: cannot create its folder: {} is a file, not a folder",
                db.display(),
                dir.path().join("file").display()
            )
        );

        // The lock file's name is taken by a folder.
        let db = dir.path().join("state.db");
        std::fs::create_dir(dir.path().join("state.db.lock")).expect("dir");
        let err = StateLock::acquire(&db).expect_err("a folder is no lock file");
        assert!(matches!(err, LockError::Io { .. }), "{err:?}");
        assert!(
            err.to_string()
                .contains(&dir.path().join("state.db.lock").display().to_string()),
            "{err}"
        );
    }
}
