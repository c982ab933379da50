//! Paths below a volume's root, reached one component at a time from the
//! root's file descriptor with `O_NOFOLLOW`: a symlink (or anything but a
//! directory) on the way is an error, so an entry of a stream can never
//! reach outside the volume, whatever the volume or the stream holds (a
//! stream entry `a` → `/` followed by `a/drover` would otherwise write into
//! the helper's own file system). Works on every kernel (no `openat2`).

use std::cell::RefCell;
use std::ffi::OsStr;
use std::fs::File;
use std::io;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::rc::Rc;

use nix::errno::Errno;
use nix::fcntl::{openat, AtFlags, OFlag};
use nix::sys::stat::{
    fchmodat, fstatat, mkdirat, utimensat, FchmodatFlags, FileStat, Mode, UtimensatFlags,
};
use nix::sys::time::TimeSpec;
use nix::unistd::{fchownat, mkfifoat, symlinkat, unlinkat, Gid, Uid, UnlinkatFlags};

/// A volume's root directory.
pub struct Root {
    fd: OwnedFd,
    /// The folder the last entry was in, reached as [`Root::at`] does:
    /// entries of one folder come one after another in a stream. Forgotten
    /// whenever anything is removed (a folder may be what goes).
    last: Last,
}

type Last = Rc<RefCell<Option<(Vec<u8>, Rc<OwnedFd>)>>>;

/// One entry below a [`Root`]: the directory that holds it (already
/// reached without following a symlink) and its name there. The root
/// itself is `.` in the root.
pub struct At {
    dir: Rc<OwnedFd>,
    name: Vec<u8>,
    shown: String,
    last: Last,
}

fn refused(path: &str, why: &str) -> io::Error {
    io::Error::other(format!("refused path `{path}`: {why}"))
}

fn err(e: Errno) -> io::Error {
    io::Error::from(e)
}

/// `e` with what it happened to, keeping its kind: a file gone since it
/// was listed is still `NotFound` to the caller.
fn named(shown: impl std::fmt::Display, e: impl Into<io::Error>) -> io::Error {
    let e = e.into();
    io::Error::new(e.kind(), format!("{shown}: {e}"))
}

impl Root {
    pub fn open(path: &Path) -> io::Result<Root> {
        let fd = nix::fcntl::open(
            path,
            OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
            Mode::empty(),
        )
        .map_err(|e| named(path.display(), e))?;
        Ok(Root {
            fd,
            last: Last::default(),
        })
    }

    /// The entry at `rel` (bytes, `/`-separated, empty for the root). Every
    /// directory on the way is opened without following a symlink; `..`,
    /// `.`, empty components and absolute paths are refused.
    pub fn at(&self, rel: &[u8], shown: &str) -> io::Result<At> {
        let at = |dir, name: &[u8]| At {
            dir,
            name: name.to_vec(),
            shown: shown.to_string(),
            last: Rc::clone(&self.last),
        };
        if rel.is_empty() {
            return Ok(at(Rc::new(self.fd.try_clone()?), b"."));
        }
        let parts: Vec<&[u8]> = rel.split(|b| *b == b'/').collect();
        if parts
            .iter()
            .any(|c| c.is_empty() || *c == b"." || *c == b"..")
        {
            return Err(refused(shown, "not a plain path below the volume"));
        }
        let (last, parents) = parts.split_last().expect("not empty");
        let folder = &rel[..rel.len() - last.len()];
        if let Some((_, dir)) = self.last.borrow().as_ref().filter(|(f, _)| f == folder) {
            return Ok(at(Rc::clone(dir), last));
        }
        let mut dir = self.fd.try_clone()?;
        for c in parents {
            dir = openat(
                &dir,
                OsStr::from_bytes(c),
                OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
                Mode::empty(),
            )
            .map_err(|e| match e {
                Errno::ELOOP | Errno::ENOTDIR => {
                    refused(shown, "it passes through a symlink or a file")
                }
                e => named(format_args!("`{shown}`"), e),
            })?;
        }
        let dir = Rc::new(dir);
        *self.last.borrow_mut() = Some((folder.to_vec(), Rc::clone(&dir)));
        Ok(at(dir, last))
    }

    /// Flushes the volume's file system to disk.
    pub fn sync(&self) -> io::Result<()> {
        nix::unistd::syncfs(self.fd.as_fd()).map_err(err)
    }
}

impl At {
    fn name(&self) -> &OsStr {
        OsStr::from_bytes(&self.name)
    }

