//! A volume's content as a list of entries, for verifying a copy and for
//! finding what changed since an earlier scan.
//!
//! Every entry, the root included, has its path, type, mode, owner, size,
//! symlink target and (for regular files) a BLAKE3 hash of its content. A hash
//! from an earlier scan is reused only when the file's size, mtime, ctime and
//! inode are all unchanged, so a scan after a small change reads little.
//! Paths are bytes: names that are not UTF-8 are kept exactly, written in
//! JSON with `\xNN` escapes.

use std::collections::{BTreeMap, HashMap};
use std::ffi::OsStr;
use std::io::{self, Read};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::Path;

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum EntryKind {
    Dir,
    File,
    Symlink,
    Fifo,
    Socket,
    Device,
}

/// One file system object under the scanned root.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Entry {
    /// Relative to the root, `\xNN`-escaped; empty for the root itself.
    pub path: String,
    pub kind: EntryKind,
    /// Permission bits, setuid, setgid and sticky included.
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
    pub size: u64,
    /// Nanoseconds since the epoch (held to the years 1678 to 2262).
    pub mtime_ns: i64,
    pub ctime_ns: i64,
    pub ino: u64,
    /// How many paths name this file (hard links); 1 for all but files.
    #[serde(default = "one", skip_serializing_if = "is_one")]
    pub nlink: u64,
    /// A file with holes: fewer bytes on disk than its size. Its copy
    /// keeps the holes (runs of zero blocks are not written).
    #[serde(default, skip_serializing_if = "is_false")]
    pub sparse: bool,
    /// Extended attributes (POSIX ACLs among them, as `system.posix_acl_*`),
    /// name → value in hex; none on symlinks.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub xattrs: BTreeMap<String, String>,
    /// In a stream: this file is a hard link to `link`, a path sent before
    /// it in the same stream; it carries no content of its own.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub link: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hash: Option<String>,
    /// When the file was read for `hash` (ns, the clock file times use);
    /// unset for a hash of bytes drover wrote itself.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hashed_at_ns: Option<i64>,
    /// The hash was taken while the apps were stopped (a scan with
    /// `stopped`): nothing wrote the file after that read, so a later scan
    /// while they stay stopped reuses it whenever the file is unchanged,
    /// even inside [`RACY_WINDOW_NS`].
    #[serde(default, skip_serializing_if = "is_false")]
    pub still: bool,
}

/// How far a file's times must lie before the read that hashed it for the
/// hash to be reused. Timestamps advance in coarse ticks, so a write in the
/// same tick as the read leaves them unchanged ("racily clean", as Git
/// calls it); and a write through a shared memory mapping to a page that is
/// already dirty changes no time at all until the page is written back
/// (the kernel writes dirty pages back within 30 s, and the next write then
/// changes the mtime again). A file changed within this window before its
/// hash was taken is read again.
pub const RACY_WINDOW_NS: i64 = 35_000_000_000;

/// The time now, in the nanoseconds file times use.
pub fn now_ns() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_nanos()).unwrap_or(i64::MAX))
}

/// A file time in nanoseconds. Nanoseconds in 64 bits end in 2262: a time
/// past that (or before 1678) is held at the end instead of overflowing.
fn ns(secs: i64, nanos: i64) -> i64 {
    secs.saturating_mul(1_000_000_000).saturating_add(nanos)
}

/// Whether the hash of `before` still holds for the file as it is `now`:
/// nothing that counts changed, and the file's last change lies safely
/// before the read that hashed it.
pub fn hash_holds(before: &Entry, now: &Entry) -> bool {
    unchanged(before, now)
        && before
            .hashed_at_ns
            .is_none_or(|at| now.mtime_ns.max(now.ctime_ns) < at.saturating_sub(RACY_WINDOW_NS))
}

/// Escapes bytes that are not printable UTF-8 (and `\`) as `\xNN`.
pub fn escape(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len());
    for chunk in bytes.utf8_chunks() {
        for c in chunk.valid().chars() {
            if c == '\\' || c.is_control() {
                let mut buf = [0u8; 4];
                for b in c.encode_utf8(&mut buf).bytes() {
                    out.push_str(&format!("\\x{b:02x}"));
                }
            } else {
                out.push(c);
            }
        }
        for b in chunk.invalid() {
            out.push_str(&format!("\\x{b:02x}"));
        }
    }
    out
}

