//! Opening input files so that a FIFO, socket or device under a file's name is refused by name
//! instead of blocking or streaming for ever.

use anyhow::{Context, Result, bail};
use std::fs::File;
use std::io::Read;
use std::os::unix::fs::{FileTypeExt, OpenOptionsExt};
use std::path::Path;

/// What a path is, for the error when it is not a regular file.
pub fn kind(t: std::fs::FileType) -> &'static str {
    match () {
        _ if t.is_file() => "a regular file",
        _ if t.is_dir() => "a folder",
        _ if t.is_fifo() => "a FIFO (named pipe)",
        _ if t.is_socket() => "a socket",
        _ if t.is_char_device() || t.is_block_device() => "a device",
        _ => "not a regular file",
    }
}

/// Opens `path` for reading if it is a regular file (symbolic links followed). Opening does not
/// block: a FIFO is opened without waiting for a writer, then refused.
pub fn open(path: &Path) -> Result<File> {
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK)
        .open(path)
        .with_context(|| format!("opening {}", path.display()))?;
    let meta = file.metadata().with_context(|| format!("reading {}", path.display()))?;
    if !meta.is_file() {
        bail!("{} is {}, not a file barlow can read", path.display(), kind(meta.file_type()));
    }
    Ok(file)
}

/// The whole of the regular file `path`, refused before reading when larger than `limit` bytes.
pub fn read_at_most(path: &Path, limit: u64, what: &str) -> Result<Vec<u8>> {
    let mut file = open(path)?;
    let len = file.metadata().map(|m| m.len()).unwrap_or(0);
    if len > limit {
        bail!("{} holds {len} bytes, more than {what} can be ({limit} bytes at most)", path.display());
    }
    let mut bytes = Vec::with_capacity(len as usize);
    file.read_to_end(&mut bytes).with_context(|| format!("reading {}", path.display()))?;
    Ok(bytes)
}

/// The whole of the regular file `path`.
pub fn read(path: &Path) -> Result<Vec<u8>> {
    read_at_most(path, u64::MAX, "a file")
}

/// The whole of the regular file `path`, as UTF-8 text.
pub fn read_to_string(path: &Path) -> Result<String> {
    String::from_utf8(read(path)?).map_err(|e| anyhow::anyhow!("{} is not UTF-8 text: {e}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_fifo_is_refused_at_once_by_name() {
        let dir = tempfile::tempdir().unwrap();
        let fifo = dir.path().join("x.png");
        let c = std::ffi::CString::new(fifo.as_os_str().as_encoded_bytes()).unwrap();
        assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o644) }, 0);
        let err = format!("{:#}", read(&fifo).unwrap_err());
        assert!(err.contains("x.png") && err.contains("FIFO"), "{err}");
        let err = format!("{:#}", read(Path::new("/dev/zero")).unwrap_err());
        assert!(err.contains("/dev/zero") && err.contains("device"), "{err}");
        let err = format!("{:#}", read(dir.path()).unwrap_err());
        assert!(err.contains("folder"), "{err}");
        std::fs::write(dir.path().join("big"), [0u8; 100]).unwrap();
        let err = format!("{:#}", read_at_most(&dir.path().join("big"), 99, "a test").unwrap_err());
        assert!(err.contains("100 bytes"), "{err}");
        assert_eq!(read(&dir.path().join("big")).unwrap().len(), 100);
    }
}