    /// A path to the entry that resolves through its directory's open
    /// descriptor, not through the names above it.
    fn fd_path(&self) -> PathBuf {
        Path::new(&format!("/proc/self/fd/{}", self.dir.as_raw_fd())).join(self.name())
    }

    /// The entry itself (a symlink is not followed); `None` if absent.
    pub fn stat(&self) -> io::Result<Option<FileStat>> {
        match fstatat(&*self.dir, self.name(), AtFlags::AT_SYMLINK_NOFOLLOW) {
            Ok(s) => Ok(Some(s)),
            Err(Errno::ENOENT) => Ok(None),
            Err(e) => Err(err(e)),
        }
    }

    /// Removes the entry, a directory with everything in it.
    pub fn remove(&self) -> io::Result<()> {
        *self.last.borrow_mut() = None;
        let Some(st) = self.stat()? else {
            return Ok(());
        };
        if st.st_mode & libc_mode::S_IFMT == libc_mode::S_IFDIR {
            // std removes what is inside without following symlinks; the
            // directory itself is named through its parent's descriptor.
            std::fs::remove_dir_all(self.fd_path())
        } else {
            match unlinkat(&*self.dir, self.name(), UnlinkatFlags::NoRemoveDir) {
                Ok(()) | Err(Errno::ENOENT) => Ok(()),
                Err(e) => Err(err(e)),
            }
        }
    }

    pub fn mkdir(&self) -> io::Result<()> {
        mkdirat(&*self.dir, self.name(), Mode::from_bits_truncate(0o700)).map_err(err)
    }

    /// Creates (or truncates) a regular file; a symlink in its place is
    /// never followed.
    pub fn create_file(&self) -> io::Result<File> {
        let fd = openat(
            &*self.dir,
            self.name(),
            OFlag::O_WRONLY
                | OFlag::O_CREAT
                | OFlag::O_TRUNC
                | OFlag::O_NOFOLLOW
                | OFlag::O_CLOEXEC,
            Mode::from_bits_truncate(0o600),
        )
        .map_err(|e| named(format_args!("`{}`", self.shown), e))?;
        Ok(File::from(fd))
    }

    /// Opens a regular file to read; a symlink in its place is refused.
    pub fn open_file(&self) -> io::Result<File> {
        let fd = openat(
            &*self.dir,
            self.name(),
            OFlag::O_RDONLY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
            Mode::empty(),
        )
        .map_err(|e| named(format_args!("`{}`", self.shown), e))?;
        Ok(File::from(fd))
    }

    /// Makes the entry's extended attributes exactly `want` (names
    /// escaped, values in hex, as scans write them): others are removed.
    pub fn set_xattrs(&self, want: &std::collections::BTreeMap<String, String>) -> io::Result<()> {
        let path = self.fd_path();
        let have: Vec<std::ffi::OsString> = match xattr::list(&path) {
            Ok(names) => names.collect(),
            Err(e) if e.raw_os_error() == Some(95) && want.is_empty() => return Ok(()),
            Err(e) => return Err(named(format_args!("`{}`", self.shown), e)),
        };
        for name in have
            .into_iter()
            .filter(|n| crate::helper::scan::copied_xattr(n.as_bytes()))
        {
            let key = crate::helper::scan::escape(name.as_bytes());
            if !want.contains_key(&key) {
                xattr::remove(&path, &name)
                    .map_err(|e| named(format_args!("`{}`", self.shown), e))?;
            }
        }
        for (name, value) in want {
            let bytes = crate::helper::scan::unhex(value).ok_or_else(|| {
                io::Error::other(format!("`{}`: a malformed attribute", self.shown))
            })?;
            let name = crate::helper::scan::unescape(name);
            xattr::set(&path, OsStr::from_bytes(&name), &bytes).map_err(|e| {
                io::Error::other(format!(
                    "`{}`: extended attribute `{}`: {e}",
                    self.shown,
                    String::from_utf8_lossy(&name)
                ))
            })?;
        }
        Ok(())
    }

    /// Makes `to` another name of this file (a hard link); neither side is
    /// reached through a symlink, and a symlink here is linked itself.
    pub fn hard_link(&self, to: &At) -> io::Result<()> {
        nix::unistd::linkat(
            &*self.dir,
            self.name(),
            &*to.dir,
            to.name(),
            AtFlags::empty(),
        )
        .map_err(|e| {
            named(
                format_args!("`{}` as a link to `{}`", to.shown, self.shown),
                e,
            )
        })
    }