/// The inverse of [`escape`].
pub fn unescape(s: &str) -> Vec<u8> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\' && i + 3 < b.len() && b[i + 1] == b'x' {
            let hex = std::str::from_utf8(&b[i + 2..i + 4]).ok();
            if let Some(v) = hex.and_then(|h| u8::from_str_radix(h, 16).ok()) {
                out.push(v);
                i += 4;
                continue;
            }
        }
        out.push(b[i]);
        i += 1;
    }
    out
}

fn kind_of(ft: std::fs::FileType) -> EntryKind {
    if ft.is_dir() {
        EntryKind::Dir
    } else if ft.is_symlink() {
        EntryKind::Symlink
    } else if ft.is_fifo() {
        EntryKind::Fifo
    } else if ft.is_socket() {
        EntryKind::Socket
    } else if ft.is_block_device() || ft.is_char_device() {
        EntryKind::Device
    } else {
        EntryKind::File
    }
}

/// BLAKE3 of a file's content, streamed in 1 MiB reads into one buffer
/// per thread (a fresh zeroed megabyte per file would cost more than
/// reading a small file).
pub fn hash_file(path: &Path) -> io::Result<String> {
    thread_local! {
        static BUF: std::cell::RefCell<Vec<u8>> = std::cell::RefCell::new(vec![0u8; 1 << 20]);
    }
    let mut f = std::fs::File::open(path)?;
    let mut h = blake3::Hasher::new();
    BUF.with_borrow_mut(|buf| loop {
        let n = f.read(buf)?;
        if n == 0 {
            return Ok(h.finalize().to_hex().to_string());
        }
        h.update(&buf[..n]);
    })
}

/// Whether `now` is the same file as `before`, untouched since: size,
/// mtime, ctime and inode all equal. Only then may a hash be reused.
pub fn unchanged(before: &Entry, now: &Entry) -> bool {
    before.kind == now.kind
        && before.size == now.size
        && before.mtime_ns == now.mtime_ns
        && before.ctime_ns == now.ctime_ns
        && before.ino == now.ino
}

/// Where a path relative to `root` (raw bytes, empty for the root) is.
pub fn full_path(root: &Path, rel: &[u8]) -> std::path::PathBuf {
    if rel.is_empty() {
        root.to_path_buf()
    } else {
        root.join(OsStr::from_bytes(rel))
    }
}

/// An entry for one path, without its hash.
pub fn entry_of(root: &Path, rel: &[u8]) -> io::Result<Entry> {
    let path = full_path(root, rel);
    let meta = std::fs::symlink_metadata(&path)
        .map_err(|e| io::Error::new(e.kind(), format!("{}: {e}", path.display())))?;
    let kind = kind_of(meta.file_type());
    let target = if kind == EntryKind::Symlink {
        Some(escape(std::fs::read_link(&path)?.as_os_str().as_bytes()))
    } else {
        None
    };
    let xattrs = if kind == EntryKind::Symlink {
        BTreeMap::new()
    } else {
        xattrs_of(&path)?
    };
    Ok(entry_from(escape(rel), &meta, target, xattrs))
}

/// An entry from what `lstat` (or `fstat`) said of a path, its symlink
/// target and its copied extended attributes.
pub fn entry_from(
    path: String,
    meta: &std::fs::Metadata,
    target: Option<String>,
    xattrs: BTreeMap<String, String>,
) -> Entry {
    let kind = kind_of(meta.file_type());
    Entry {
        path,
        kind,
        mode: meta.mode() & 0o7777,
        uid: meta.uid(),
        gid: meta.gid(),
        size: if kind == EntryKind::File {
            meta.len()
        } else {
            0
        },
        mtime_ns: ns(meta.mtime(), meta.mtime_nsec()),
        ctime_ns: ns(meta.ctime(), meta.ctime_nsec()),
        ino: meta.ino(),
        nlink: if kind == EntryKind::File {
            meta.nlink()
        } else {
            1
        },
        // A block or more of the file's size is not on disk.
        sparse: kind == EntryKind::File && meta.blocks() * 512 + 4096 <= meta.len(),
        xattrs,
        link: None,
        target,
        hash: None,
        hashed_at_ns: None,
        still: false,
    }
}

/// The order of scans: the bytes of the unescaped path, with `/` below
/// every other byte — a folder's entries come right after it, before the
/// next name (`a`, `a/b`, `a-c`), which is the order a walk meets them in.
pub fn key(path: &str) -> Vec<u8> {
    let mut k = unescape(path);
    for b in &mut k {
        if *b == b'/' {
            *b = 0;
        }
    }
    k
}

