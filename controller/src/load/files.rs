//! Reading the files manifests name: bounded, never blocking on a FIFO,
//! with reasons a user can act on.

use std::path::{Path, PathBuf};

/// `path` with `.` and `..` removed without looking at the file system.
pub(crate) fn lexically_normal(path: &Path) -> PathBuf {
    use std::path::Component;
    let mut out = PathBuf::new();
    for c in path.components() {
        match c {
            Component::ParentDir => {
                out.pop();
            }
            Component::CurDir => {}
            other => out.push(other),
        }
    }
    out
}

pub(super) const MAX_ENV_FILE_BYTES: u64 = 1 << 20;

/// Reads a text file of at most `max` bytes; the error is a short reason.
pub fn read_limited(path: &Path, max: u64) -> Result<String, String> {
    use std::io::Read;
    let file = open_nonblocking(path).map_err(|e| io_reason(&e))?;
    let meta = file.metadata().map_err(|e| io_reason(&e))?;
    if !meta.is_file() {
        return Err("not a regular file".into());
    }
    let mut buf = Vec::new();
    file.take(max + 1)
        .read_to_end(&mut buf)
        .map_err(|e| io_reason(&e))?;
    if buf.len() as u64 > max {
        return Err(format!("larger than {} KiB", max / 1024));
    }
    String::from_utf8(buf)
        .map_err(|e| format!("not valid UTF-8 at byte {}", e.utf8_error().valid_up_to()))
}

/// Opens a file for reading without waiting: opening a FIFO (or a device)
/// can block for ever, and the caller checks what it opened.
pub fn open_nonblocking(path: &Path) -> std::io::Result<std::fs::File> {
    use std::os::unix::fs::OpenOptionsExt;
    std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(nix::fcntl::OFlag::O_NONBLOCK.bits())
        .open(path)
}

pub fn io_reason(e: &std::io::Error) -> String {
    let s = e.to_string();
    // "No such file or directory (os error 2)" -> "no such file or directory"
    let s = s.split(" (os error").next().unwrap_or(&s);
    let mut c = s.chars();
    c.next()
        .map(|f| f.to_lowercase().collect::<String>() + c.as_str())
        .unwrap_or_default()
}
