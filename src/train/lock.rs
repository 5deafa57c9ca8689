//! One writer per run directory: an advisory lock on `DIR/writer.lock`, which the kernel releases
//! when the writer exits or dies, so a crashed run never leaves its directory locked.

use anyhow::{Context, Result, bail};
use std::collections::BTreeMap;
use std::fs::File;
use std::io::{Read, Seek, Write};
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

/// The locks this process holds, by directory, with how many guards share each: a command that
/// locks a directory and then trains into it takes the lock twice without refusing itself.
static HELD: Mutex<BTreeMap<PathBuf, (File, usize)>> = Mutex::new(BTreeMap::new());

/// Holds a run directory for writing until dropped.
#[derive(Debug)]
pub struct RunLock {
    dir: PathBuf,
}

impl RunLock {
    /// Locks `dir` (created when missing), or an error naming the process that holds it.
    /// Readers (`eval`, `embed`, `plot`) take no lock and work on a live run.
    pub fn acquire(dir: &Path) -> Result<RunLock> {
        std::fs::create_dir_all(dir).with_context(|| format!("creating run directory {}", dir.display()))?;
        let key = std::fs::canonicalize(dir).with_context(|| format!("reading {}", dir.display()))?;
        let mut held = HELD.lock().unwrap_or_else(|p| p.into_inner());
        if let Some((_, guards)) = held.get_mut(&key) {
            *guards += 1;
            return Ok(RunLock { dir: key });
        }
        let path = dir.join("writer.lock");
        let mut file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .with_context(|| format!("opening the run's lock file {}", path.display()))?;
        // SAFETY: flock on a descriptor this function owns; no memory is involved.
        if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } != 0 {
            let err = std::io::Error::last_os_error();
            if err.raw_os_error() != Some(libc::EWOULDBLOCK) {
                return Err(err).with_context(|| format!("locking {}", path.display()));
            }
            let mut holder = String::new();
            _ = file.read_to_string(&mut holder);
            bail!(
                "{} is in use: another barlow process (PID {}) is writing this run; wait for it to finish or stop \
                 it, or choose another --out (eval, embed and plot read a live run without waiting)",
                dir.display(),
                holder.split_whitespace().next().unwrap_or("unknown")
            );
        }
        let write = |f: &mut File| -> std::io::Result<()> {
            f.set_len(0)?;
            f.rewind()?;
            writeln!(f, "{}", std::process::id())
        };
        write(&mut file).with_context(|| format!("writing {}", path.display()))?;
        held.insert(key.clone(), (file, 1));
        Ok(RunLock { dir: key })
    }
}

impl Drop for RunLock {
    fn drop(&mut self) {
        let mut held = HELD.lock().unwrap_or_else(|p| p.into_inner());
        if let Some((_, guards)) = held.get_mut(&self.dir) {
            *guards -= 1;
            if *guards == 0 {
                // Closing the file releases the lock; the file stays, so that no second writer
                // locks a new file while a third still waits on the old one.
                held.remove(&self.dir);
            }
        }
    }
}