/// Scans `root` into a list in scan order ([`walk`], with the hashes of
/// `previous`).
pub fn scan(
    root: &Path,
    previous: Option<&BTreeMap<String, Entry>>,
    hash: bool,
    stopped: bool,
) -> io::Result<Vec<Entry>> {
    let mut out = Vec::new();
    let mut lend = |path: &str| previous.and_then(|p| p.get(path).cloned());
    walk(root, &mut lend, hash, stopped, &mut |e, _| {
        out.push(e);
        Ok(())
    })?;
    Ok(out)
}

/// Walks `root` in scan order ([`key`]), handing each entry to `each` as
/// it is met, with the earlier record of the path when there is one.
/// `previous` gives the record of a file's path (asked in scan order); it
/// lends its hash if the file has not changed since. With `hash` false, no
/// file is read and only lent hashes are filled in. `stopped` says that no
/// app writes the volume now, nor since the previous scan with `stopped`:
/// hashes that scan took are lent whenever the file is unchanged. Nothing
/// under `root` is followed through a symlink; an unreadable entry is an
/// error, never skipped (one that is gone by the time it is read is left
/// out: it is no longer there to copy). Memory grows with the names of one folder, not
/// with the entries.
pub fn walk(
    root: &Path,
    previous: &mut dyn FnMut(&str) -> Option<Entry>,
    hash: bool,
    stopped: bool,
    each: &mut dyn FnMut(Entry, Option<Entry>) -> io::Result<()>,
) -> io::Result<()> {
    let mut todo: Vec<Vec<u8>> = vec![Vec::new()];
    // An entry gone since its folder was read (an app at work) is left out,
    // as if it had gone before: the next pass sees it gone. Only the root
    // must be there.
    let gone = |e: &io::Error, rel: &[u8]| e.kind() == io::ErrorKind::NotFound && !rel.is_empty();
    while let Some(rel) = todo.pop() {
        let mut entry = match entry_of(root, &rel) {
            Ok(e) => e,
            Err(e) if gone(&e, &rel) => continue,
            Err(e) => return Err(e),
        };
        let path = full_path(root, &rel);
        let mut before = None;
        match entry.kind {
            EntryKind::Dir => {
                let listed = std::fs::read_dir(&path).and_then(|d| {
                    d.map(|e| e.map(|e| e.file_name().as_bytes().to_vec()))
                        .collect::<io::Result<Vec<_>>>()
                });
                let mut names = match listed {
                    Ok(n) => n,
                    Err(e) if gone(&e, &rel) => continue,
                    Err(e) => {
                        return Err(io::Error::new(e.kind(), format!("{}: {e}", path.display())))
                    }
                };
                names.sort();
                for name in names.into_iter().rev() {
                    let mut child = rel.clone();
                    if !child.is_empty() {
                        child.push(b'/');
                    }
                    child.extend_from_slice(&name);
                    todo.push(child);
                }
            }
            EntryKind::File => {
                before = previous(&entry.path);
                match fill_hash(&mut entry, &path, before.as_ref(), hash, stopped) {
                    Err(e) if gone(&e, &rel) => continue,
                    r => r?,
                }
            }
            // A socket is an endpoint of a running program, not data: it
            // is left out (as tar does), and the app makes it anew.
            EntryKind::Socket => continue,
            _ => {}
        }
        each(entry, before)?;
    }
    Ok(())
}

/// The bytes a scan read to give `e` its hash: none when `before` (the
/// record's entry) lent it.
pub fn read_for(e: &Entry, before: Option<&Entry>) -> u64 {
    let lent = before.is_some_and(|b| b.hash == e.hash && b.hashed_at_ns == e.hashed_at_ns);
    if e.hash.is_some() && !lent {
        e.size
    } else {
        0
    }
}

/// Gives a file's entry the hash of `before` if it still holds (as in
/// [`walk`]), else, with `hash`, the hash of its content read now.
fn fill_hash(
    entry: &mut Entry,
    path: &Path,
    before: Option<&Entry>,
    hash: bool,
    stopped: bool,
) -> io::Result<()> {
    let lent =
        before.filter(|p| hash_holds(p, entry) || (stopped && p.still && unchanged(p, entry)));
    match lent {
        Some(p) => {
            entry.hash = p.hash.clone();
            entry.hashed_at_ns = p.hashed_at_ns;
            entry.still = stopped && p.still;
        }
        None if hash => {
            entry.hashed_at_ns = Some(now_ns());
            entry.still = stopped;
            entry.hash = Some(
                hash_file(path)
                    .map_err(|e| io::Error::new(e.kind(), format!("{}: {e}", path.display())))?,
            );
        }
        None => {}
    }
    Ok(())
}