    pub fn symlink(&self, target: &[u8]) -> io::Result<()> {
        symlinkat(OsStr::from_bytes(target), &*self.dir, self.name()).map_err(err)
    }

    pub fn mkfifo(&self, mode: u32) -> io::Result<()> {
        mkfifoat(&*self.dir, self.name(), Mode::from_bits_truncate(mode)).map_err(err)
    }

    /// Sets owner, mode (not on a symlink) and times, never through a
    /// symlink.
    pub fn set_owner_and_times(
        &self,
        uid: u32,
        gid: u32,
        mode: Option<u32>,
        mtime_ns: i64,
    ) -> io::Result<()> {
        fchownat(
            &*self.dir,
            self.name(),
            Some(Uid::from_raw(uid)),
            Some(Gid::from_raw(gid)),
            AtFlags::AT_SYMLINK_NOFOLLOW,
        )
        .map_err(err)?;
        if let Some(mode) = mode {
            // The entry was just checked not to be a symlink, and nothing
            // else writes to the target volume during a move.
            fchmodat(
                &*self.dir,
                self.name(),
                Mode::from_bits_truncate(mode),
                FchmodatFlags::FollowSymlink,
            )
            .map_err(err)?;
        }
        let t = TimeSpec::new(
            mtime_ns.div_euclid(1_000_000_000),
            mtime_ns.rem_euclid(1_000_000_000),
        );
        utimensat(
            &*self.dir,
            self.name(),
            &t,
            &t,
            UtimensatFlags::NoFollowSymlink,
        )
        .map_err(err)
    }
}

/// How many paths a [`ReadAhead`] may be told of before it has reached them.
pub const READ_AHEAD: usize = 256;
/// How many read ahead at once.
const READERS: usize = 4;
/// The largest file whose data is asked for ahead: the kernel reads a
/// larger one ahead itself as it is read.
const SMALL: i64 = 1 << 20;

/// Threads that reach the paths they are told of before the one telling
/// them does, so that what it then reads is in memory or on its way: each
/// small file or entry costs a wait for the disk, and several waits at a
/// time overlap. Hints are never waited for (one that finds the readers
/// busy is dropped), and their errors are for the reader proper to find.
pub struct ReadAhead {
    hints: Option<std::sync::mpsc::SyncSender<Vec<u8>>>,
    readers: Vec<std::thread::JoinHandle<()>>,
}

impl ReadAhead {
    /// Readers below `root` that look each path up (as [`Root::at`] does)
    /// and ask the kernel to read a small regular file's data in.
    pub fn start(root: &Path) -> ReadAhead {
        use nix::fcntl::{posix_fadvise, PosixFadviseAdvice};
        let (hints, wanted) = std::sync::mpsc::sync_channel::<Vec<u8>>(READ_AHEAD);
        let wanted = std::sync::Arc::new(std::sync::Mutex::new(wanted));
        let readers = (0..READERS)
            .map(|_| {
                let (root, wanted) = (root.to_path_buf(), std::sync::Arc::clone(&wanted));
                std::thread::spawn(move || {
                    let Ok(dir) = Root::open(&root) else { return };
                    loop {
                        let next = wanted.lock().unwrap_or_else(|e| e.into_inner()).recv();
                        let Ok(rel) = next else { return };
                        let Ok(at) = dir.at(&rel, "") else { continue };
                        let file = at.stat().ok().flatten().is_some_and(|st| {
                            st.st_mode & libc_mode::S_IFMT == libc_mode::S_IFREG
                                && st.st_size <= SMALL
                        });
                        if file {
                            if let Ok(f) = at.open_file() {
                                let _ = posix_fadvise(
                                    &f,
                                    0,
                                    0,
                                    PosixFadviseAdvice::POSIX_FADV_WILLNEED,
                                );
                            }
                        }
                    }
                })
            })
            .collect();
        ReadAhead {
            hints: Some(hints),
            readers,
        }
    }

    /// The path (raw bytes below the root) will be read soon.
    pub fn hint(&self, rel: &[u8]) {
        if let Some(h) = &self.hints {
            let _ = h.try_send(rel.to_vec());
        }
    }
}

impl Drop for ReadAhead {
    fn drop(&mut self) {
        self.hints = None;
        for r in self.readers.drain(..) {
            let _ = r.join();
        }
    }
}

