//! One writer per run folder: an exclusive advisory lock on `run.lock`, held for as long as the
//! [`RunLock`] lives. The operating system releases it when the process ends in any way (exit,
//! panic, `kill -9`), so a lock can never go stale; the holder's pid and start time are written
//! into the file only to name the holder in the error a second writer gets.

use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use crate::error::{io, Result, RunError};
use crate::fs::{now_secs, utc_stamp};

/// The lock file inside a run folder.
pub const LOCK_FILE: &str = "run.lock";

/// An exclusive lock on a run folder.
#[derive(Debug)]
pub struct RunLock {
    // Held, not read: dropping the file releases the lock.
    _file: File,
    path: PathBuf,
}

impl RunLock {
    /// Takes the lock of `run_dir`, or fails at once with [`RunError::Locked`] naming the
    /// holder when another process has it.
    pub fn acquire(run_dir: &Path) -> Result<Self> {
        let path = run_dir.join(LOCK_FILE);
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .map_err(io("opening", &path))?;
        match file.try_lock() {
            Ok(()) => {}
            Err(std::fs::TryLockError::WouldBlock) => {
                let mut text = String::new();
                let _ = file.read_to_string(&mut text);
                let holder = match text.trim() {
                    "" => "its holder has not written its pid yet".to_owned(),
                    t => t.to_owned(),
                };
                return Err(RunError::Locked { path: run_dir.to_owned(), holder });
            }
            Err(std::fs::TryLockError::Error(e)) => return Err(io("locking", &path)(e)),
        }
        let note = format!("pid {} since {}\n", std::process::id(), utc_stamp(now_secs()).1);
        let write = |f: &mut File| -> std::io::Result<()> {
            f.set_len(0)?;
            f.seek(SeekFrom::Start(0))?;
            f.write_all(note.as_bytes())?;
            f.flush()
        };
        write(&mut file).map_err(io("writing", &path))?;
        Ok(Self { _file: file, path })
    }

    /// The lock file.
    pub fn path(&self) -> &Path {
        &self.path
    }
}