/// The entries of the paths `rel` (raw bytes, in scan order), as [`walk`]
/// makes them, without descending into folders: a path that is not there
/// (or is a socket) is left out.
pub fn entries_at(
    root: &Path,
    rel: &mut dyn Iterator<Item = io::Result<Vec<u8>>>,
    previous: &mut dyn FnMut(&str) -> Option<Entry>,
    hash: bool,
    stopped: bool,
    each: &mut dyn FnMut(Entry) -> io::Result<()>,
) -> io::Result<()> {
    for rel in rel {
        let rel = rel?;
        let mut entry = match entry_of(root, &rel) {
            Ok(e) => e,
            Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
            Err(e) => return Err(e),
        };
        match entry.kind {
            EntryKind::File => {
                let before = previous(&entry.path);
                let path = full_path(root, &rel);
                match fill_hash(&mut entry, &path, before.as_ref(), hash, stopped) {
                    Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                    r => r?,
                }
            }
            EntryKind::Socket => continue,
            _ => {}
        }
        each(entry)?;
    }
    Ok(())
}

/// Entries by path.
pub fn index(entries: &[Entry]) -> BTreeMap<String, Entry> {
    entries
        .iter()
        .map(|e| (e.path.clone(), e.clone()))
        .collect()
}

/// A path's extended attributes that a copy carries (its last component
/// never followed), the values in hex. A file system without them has none.
fn xattrs_of(path: &Path) -> io::Result<BTreeMap<String, String>> {
    let names = match xattr::list(path) {
        Ok(n) => n,
        Err(e) if e.raw_os_error() == Some(95) => return Ok(BTreeMap::new()), // EOPNOTSUPP
        Err(e) => return Err(io::Error::new(e.kind(), format!("{}: {e}", path.display()))),
    };
    let mut out = BTreeMap::new();
    for name in names.filter(|n| copied_xattr(n.as_bytes())) {
        if let Some(v) = xattr::get(path, &name)? {
            out.insert(escape(name.as_bytes()), hex(&v));
        }
    }
    Ok(out)
}

/// Whether a copy carries an extended attribute: the app's own (`user.*`)
/// and its ACLs (`system.posix_acl_*`). `security.*` and `trusted.*`
/// belong to the host (SELinux labels, file capabilities), not the app.
pub fn copied_xattr(name: &[u8]) -> bool {
    name.starts_with(b"user.") || name.starts_with(b"system.posix_acl_")
}

/// The value of a `system.posix_acl_access` attribute for ACL `entries`
/// (tag, permission bits, id; `u32::MAX` where a tag has no id), as the
/// kernel stores it: version 2, little endian. What a scan reads back of an
/// ACL set with `setfacl`.
pub fn posix_acl(entries: &[(u16, u16, u32)]) -> Vec<u8> {
    let mut out = 2u32.to_le_bytes().to_vec();
    for (tag, perm, id) in entries {
        out.extend_from_slice(&tag.to_le_bytes());
        out.extend_from_slice(&perm.to_le_bytes());
        out.extend_from_slice(&id.to_le_bytes());
    }
    out
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// The bytes of a value [`xattrs_of`] wrote in hex.
pub fn unhex(s: &str) -> Option<Vec<u8>> {
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(s.get(i..i + 2)?, 16).ok())
        .collect()
}

fn is_false(b: &bool) -> bool {
    !*b
}

fn one() -> u64 {
    1
}

fn is_one(n: &u64) -> bool {
    *n == 1
}

/// The files of a scan that have other names (hard links), grouped by
/// inode: each group's paths in scan order.
pub fn link_groups(entries: &[Entry]) -> Vec<Vec<&str>> {
    let mut groups: BTreeMap<u64, Vec<&str>> = BTreeMap::new();
    for e in entries
        .iter()
        .filter(|e| e.kind == EntryKind::File && e.nlink > 1)
    {
        groups.entry(e.ino).or_default().push(e.path.as_str());
    }
    groups.into_values().filter(|g| g.len() > 1).collect()
}

/// Entries by path, borrowed.
pub fn by_path(entries: &[Entry]) -> HashMap<&str, &Entry> {
    entries.iter().map(|e| (e.path.as_str(), e)).collect()
}

/// One path's entries in two scans: only in the first (the source), only
/// in the second (the copy), or in both.
#[derive(Debug)]
pub enum Pair {
    Src(Entry),
    Dst(Entry),
    Both(Entry, Entry),
}