/// Sets an open regular file's owner, mode, times and extended attributes
/// (names escaped, values in hex, as scans write them; other copied ones are
/// removed) through its descriptor: what [`At::set_owner_and_times`] and
/// [`At::set_xattrs`] do by name, without reaching the file again.
pub fn set_file_meta(
    f: &File,
    shown: &str,
    (uid, gid, mode, mtime_ns): (u32, u32, u32, i64),
    want: &std::collections::BTreeMap<String, String>,
) -> io::Result<()> {
    use xattr::FileExt;
    let named = |e: io::Error| named(format_args!("`{shown}`"), e);
    nix::unistd::fchown(f, Some(Uid::from_raw(uid)), Some(Gid::from_raw(gid)))
        .map_err(|e| named(err(e)))?;
    nix::sys::stat::fchmod(f, Mode::from_bits_truncate(mode)).map_err(|e| named(err(e)))?;
    // After the mode: an ACL sets the group bits its mask says.
    match f.list_xattr() {
        Ok(names) => {
            for name in names.filter(|n| crate::helper::scan::copied_xattr(n.as_bytes())) {
                if !want.contains_key(&crate::helper::scan::escape(name.as_bytes())) {
                    f.remove_xattr(&name).map_err(named)?;
                }
            }
        }
        Err(e) if e.raw_os_error() == Some(95) && want.is_empty() => {}
        Err(e) => return Err(named(e)),
    }
    for (name, value) in want {
        let bytes = crate::helper::scan::unhex(value)
            .ok_or_else(|| named(io::Error::other("a malformed attribute")))?;
        let name = crate::helper::scan::unescape(name);
        f.set_xattr(OsStr::from_bytes(&name), &bytes).map_err(|e| {
            io::Error::other(format!(
                "`{shown}`: extended attribute `{}`: {e}",
                String::from_utf8_lossy(&name)
            ))
        })?;
    }
    let t = TimeSpec::new(
        mtime_ns.div_euclid(1_000_000_000),
        mtime_ns.rem_euclid(1_000_000_000),
    );
    nix::sys::stat::futimens(f, &t, &t).map_err(|e| named(err(e)))
}

/// File type bits of `st_mode`.
pub mod libc_mode {
    pub const S_IFMT: u32 = 0o170000;
    pub const S_IFDIR: u32 = 0o040000;
    pub const S_IFREG: u32 = 0o100000;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_file_gone_since_it_was_listed_is_not_found_and_says_which() {
        // A pack leaves such a file out (an app renamed it away): the
        // kind must survive the path added to the message.
        let vol = tempfile::tempdir().unwrap();
        std::fs::create_dir(vol.path().join("d")).unwrap();
        let root = Root::open(vol.path()).unwrap();
        for gone in ["ack.new", "d/ack.new", "nod/x"] {
            let e = root
                .at(gone.as_bytes(), gone)
                .and_then(|at| at.open_file())
                .unwrap_err();
            assert_eq!(e.kind(), io::ErrorKind::NotFound, "{gone}: {e}");
            assert!(e.to_string().contains(gone), "{e}");
        }
    }

    #[test]
    fn nothing_is_reached_through_a_symlink_or_above_the_root() {
        let outside = tempfile::tempdir().unwrap();
        let vol = tempfile::tempdir().unwrap();
        std::os::unix::fs::symlink(outside.path(), vol.path().join("a")).unwrap();
        std::fs::create_dir(vol.path().join("d")).unwrap();
        let root = Root::open(vol.path()).unwrap();
        for bad in [
            &b"a/x"[..],
            b"/etc/passwd",
            b"../x",
            b"d/../a/x",
            b"d//x",
            b"./x",
        ] {
            let shown = String::from_utf8_lossy(bad).into_owned();
            let r = root
                .at(bad, &shown)
                .and_then(|at| at.create_file().map(drop));
            assert!(r.is_err(), "{shown}");
        }
        // A symlink as the last component is not followed either.
        assert!(root.at(b"a", "a").unwrap().create_file().is_err());
        assert!(root.at(b"a", "a").unwrap().open_file().is_err());
        assert_eq!(std::fs::read_dir(outside.path()).unwrap().count(), 0);
        // Removing the symlink removes the link, not what it points to.
        std::fs::write(outside.path().join("keep"), b"x").unwrap();
        root.at(b"a", "a").unwrap().remove().unwrap();
        assert!(outside.path().join("keep").exists());
        root.at(b"d/f", "d/f").unwrap().create_file().unwrap();
        assert!(vol.path().join("d/f").exists());
        root.at(b"d", "d").unwrap().remove().unwrap();
        assert!(!vol.path().join("d").exists());
    }
}