/// Entries in scan order ([`key`]), one at a time: a scan held whole or one streaming in.
pub trait Entries {
    fn next(&mut self) -> impl std::future::Future<Output = Result<Option<Entry>, String>> + Send;
}

/// A scan held whole.
pub struct Held<'a>(pub std::slice::Iter<'a, Entry>);

impl Entries for Held<'_> {
    #[allow(clippy::manual_async_fn)]
    fn next(&mut self) -> impl std::future::Future<Output = Result<Option<Entry>, String>> + Send {
        let e = self.0.next().cloned();
        async move { Ok(e) }
    }
}

/// Two scans merged: `each` gets every path's pair in order, and memory
/// does not grow with the number of entries. A side whose entries are not
/// in scan order is an error: the merge relies on it.
pub async fn merge(
    src: &mut impl Entries,
    dst: &mut impl Entries,
    mut each: impl FnMut(Pair) + Send,
) -> Result<(), String> {
    use std::cmp::Ordering::{Greater, Less};
    let mut s = keyed(src, None, "source").await?;
    let mut d = keyed(dst, None, "target").await?;
    loop {
        let order = match (&s, &d) {
            (None, None) => return Ok(()),
            (Some(_), None) => Less,
            (None, Some(_)) => Greater,
            (Some((a, _)), Some((b, _))) => a.cmp(b),
        };
        let a = if order != Greater { s.take() } else { None };
        let b = if order != Less { d.take() } else { None };
        if let Some((k, _)) = &a {
            s = keyed(src, Some(k), "source").await?;
        }
        if let Some((k, _)) = &b {
            d = keyed(dst, Some(k), "target").await?;
        }
        match (a, b) {
            (Some((_, a)), Some((_, b))) => each(Pair::Both(a, b)),
            (Some((_, a)), None) => each(Pair::Src(a)),
            (None, Some((_, b))) => each(Pair::Dst(b)),
            (None, None) => return Ok(()),
        }
    }
}

/// The next entry of one side with its [`key`], which must come after
/// `after`.
async fn keyed(
    side: &mut impl Entries,
    after: Option<&[u8]>,
    which: &str,
) -> Result<Option<(Vec<u8>, Entry)>, String> {
    let Some(e) = side.next().await? else {
        return Ok(None);
    };
    let k = key(&e.path);
    if after.is_some_and(|a| a >= k.as_slice()) {
        return Err(format!(
            "the {which}'s scan is out of order at `{}`",
            e.path
        ));
    }
    Ok(Some((k, e)))
}

/// The pairs of two scans held whole.
pub fn pairs(src: &[Entry], dst: &[Entry]) -> Vec<Pair> {
    use futures_util::FutureExt;
    let mut out = Vec::new();
    let (mut a, mut b) = (Held(src.iter()), Held(dst.iter()));
    match merge(&mut a, &mut b, |p| out.push(p)).now_or_never() {
        Some(Ok(())) => {}
        // Held scans are always ready and never fail.
        _ => unreachable!("a merge of held scans finishes at once"),
    }
    out
}

/// A file with other names (hard links), as met in a pass over two scans.
#[derive(Debug, Clone)]
pub struct Link {
    pub ino: u64,
    pub path: String,
    /// The inode of the same path on the other side, if it is there.
    pub other: Option<u64>,
    /// The path is on the source (always so for the source's own links).
    pub in_src: bool,
    /// The pass decided to send it.
    pub sent: bool,
}

/// The files with other names of both sides of a pass: all a pass keeps
/// of an entry once it has passed, so memory grows with the hard links, not
/// with the entries.
#[derive(Debug, Default)]
pub struct Links {
    pub src: Vec<Link>,
    pub dst: Vec<Link>,
}

impl Links {
    /// Notes a pair's files with other names; `sent` says whether the pass
    /// sends the source's entry.
    pub fn note(&mut self, pair: &Pair, sent: bool) {
        let linked = |e: &Entry| e.kind == EntryKind::File && e.nlink > 1;
        let (s, d) = match pair {
            Pair::Src(s) => (Some(s), None),
            Pair::Dst(d) => (None, Some(d)),
            Pair::Both(s, d) => (Some(s), Some(d)),
        };
        if let Some(e) = s.filter(|e| linked(e)) {
            self.src.push(Link {
                ino: e.ino,
                path: e.path.clone(),
                other: d.map(|d| d.ino),
                in_src: true,
                sent,
            });
        }
        if let Some(e) = d.filter(|e| linked(e)) {
            self.dst.push(Link {
                ino: e.ino,
                path: e.path.clone(),
                other: s.map(|s| s.ino),
                in_src: s.is_some(),
                sent: s.is_some() && sent,
            });
        }
    }

    /// Each side's groups of paths naming one file (more than one path),
    /// by inode, paths in scan order: the source's first.
    pub fn groups(&self) -> impl Iterator<Item = (bool, Vec<&Link>)> {
        fn group(side: &[Link]) -> Vec<Vec<&Link>> {
            let mut g: BTreeMap<u64, Vec<&Link>> = BTreeMap::new();
            for l in side {
                g.entry(l.ino).or_default().push(l);
            }
            g.into_values().filter(|g| g.len() > 1).collect()
        }
        let (s, d) = (group(&self.src), group(&self.dst));
        s.into_iter()
            .map(|g| (true, g))
            .chain(d.into_iter().map(|g| (false, g)))
    }
}

/// A group whose paths do not all name one file on the other side (or
/// are not all there).
pub fn split(group: &[&Link]) -> bool {
    group
        .iter()
        .any(|l| l.other.is_none() || l.other != group[0].other)
}

/// How a copy differs from its source, gathered pair by pair: the number
/// of differences and the first `keep` of them, one line each. Times and
/// inodes are not compared (they differ between hosts by nature);
/// everything the no-loss guarantee names is.
#[derive(Debug)]
pub struct Check {
    keep: usize,
    pub found: usize,
    pub shown: Vec<String>,
    links: Links,
    /// The source's size (regular files) and entries.
    pub bytes: u64,
    pub entries: u64,
}

impl Check {
    pub fn new(keep: usize) -> Check {
        Check {
            keep,
            found: 0,
            shown: Vec::new(),
            links: Links::default(),
            bytes: 0,
            entries: 0,
        }
    }

    fn differs(&mut self, line: String) {
        self.found += 1;
        if self.shown.len() < self.keep {
            self.shown.push(line);
        }
    }

    pub fn add(&mut self, pair: Pair) {
        self.links.note(&pair, false);
        match pair {
            Pair::Src(a) => {
                self.count(&a);
                let shown = if a.path.is_empty() {
                    "/"
                } else {
                    a.path.as_str()
                };
                self.differs(format!("`{shown}` is missing from the copy"));
            }
            Pair::Dst(b) => {
                self.differs(format!("`{}` is in the copy but not in the source", b.path))
            }
            Pair::Both(a, b) => {
                self.count(&a);
                let mut what = Vec::new();
                if a.kind != b.kind {
                    what.push("type");
                }
                if a.mode != b.mode {
                    what.push("mode");
                }
                if (a.uid, a.gid) != (b.uid, b.gid) {
                    what.push("owner");
                }
                if a.size != b.size {
                    what.push("size");
                }
                if a.target != b.target {
                    what.push("symlink target");
                }
                if a.hash != b.hash {
                    what.push("content");
                }
                if a.xattrs != b.xattrs {
                    what.push("extended attributes");
                }
                if a.sparse && !b.sparse {
                    what.push("holes (sparse on the source, dense in the copy)");
                }
                if !what.is_empty() {
                    let shown = if a.path.is_empty() {
                        "/"
                    } else {
                        a.path.as_str()
                    };
                    self.differs(format!("`{shown}` differs in {}", what.join(", ")));
                }
            }
        }
    }

    fn count(&mut self, e: &Entry) {
        self.entries += 1;
        self.bytes += e.size;
    }

    /// The differences found, with those of the hard links: the same paths
    /// must name one file on both sides.
    pub fn finish(mut self) -> Check {
        let mut lines = Vec::new();
        for (on_src, g) in self.links.groups() {
            // (Paths missing on the other side are differences already.)
            if g.iter().any(|l| l.other != g[0].other) {
                let paths: Vec<&str> = g.iter().map(|l| l.path.as_str()).collect();
                lines.push(if on_src {
                    format!(
                        "`{}` are one file (hard links) on the source but not in the copy",
                        paths.join("`, `")
                    )
                } else {
                    format!(
                        "`{}` are one file in the copy but not on the source",
                        paths.join("`, `")
                    )
                });
            }
        }
        for l in lines {
            self.differs(l);
        }
        self
    }
}

/// How a copy differs from its source, one line per difference; empty when
/// the copy is faithful (see [`Check`]).
pub fn differences(source: &[Entry], copy: &[Entry]) -> Vec<String> {
    let mut check = Check::new(usize::MAX);
    for p in pairs(source, copy) {
        check.add(p);
    }
    check.finish().shown
}

/// What changed between two scans of the same tree: paths to copy again
/// (new or changed in any way, times included) and paths to delete.
pub fn changes(before: &[Entry], after: &[Entry]) -> (Vec<String>, Vec<String>) {
    let (b, a) = (index(before), index(after));
    let changed = a
        .iter()
        .filter(|(p, e)| {
            b.get(*p).is_none_or(|old| {
                old.kind != e.kind
                    || old.mode != e.mode
                    || (old.uid, old.gid) != (e.uid, e.gid)
                    || old.size != e.size
                    || old.mtime_ns != e.mtime_ns
                    || old.ctime_ns != e.ctime_ns
                    || old.ino != e.ino
                    || old.target != e.target
                    || old.hash != e.hash
            })
        })
        .map(|(p, _)| p.clone())
        .collect();
    let deleted = b.keys().filter(|p| !a.contains_key(*p)).cloned().collect();
    (changed, deleted)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use std::os::unix::fs::{symlink, PermissionsExt};

    #[test]
    fn hard_links_are_one_file_on_both_sides_or_a_difference() {
        let dir = tempfile::tempdir().unwrap();
        let (src, dst) = (dir.path().join("s"), dir.path().join("d"));
        for d in [&src, &dst] {
            std::fs::create_dir_all(d).unwrap();
            std::fs::write(d.join("a"), "x").unwrap();
        }
        std::fs::hard_link(src.join("a"), src.join("b")).unwrap();
        std::fs::write(dst.join("b"), "x").unwrap();
        let scan_of = |root: &Path| scan(root, None, true, false).unwrap();
        let (s, d) = (scan_of(&src), scan_of(&dst));
        assert_eq!(link_groups(&s), vec![vec!["a", "b"]]);
        let diff = differences(&s, &d);
        assert!(
            diff.iter()
                .any(|l| l.contains("are one file (hard links) on the source")),
            "{diff:?}"
        );
        let diff = differences(&d, &s);
        assert!(
            diff.iter().any(|l| l.contains("are one file in the copy")),
            "{diff:?}"
        );
    }

    /// A small tree: nested directories, a file with mode 640, a name that
    /// is not UTF-8, a symlink.
    pub(crate) fn tree() -> tempfile::TempDir {
        let d = tempfile::tempdir().unwrap();
        let p = d.path();
        std::fs::create_dir_all(p.join("a/b")).unwrap();
        std::fs::write(p.join("a/b/file.txt"), b"hello").unwrap();
        std::fs::write(p.join(OsStr::from_bytes(b"odd \xff name")), b"x").unwrap();
        symlink("a/b/file.txt", p.join("link")).unwrap();
        std::fs::set_permissions(
            p.join("a/b/file.txt"),
            std::fs::Permissions::from_mode(0o640),
        )
        .unwrap();
        d
    }

    #[test]
    fn a_scan_lists_every_entry_with_its_hash() {
        let d = tree();
        let s = scan(d.path(), None, true, false).unwrap();
        let paths: Vec<&str> = s.iter().map(|e| e.path.as_str()).collect();
        assert_eq!(
            paths,
            ["", "a", "a/b", "a/b/file.txt", "link", "odd \\xff name"]
        );
        let f = &s[3];
        assert_eq!(f.mode, 0o640);
        assert_eq!(f.size, 5);
        assert_eq!(
            f.hash.as_deref(),
            Some(blake3::hash(b"hello").to_hex().as_str())
        );
        assert_eq!(s[4].target.as_deref(), Some("a/b/file.txt"));
        assert_eq!(unescape(&s[5].path), b"odd \xff name");
    }

    #[test]
    fn identical_trees_have_no_differences_and_a_change_is_named() {
        let (x, y) = (tree(), tree());
        let (sx, sy) = (
            scan(x.path(), None, true, false).unwrap(),
            scan(y.path(), None, true, false).unwrap(),
        );
        assert!(
            differences(&sx, &sy).is_empty(),
            "{:?}",
            differences(&sx, &sy)
        );
        std::fs::write(y.path().join("a/b/file.txt"), b"hellO").unwrap();
        std::fs::set_permissions(y.path().join("a"), std::fs::Permissions::from_mode(0o700))
            .unwrap();
        std::fs::remove_file(y.path().join("link")).unwrap();
        let d = differences(&sx, &scan(y.path(), None, true, false).unwrap());
        assert_eq!(
            d,
            [
                "`a` differs in mode",
                "`a/b/file.txt` differs in content",
                "`link` is missing from the copy"
            ]
        );
    }

    #[test]
    fn unchanged_files_reuse_their_hash_and_changes_are_found() {
        let d = tree();
        let first = scan(d.path(), None, true, false).unwrap();
        // A forged hash survives a rescan only while the file is unchanged.
        let mut prev = index(&first);
        let forged = prev.get_mut("a/b/file.txt").unwrap();
        forged.hash = Some("forged".into());
        // As if hashed long after its last change (a fresh file is racy).
        forged.hashed_at_ns = Some(forged.ctime_ns + RACY_WINDOW_NS + 1);
        let again = scan(d.path(), Some(&prev), true, false).unwrap();
        assert_eq!(
            index(&again)["a/b/file.txt"].hash.as_deref(),
            Some("forged")
        );
        std::thread::sleep(std::time::Duration::from_millis(10));
        std::fs::write(d.path().join("a/b/file.txt"), b"hello").unwrap();
        std::fs::write(d.path().join("new"), b"n").unwrap();
        std::fs::remove_file(d.path().join("link")).unwrap();
        let third = scan(d.path(), Some(&prev), true, false).unwrap();
        assert_ne!(
            index(&third)["a/b/file.txt"].hash.as_deref(),
            Some("forged")
        );
        let (changed, deleted) = changes(&first, &third);
        assert!(changed.contains(&"a/b/file.txt".to_string()));
        assert!(changed.contains(&"new".to_string()));
        assert_eq!(deleted, ["link"]);
    }

    #[test]
    fn a_hash_taken_while_the_apps_are_stopped_holds_for_the_next_stopped_scan_only() {
        let d = tree();
        // Fresh files: inside the racy window, so a running scan rehashes.
        let stopped = scan(d.path(), None, true, true).unwrap();
        let mut prev = index(&stopped);
        assert!(prev["a/b/file.txt"].still);
        prev.get_mut("a/b/file.txt").unwrap().hash = Some("kept".into());
        let hash_of = |e: &[Entry]| index(e)["a/b/file.txt"].hash.clone();
        let again = scan(d.path(), Some(&prev), true, true).unwrap();
        assert_eq!(hash_of(&again).as_deref(), Some("kept"));
        // Once an app may run again, the window counts as before.
        let running = scan(d.path(), Some(&index(&again)), true, false).unwrap();
        assert_ne!(hash_of(&running).as_deref(), Some("kept"));
        assert!(!index(&running)["a/b/file.txt"].still);
        // And a change is always seen.
        std::fs::write(d.path().join("a/b/file.txt"), b"hello, again").unwrap();
        let changed = scan(d.path(), Some(&prev), true, true).unwrap();
        assert_ne!(hash_of(&changed).as_deref(), Some("kept"));
    }

    #[test]
    fn scans_pair_up_in_walk_order_a_folder_before_the_next_name() {
        let d = tempfile::tempdir().unwrap();
        let (s, t) = (d.path().join("s"), d.path().join("t"));
        for (root, names) in [(&s, ["a/b", "a-c", "z"]), (&t, ["a/b", "a-d", "z"])] {
            for n in names {
                let p = root.join(n);
                std::fs::create_dir_all(p.parent().unwrap()).unwrap();
                std::fs::write(p, n).unwrap();
            }
        }
        let (a, b) = (
            scan(&s, None, false, false).unwrap(),
            scan(&t, None, false, false).unwrap(),
        );
        let shown: Vec<String> = pairs(&a, &b)
            .iter()
            .map(|p| match p {
                Pair::Src(e) => format!("<{}", e.path),
                Pair::Dst(e) => format!(">{}", e.path),
                Pair::Both(e, _) => format!("={}", e.path),
            })
            .collect();
        assert_eq!(shown, ["=", "=a", "=a/b", "<a-c", ">a-d", "=z"]);
    }

    #[test]
    fn escaping_round_trips() {
        for s in [
            &b"plain"[..],
            b"back\\slash",
            b"\xff\xfe",
            b"new\nline",
            "ünï".as_bytes(),
        ] {
            assert_eq!(unescape(&escape(s)), s);
        }
        // Not an escape: kept as written, never a panic.
        assert_eq!(unescape("\\xé9"), "\\xé9".as_bytes());
    }

    #[test]
    fn a_time_past_2262_is_held_at_the_end_instead_of_overflowing() {
        assert_eq!(ns(i64::MAX / 2, 5), i64::MAX);
        assert_eq!(ns(-(i64::MAX / 2), 0), i64::MIN);
        assert_eq!(ns(1, 5), 1_000_000_005);
    }
}
