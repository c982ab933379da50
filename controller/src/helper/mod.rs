//! The side of a volume move that runs inside a helper container, next to
//! the data: `drover helper scan|pack|unpack|delete|idle`. drover starts a
//! helper on each host with the volume mounted at [`ROOT`] and runs these
//! through `docker exec`, streaming between them.
//!
//! The stream format is drover's own, so nothing is lost on the way (unlike
//! the container archive API): each entry is a JSON header line
//! ([`Entry`] without hash) followed, for a regular file, by exactly `size`
//! bytes; the stream ends with `{"end":N}`. A stream that stops before its
//! end line is an error, never a shorter copy.
//!
//! Each helper keeps its latest scan, and the hashes its packs and unpacks
//! took, in a record per volume in the host's [`RECORDS`] volume, so that a
//! later scan — by this helper or the next one — rehashes only what changed
//! since (size, mtime, ctime and inode all compared, and the racy window).

pub mod beneath;
pub mod follow;
pub mod relay;
pub mod repo;
pub mod scan;
pub mod state;
pub mod store;

use std::collections::BTreeMap;
use std::io::{self, BufRead, BufReader, BufWriter, Read, Write};
use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::helper::beneath::libc_mode::{S_IFDIR, S_IFMT, S_IFREG};
use crate::helper::beneath::{At, Root};
use crate::helper::scan::{entry_of, escape, unchanged, unescape, Entry, EntryKind};

/// Where a helper sees the volume.
pub const ROOT: &str = "/data";
/// Where a helper copying on one host sees the source volume (read-only).
pub const SOURCE: &str = "/source";
/// Where a helper copying on one host keeps the record of the source's
/// files (`scan --source` and `copy-in` share it), beside its own `state`.
pub fn source_state(state: &Path) -> std::path::PathBuf {
    state.with_extension("source.json")
}

/// Where a helper keeps its latest scan when it has no [`RECORDS`].
pub const STATE: &str = "/tmp/drover-scan.json";
/// Where a helper sees the host's records of file hashes
/// ([`crate::contract::HASH_RECORDS`]): one file per volume, kept from one
/// helper to the next.
pub const RECORDS: &str = "/records";
/// The volume whose record a helper keeps in [`RECORDS`] (its own).
pub const RECORD_ENV: &str = "DROVER_RECORD";
/// The volume at [`SOURCE`] whose record a helper keeps in [`RECORDS`].
pub const SOURCE_RECORD_ENV: &str = "DROVER_SOURCE_RECORD";

/// The records of this helper's volume and of the one at [`SOURCE`]: in
/// [`RECORDS`] when the helper was given them, else in its own `/tmp`.
pub fn records() -> (std::path::PathBuf, std::path::PathBuf) {
    let kept = |var: &str| {
        let volume = std::env::var(var).ok()?;
        let path = record_of(Path::new(RECORDS), &volume)?;
        adopt(&path, Path::new("/tmp")).ok()?;
        Some(path)
    };
    let state = Path::new(STATE);
    (
        kept(RECORD_ENV).unwrap_or_else(|| state.to_path_buf()),
        kept(SOURCE_RECORD_ENV).unwrap_or_else(|| source_state(state)),
    )
}

/// The file in `dir` that holds the record of `volume`; none for a name
/// that could not be a Docker volume's (it could leave `dir`).
pub fn record_of(dir: &Path, volume: &str) -> Option<std::path::PathBuf> {
    let fine = !volume.is_empty()
        // Room for the longest temporary name of a record (state::Writer).
        && volume.len() <= 255 - ".json.tmp.4294967295.999999999.18446744073709551615".len()
        && volume
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"_.-".contains(&b))
        && volume.as_bytes()[0].is_ascii_alphanumeric();
    fine.then(|| dir.join(format!("{volume}.json")))
}

/// Takes over a record an earlier helper kept, once per helper (`marks` is
/// this helper's own `/tmp`): hashes it read while the apps were stopped
/// held only until they ran again, which they may have since, so they lose
/// that standing ([`scan::Entry::still`]); every other hash keeps its time
/// of reading and is checked as before.
pub fn adopt(record: &Path, marks: &Path) -> io::Result<()> {
    let name = record.file_name().unwrap_or_default().to_string_lossy();
    let mark = marks.join(format!("drover-adopted-{name}"));
    if mark.exists() {
        return Ok(());
    }
    if record.exists() {
        let mut w = state::Writer::create(record)?;
        for mut e in state::Reader::open(record) {
            e.still = false;
            w.push(&e)?;
        }
        w.finish()?;
    }
    std::fs::write(mark, b"")
}
const BUF: usize = 1 << 20;

/// One line of a stream: an entry header or the end mark.
#[derive(Debug, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Line {
    End {
        end: u64,
        /// Of a scan: the bytes it read to hash files (the rest were lent
        /// by the record).
        #[serde(default)]
        read: u64,
    },
    Entry(Box<Entry>),
}

fn other(msg: String) -> io::Error {
    io::Error::other(msg)
}

/// Asks for 1 MiB pipe buffers on stdin and stdout (where they are pipes):
/// fewer wake-ups for the engine relaying a stream. Best effort.
pub fn widen_pipes() {
    use nix::fcntl::{fcntl, FcntlArg::F_SETPIPE_SZ};
    use std::os::fd::AsFd;
    let _ = fcntl(std::io::stdin().as_fd(), F_SETPIPE_SZ(1 << 20));
    let _ = fcntl(std::io::stdout().as_fd(), F_SETPIPE_SZ(1 << 20));
}

/// The whole record, for tests.
#[cfg(test)]
fn load_state(path: &Path) -> BTreeMap<String, Entry> {
    scan::index(&state::Reader::open(path).collect::<Vec<_>>())
}

#[cfg(test)]
fn save_state(path: &Path, entries: &BTreeMap<String, Entry>) -> io::Result<()> {
    let mut sorted: Vec<&Entry> = entries.values().collect();
    sorted.sort_by_cached_key(|e| scan::key(&e.path));
    let mut w = state::Writer::create(path)?;
    for e in sorted {
        w.push(e)?;
    }
    w.finish()
}

/// Scans `root` and writes one JSON entry per line as the walk meets
/// them, then the end mark; the record of hashes is rewritten alongside.
/// With `hash`, every regular file has its hash (reused where unchanged);
/// `stopped` as for [`scan::walk`].
pub fn scan_out(
    root: &Path,
    state: &Path,
    hash: bool,
    stopped: bool,
    out: &mut impl Write,
) -> io::Result<()> {
    let mut previous = state::Reader::open(state);
    let mut next = state::Writer::create(state)?;
    let mut w = BufWriter::new(out);
    let (mut count, mut read) = (0u64, 0u64);
    scan::walk(
        root,
        &mut |path| previous.find(path),
        hash,
        stopped,
        &mut |e, before| {
            read += scan::read_for(&e, before.as_ref());
            if e.hash.is_some() {
                next.push(&e)?;
            } else if let Some(b) = before.filter(|b| unchanged(&e, b)) {
                next.push(&b)?;
            }
            serde_json::to_writer(&mut w, &e).map_err(io::Error::other)?;
            w.write_all(b"\n")?;
            count += 1;
            Ok(())
        },
    )?;
    next.finish()?;
    writeln!(w, "{{\"end\":{count},\"read\":{read}}}")?;
    w.flush()
}

/// Reads escaped paths, one per line and in scan order, and writes their
/// entries as [`scan_out`] does (a path that is not there is left out),
/// then the end mark. The record of hashes lends them, and is left as it is.
pub fn scan_only(
    root: &Path,
    state: &Path,
    hash: bool,
    stopped: bool,
    input: impl BufRead,
    out: &mut impl Write,
) -> io::Result<()> {
    let mut previous = state::Reader::open(state);
    let mut w = BufWriter::new(out);
    let (mut count, mut read) = (0u64, 0u64);
    let lent = std::cell::RefCell::new(None);
    let mut paths = input.split(b'\n').map(|line| {
        let line = line?;
        let path = String::from_utf8(line).map_err(|_| other("a path is not UTF-8".into()))?;
        Ok(unescape(&path))
    });
    scan::entries_at(
        root,
        &mut paths,
        &mut |path| {
            let before = previous.find(path);
            lent.replace(before.clone());
            before
        },
        hash,
        stopped,
        &mut |e| {
            read += scan::read_for(&e, lent.take().as_ref());
            serde_json::to_writer(&mut w, &e).map_err(io::Error::other)?;
            w.write_all(b"\n")?;
            count += 1;
            Ok(())
        },
    )?;
    writeln!(w, "{{\"end\":{count},\"read\":{read}}}")?;
    w.flush()
}

/// Reads escaped paths, one per line, and writes them as a stream. A path
/// gone (or a file renamed) since it was listed is left out (the next pass
/// sees it gone). A file
/// that shrinks while read is padded to its listed size; its changed ctime
/// makes the next scan send it again.
pub fn pack(
    root: &Path,
    state: &Path,
    input: impl BufRead,
    out: &mut impl Write,
) -> io::Result<()> {
    let mut known = state::Rewrite::open(state)?;
    let dir = Root::open(root)?;
    let mut w = BufWriter::with_capacity(BUF, out);
    let mut buf = vec![0u8; BUF];
    let mut count = 0u64;
    // The first path sent of each file with other names.
    let mut sent_as: BTreeMap<u64, String> = BTreeMap::new();
    // Files are read in before the pack comes to them.
    let hints = beneath::ReadAhead::start(root);
    let mut lines = input.split(b'\n');
    let mut ahead = std::collections::VecDeque::new();
    loop {
        while ahead.len() < beneath::READ_AHEAD {
            let Some(line) = lines.next() else { break };
            let line = line?;
            hints.hint(&unescape(&String::from_utf8_lossy(&line)));
            ahead.push_back(line);
        }
        let Some(line) = ahead.pop_front() else { break };
        let path = String::from_utf8(line).map_err(|_| other("a path is not UTF-8".into()))?;
        let rel = unescape(&path);
        let before = match entry_of(root, &rel) {
            Ok(e) => e,
            Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
            Err(e) => return Err(e),
        };
        if matches!(before.kind, EntryKind::Socket | EntryKind::Device) {
            return Err(other(format!(
                "`{path}` is a {}, which drover cannot copy",
                if before.kind == EntryKind::Socket {
                    "socket"
                } else {
                    "device node"
                }
            )));
        }
        // Opened before anything of it is written: a file renamed or
        // removed since it was listed is left out like one gone earlier.
        let linked = before.nlink > 1 && sent_as.contains_key(&before.ino);
        let file = if before.kind == EntryKind::File && !linked {
            match dir.at(&rel, &path).and_then(|at| at.open_file()) {
                Ok(f) => Some(f),
                Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                Err(e) => return Err(e),
            }
        } else {
            None
        };
        if before.kind == EntryKind::File && before.nlink > 1 {
            if let Some(first) = sent_as.get(&before.ino) {
                let mut link = before.clone();
                link.link = Some(first.clone());
                serde_json::to_writer(&mut w, &link).map_err(io::Error::other)?;
                w.write_all(b"\n")?;
                count += 1;
                continue;
            }
            sent_as.insert(before.ino, path.clone());
        }
        serde_json::to_writer(&mut w, &before).map_err(io::Error::other)?;
        w.write_all(b"\n")?;
        count += 1;
        let Some(mut f) = file else {
            continue;
        };
        let read_at = scan::now_ns();
        let mut h = blake3::Hasher::new();
        let mut left = before.size;
        let mut short = false;
        while left > 0 {
            let want = usize::try_from(left.min(BUF as u64)).unwrap_or(BUF);
            let n = if short { 0 } else { f.read(&mut buf[..want])? };
            if n == 0 {
                // Shrunk while read: pad, and never trust this hash.
                short = true;
                buf[..want].fill(0);
                w.write_all(&buf[..want])?;
                left -= want as u64;
                continue;
            }
            h.update(&buf[..n]);
            w.write_all(&buf[..n])?;
            left -= n as u64;
        }
        // As it is after the read (its attributes change its ctime).
        let after = scan::entry_from(path.clone(), &f.metadata()?, None, before.xattrs.clone());
        if !short && unchanged(&before, &after) {
            let mut e = after;
            e.hash = Some(h.finalize().to_hex().to_string());
            e.hashed_at_ns = Some(read_at);
            known.set(&path, Some(&e))?;
        } else {
            known.set(&path, None)?;
        }
    }
    writeln!(w, "{{\"end\":{count}}}")?;
    w.flush()?;
    known.finish()
}

/// Writes `data` at offset `at` of the new file (its position), in pieces
/// that end on the file's block boundaries, seeking over every piece of
/// zeros instead of writing it, so that holes stay holes.
fn write_keeping_holes(f: &mut std::fs::File, data: &[u8], at: u64) -> io::Result<()> {
    use std::io::{Seek, SeekFrom};
    const BLOCK: usize = 4096;
    let mut rest = data;
    let mut pos = at;
    while !rest.is_empty() {
        // Up to the next block boundary of the file, not of the buffer.
        let to_boundary = BLOCK - (pos % BLOCK as u64) as usize;
        let (chunk, tail) = rest.split_at(to_boundary.min(rest.len()));
        // Zeros are skipped even short of a block: the file is new, so
        // what is not written reads as zeros (and `set_len` ends it).
        if chunk.iter().all(|b| *b == 0) {
            f.seek(SeekFrom::Current(chunk.len() as i64))?;
        } else {
            f.write_all(chunk)?;
        }
        pos += chunk.len() as u64;
        rest = tail;
    }
    Ok(())
}

fn set_owner_and_times(at: &At, e: &Entry) -> io::Result<()> {
    let mode = (e.kind != EntryKind::Symlink).then_some(e.mode);
    at.set_owner_and_times(e.uid, e.gid, mode, e.mtime_ns)?;
    // After the mode: an ACL sets the group bits its mask says.
    if e.kind != EntryKind::Symlink {
        at.set_xattrs(&e.xattrs)?;
    }
    Ok(())
}

/// What an unpack wrote, printed when it is done.
#[derive(Debug, Default, Serialize, Deserialize)]
pub struct Unpacked {
    pub end: u64,
    pub bytes: u64,
}

/// Applies a stream to `root`: entries are created or replaced, file
/// contents written, owners, modes and times set; directories get theirs
/// last (writing inside one changes its mtime). Everything is flushed to
/// disk before the summary is printed. Every path is reached below `root`
/// without following a symlink ([`crate::helper::beneath`]).
pub fn unpack(root: &Path, state: &Path, input: impl Read, out: &mut impl Write) -> io::Result<()> {
    unpack_noting(root, state, input, out, &mut |_| Ok(()))
}

/// Where a helper copying on one host ([`copy_in`]) notes each entry once
/// it is written, and the end of each copy with an empty line: a backup
/// of the volume being filled reads each file only then
/// ([`repo::Job::Backup`]'s `follow`).
pub const COPIED: &str = "/tmp/drover-copied";

/// [`unpack`], calling `noted` with the (escaped) path of each entry once
/// it is written, times and all (a folder's once it is made: its times
/// are set last).
fn unpack_noting(
    root: &Path,
    state: &Path,
    input: impl Read,
    out: &mut impl Write,
    noted: &mut dyn FnMut(&str) -> io::Result<()>,
) -> io::Result<()> {
    let mut known = state::Rewrite::open(state)?;
    // The hashes written this time of files with other names, for links
    // to them later in the stream.
    let mut linked_hashes: BTreeMap<String, Option<String>> = BTreeMap::new();
    let dir = Root::open(root)?;
    let mut r = BufReader::with_capacity(BUF, input);
    let mut dirs: Vec<(Vec<u8>, Entry)> = Vec::new();
    let mut done = Unpacked::default();
    let mut line = Vec::new();
    let mut buf = vec![0u8; BUF];
    loop {
        line.clear();
        if r.read_until(b'\n', &mut line)? == 0 {
            return Err(other(format!(
                "the stream ended after {} entries, before its end mark",
                done.end
            )));
        }
        let e = match serde_json::from_slice::<Line>(&line) {
            Ok(Line::End { end, .. }) if end == done.end => break,
            Ok(Line::End { end, .. }) => {
                return Err(other(format!(
                    "the stream announced {end} entries but carried {}",
                    done.end
                )))
            }
            Ok(Line::Entry(e)) => e,
            Err(err) => return Err(other(format!("a malformed stream header: {err}"))),
        };
        let rel = unescape(&e.path);
        let at = dir.at(&rel, &e.path)?;
        let st = at.stat()?;
        let existing = st.map(|st| st.st_mode & S_IFMT);
        let same_kind = existing.is_some_and(|t| match e.kind {
            EntryKind::Dir => t == S_IFDIR,
            EntryKind::File => t == S_IFREG,
            _ => false,
        });
        // A file with other hard links (a retained copy may have them) gets
        // an inode of its own: writing into the shared one would change
        // the other paths too, and no retry would ever verify.
        let shared = e.kind == EntryKind::File && st.is_some_and(|st| st.st_nlink > 1);
        if existing.is_some() && (!same_kind || shared) && !rel.is_empty() {
            at.remove()?;
        }
        match e.kind {
            EntryKind::Dir => {
                if !same_kind {
                    at.mkdir()?;
                }
                noted(&e.path)?;
                dirs.push((rel, *e));
                done.end += 1;
                continue;
            }
            EntryKind::File if e.link.is_some() => {
                let first = e.link.as_deref().unwrap_or_default();
                let from = dir.at(&unescape(first), first)?;
                if !same_kind || existing.is_some() {
                    at.remove()?;
                }
                from.hard_link(&at)?;
                let mut linked = entry_of(root, &rel)?;
                linked.hash = linked_hashes.get(first).cloned().flatten();
                known.set(&e.path, Some(&linked))?;
            }
            EntryKind::File => {
                let mut f = at.create_file()?;
                let mut h = blake3::Hasher::new();
                let mut left = e.size;
                while left > 0 {
                    let want = usize::try_from(left.min(BUF as u64)).unwrap_or(BUF);
                    let n = r.read(&mut buf[..want])?;
                    if n == 0 {
                        return Err(other(format!(
                            "the stream ended inside `{}`, {left} bytes short",
                            e.path
                        )));
                    }
                    if e.sparse {
                        write_keeping_holes(&mut f, &buf[..n], e.size - left)?;
                    } else {
                        f.write_all(&buf[..n])?;
                    }
                    h.update(&buf[..n]);
                    left -= n as u64;
                }
                if e.sparse {
                    // A hole at the end has no block to write.
                    f.set_len(e.size)?;
                }
                done.bytes += e.size;
                beneath::set_file_meta(&f, &e.path, (e.uid, e.gid, e.mode, e.mtime_ns), &e.xattrs)?;
                // The hash of exactly the bytes written, good for as long
                // as the file stays as it is now (its attributes are those
                // just set).
                let mut written =
                    scan::entry_from(e.path.clone(), &f.metadata()?, None, e.xattrs.clone());
                written.hash = Some(h.finalize().to_hex().to_string());
                if e.nlink > 1 {
                    linked_hashes.insert(e.path.clone(), written.hash.clone());
                }
                known.set(&e.path, Some(&written))?;
            }
            EntryKind::Symlink => {
                let target = unescape(e.target.as_deref().unwrap_or_default());
                at.symlink(&target)?;
                set_owner_and_times(&at, &e)?;
            }
            EntryKind::Fifo => {
                at.mkfifo(e.mode)?;
                set_owner_and_times(&at, &e)?;
            }
            EntryKind::Socket | EntryKind::Device => {
                return Err(other(format!("`{}` cannot be copied", e.path)))
            }
        }
        noted(&e.path)?;
        done.end += 1;
    }
    for (rel, e) in dirs.iter().rev() {
        set_owner_and_times(&dir.at(rel, &e.path)?, e)?;
    }
    dir.sync()?;
    known.finish()?;
    serde_json::to_writer(&mut *out, &done).map_err(io::Error::other)?;
    out.write_all(b"\n")?;
    out.flush()
}

/// Keeps a helper container running until nothing has run in it besides
/// this process for `unused` (a drover that died leaves no helper for
/// ever, and a move of any length keeps its helpers).
pub fn idle(unused: std::time::Duration) {
    let me = std::process::id();
    let mut last_used = std::time::Instant::now();
    loop {
        let busy = std::fs::read_dir("/proc").is_ok_and(|d| {
            d.filter_map(|e| e.ok())
                .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
                .any(|pid| pid != me)
        });
        if busy {
            last_used = std::time::Instant::now();
        } else if last_used.elapsed() >= unused {
            return;
        }
        std::thread::sleep(std::time::Duration::from_secs(10).min(unused));
    }
}

/// Writes the dirty data of the filesystem that holds a helper's volume
/// to disk while the helper's job goes on, instead of when the helper is
/// removed: the engine's removal unmounts the helper's root, which waits
/// for every dirty page of the host's filesystem (0.5 s for a GiB just
/// written, in `bench/README.md`). It flushes whenever the host
/// holds more than [`Flusher::DIRTY`] unwritten (so a host that writes
/// little is never made to commit more often than it does), until
/// dropped; a flush under way when it is dropped still ends on its own.
/// Errors only cost the time saved.
pub struct Flusher {
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
}

impl Flusher {
    /// How often the host's unwritten data is looked at.
    const EVERY: std::time::Duration = std::time::Duration::from_millis(200);
    /// How much unwritten data makes a flush worth it.
    const DIRTY: u64 = 32 << 20;

    pub fn start(volume: &Path) -> Flusher {
        Flusher::start_after(volume, || true)
    }

    /// [`Flusher::start`], but flushing nothing before `ready` says so
    /// (once it has, it is not asked again).
    pub fn start_after(volume: &Path, mut ready: impl FnMut() -> bool + Send + 'static) -> Flusher {
        use std::sync::atomic::Ordering::Relaxed;
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        if let Ok(dir) = std::fs::File::open(volume) {
            let stopped = std::sync::Arc::clone(&stop);
            std::thread::spawn(move || {
                let mut waiting = true;
                while !stopped.load(Relaxed) {
                    waiting = waiting && !ready();
                    let Some(dirty) = dirty_bytes() else { return };
                    if !waiting && dirty >= Self::DIRTY && nix::unistd::syncfs(&dir).is_err() {
                        return;
                    }
                    std::thread::sleep(Self::EVERY);
                }
            });
        }
        Flusher { stop }
    }
}

impl Drop for Flusher {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
    }
}

/// The host's data waiting to be written to disk (`Dirty` in
/// `/proc/meminfo`, which a container sees as the host's).
fn dirty_bytes() -> Option<u64> {
    dirty_in(&std::fs::read_to_string("/proc/meminfo").ok()?)
}

fn dirty_in(meminfo: &str) -> Option<u64> {
    let line = meminfo.lines().find(|l| l.starts_with("Dirty:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

/// How long a receiving helper waits for its sender.
const ACCEPT_WAIT: std::time::Duration = std::time::Duration::from_secs(20);
/// How long a connection may take to present the token.
const TOKEN_WAIT: std::time::Duration = std::time::Duration::from_secs(2);
/// How long a sender's stream may stay silent.
const STREAM_IDLE: std::time::Duration = std::time::Duration::from_secs(30);

/// A writer that counts bytes and prints `{"sent":N}` lines now and then.
struct Counting<W: Write, P: Write> {
    inner: W,
    progress: P,
    sent: u64,
    last: std::time::Instant,
    /// Bytes per second at most (tests only).
    rate: Option<u64>,
}

impl<W: Write, P: Write> Write for Counting<W, P> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.sent += n as u64;
        if let Some(rate) = self.rate.filter(|r| *r > 0) {
            std::thread::sleep(std::time::Duration::from_secs_f64(n as f64 / rate as f64));
        }
        if self.last.elapsed() > std::time::Duration::from_millis(200) {
            writeln!(self.progress, "{{\"sent\":{}}}", self.sent)?;
            self.progress.flush()?;
            self.last = std::time::Instant::now();
        }
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

/// Copies the paths read from `input` (as [`pack`] takes them) from
/// `source` (a volume and its record) into `root` on one host: a pack
/// piped straight into an unpack, in one process, so no byte leaves the
/// container. Prints the unpack's summary.
pub fn copy_in(
    (source, source_state): (&Path, &Path),
    (root, state): (&Path, &Path),
    log: Option<&Path>,
    input: impl BufRead,
    out: &mut impl Write,
) -> io::Result<()> {
    let mut log = log.map(Log::open).transpose()?;
    let (r, w) = nix::unistd::pipe().map_err(io::Error::from)?;
    // As large as the pack's writes: a wake-up of each side per megabyte,
    // not sixteen (a smaller pipe, if the kernel refuses, only costs time).
    let _ = nix::fcntl::fcntl(&w, nix::fcntl::FcntlArg::F_SETPIPE_SZ(BUF as i32));
    let (r, mut w) = (std::fs::File::from(r), std::fs::File::from(w));
    let (packed, unpacked) = std::thread::scope(|s| {
        // An unpack that fails drops its end of the pipe: the pack then
        // fails on its next write instead of waiting for ever.
        let unpacker = s.spawn(move || {
            let mut summary = Vec::new();
            let noted = &mut |path: &str| match &mut log {
                Some(log) => log.note(path),
                None => Ok(()),
            };
            unpack_noting(root, state, r, &mut summary, noted).map(|()| summary)
        });
        let packed = pack(source, source_state, input, &mut w);
        drop(w);
        let unpacked = unpacker
            .join()
            .unwrap_or_else(|_| Err(other("the unpack stopped unexpectedly".into())));
        (packed, unpacked)
    });
    // The unpack's reason first: a pack cut off only says that it was; but
    // an unpack that only saw the stream stop says less than the pack.
    let summary = match (unpacked, packed) {
        (Ok(summary), Ok(())) => summary,
        (Err(_), Err(p)) if p.kind() != io::ErrorKind::BrokenPipe => {
            return Err(other(format!("reading the source: {p}")))
        }
        (Err(u), _) => return Err(u),
        (Ok(_), Err(p)) => return Err(p),
    };
    out.write_all(&summary)?;
    out.flush()
}

/// The log at [`COPIED`]: a line a path, each written at once; an empty
/// line when the copy ends, whether it succeeded or not.
struct Log(std::fs::File);

impl Log {
    fn open(path: &Path) -> io::Result<Log> {
        let f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)?;
        Ok(Log(f))
    }

    fn note(&mut self, path: &str) -> io::Result<()> {
        // (An escaped path holds no line break; the volume's own folder,
        // whose path is empty, is there from the start.)
        if path.is_empty() {
            return Ok(());
        }
        self.0.write_all(format!("{path}\n").as_bytes())
    }
}

impl Drop for Log {
    fn drop(&mut self) {
        let _ = self.0.write_all(b"\n");
    }
}

/// The direct path, sending side: reads a token line, then paths; connects
/// to the receiving helper, proves the token, and streams the paths to it.
pub fn send(
    root: &Path,
    state: &Path,
    to: &str,
    rate: Option<u64>,
    mut input: impl BufRead,
    progress: &mut impl Write,
) -> io::Result<()> {
    let mut token = String::new();
    input.read_line(&mut token)?;
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    let addr = std::net::ToSocketAddrs::to_socket_addrs(to)?
        .next()
        .ok_or_else(|| other(format!("`{to}` is not an address")))?;
    let stream = loop {
        match std::net::TcpStream::connect_timeout(&addr, std::time::Duration::from_secs(2)) {
            Ok(s) => break s,
            Err(e) if std::time::Instant::now() >= deadline => {
                return Err(other(format!(
                    "cannot reach the receiving helper at {to}: {e}"
                )))
            }
            Err(_) => std::thread::sleep(std::time::Duration::from_millis(100)),
        }
    };
    let mut w = Counting {
        inner: &stream,
        progress: &mut *progress,
        sent: 0,
        last: std::time::Instant::now(),
        rate,
    };
    w.write_all(token.as_bytes())?;
    pack(root, state, input, &mut w)?;
    let sent = w.sent;
    stream.shutdown(std::net::Shutdown::Write)?;
    // Wait for the receiver to close: it has then written everything.
    let mut rest = Vec::new();
    let _ = (&stream).read_to_end(&mut rest);
    writeln!(progress, "{{\"sent\":{sent}}}")?;
    progress.flush()
}

/// The direct path, receiving side: reads the token from stdin, listens on
/// `port`, and unpacks the stream of the first connection that presents it.
pub fn receive(
    root: &Path,
    state: &Path,
    port: u16,
    mut input: impl BufRead,
    out: &mut impl Write,
) -> io::Result<()> {
    let mut token = String::new();
    input.read_line(&mut token)?;
    if token.trim().len() < 32 {
        return Err(other("no token".into()));
    }
    let listener = std::net::TcpListener::bind(("0.0.0.0", port))?;
    listener.set_nonblocking(true)?;
    let deadline = std::time::Instant::now() + ACCEPT_WAIT;
    loop {
        let conn = match listener.accept() {
            Ok((c, _)) => c,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                if std::time::Instant::now() >= deadline {
                    return Err(other("no sender came".into()));
                }
                std::thread::sleep(std::time::Duration::from_millis(20));
                continue;
            }
            Err(e) => return Err(e),
        };
        conn.set_nonblocking(false)?;
        // Whoever reaches the port gets two seconds to prove the token, so
        // a stranger holding a connection open delays the sender by that
        // much at most (and the whole wait is bounded by ACCEPT_WAIT).
        conn.set_read_timeout(Some(TOKEN_WAIT))?;
        let mut r = BufReader::with_capacity(BUF, &conn);
        let mut got = String::new();
        if r.by_ref().take(200).read_line(&mut got).is_err() || !same(got.trim(), token.trim()) {
            continue; // not our sender
        }
        // A sender silent this long is gone: the unpack fails, never waits.
        conn.set_read_timeout(Some(STREAM_IDLE))?;
        return unpack(root, state, r, out);
    }
}

/// Compares two tokens in time that does not depend on where they differ.
fn same(a: &str, b: &str) -> bool {
    a.len() == b.len()
        && a.bytes()
            .zip(b.bytes())
            .fold(0u8, |acc, (x, y)| acc | (x ^ y))
            == 0
}

/// Deletes the escaped paths read one per line (directories with what is
/// in them), deepest first, and flushes.
pub fn delete(root: &Path, input: impl BufRead) -> io::Result<()> {
    let dir = Root::open(root)?;
    let mut paths: Vec<Vec<u8>> = Vec::new();
    for line in input.split(b'\n') {
        let line = line?;
        let rel = unescape(&String::from_utf8_lossy(&line));
        if rel.is_empty() {
            return Err(other("refused path ``: the volume's root".into()));
        }
        paths.push(rel);
    }
    paths.sort();
    // Every path is checked before anything is removed.
    let targets = paths
        .iter()
        .rev()
        .map(|rel| dir.at(rel, &escape(rel)))
        .collect::<io::Result<Vec<_>>>()?;
    for at in targets {
        at.remove()?;
    }
    dir.sync()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;
    /// The scan tests' tree, with a file larger than the buffer, a FIFO and
    /// a directory mode of its own.
    fn tree() -> tempfile::TempDir {
        let d = scan::tests::tree();
        let p = d.path();
        std::fs::write(p.join("big"), vec![7u8; 3 * BUF + 5]).unwrap();
        nix::unistd::mkfifo(
            &p.join("pipe"),
            nix::sys::stat::Mode::from_bits_truncate(0o600),
        )
        .unwrap();
        std::fs::set_permissions(p.join("a/b"), std::fs::Permissions::from_mode(0o711)).unwrap();
        d
    }

    /// Scans both trees and fails on any difference.
    fn assert_same(a: &Path, b: &Path) -> Vec<Entry> {
        let a = scan::scan(a, None, true, false).unwrap();
        let b = scan::scan(b, None, true, false).unwrap();
        let d = scan::differences(&a, &b);
        assert!(d.is_empty(), "{d:?}");
        b
    }

    fn paths(entries: &[Entry]) -> Vec<u8> {
        let mut out = Vec::new();
        for e in entries {
            out.extend_from_slice(e.path.as_bytes());
            out.push(b'\n');
        }
        out
    }

    fn read_scan(bytes: &[u8]) -> Vec<Entry> {
        let mut out = Vec::new();
        for line in bytes.split(|b| *b == b'\n').filter(|l| !l.is_empty()) {
            match serde_json::from_slice::<Line>(line).unwrap() {
                Line::Entry(e) => out.push(*e),
                Line::End { end, .. } => assert_eq!(end as usize, out.len()),
            }
        }
        out
    }

    #[test]
    fn the_hosts_unwritten_data_is_read_from_meminfo() {
        let meminfo =
            "MemTotal:       24000000 kB\nDirty:             40960 kB\nWriteback:           0 kB\n";
        assert_eq!(dirty_in(meminfo), Some(40 << 20));
        assert_eq!(dirty_in("MemTotal: 1 kB\n"), None);
        assert_eq!(dirty_in("Dirty: many kB\n"), None);
    }

    #[test]
    fn pack_then_unpack_makes_an_equal_copy_and_a_cut_stream_is_refused() {
        let src = tree();
        let dst = tempfile::tempdir().unwrap();
        let state = tempfile::tempdir().unwrap();
        let st = state.path().join("s.json");
        let mut listing = Vec::new();
        scan_out(src.path(), &st, false, false, &mut listing).unwrap();
        let entries = read_scan(&listing);
        let mut stream = Vec::new();
        pack(src.path(), &st, &paths(&entries)[..], &mut stream).unwrap();
        // Cut anywhere: refused, never a shorter copy that looks whole.
        let dst_state = state.path().join("d.json");
        for cut in [10, stream.len() / 2, stream.len() - 3] {
            let d = tempfile::tempdir().unwrap();
            assert!(unpack(d.path(), &dst_state, &stream[..cut], &mut Vec::new()).is_err());
        }
        let mut summary = Vec::new();
        unpack(dst.path(), &dst_state, &stream[..], &mut summary).unwrap();
        // What unpack recorded is what a scan of the copy finds.
        let recorded = load_state(&dst_state);
        for e in scan::scan(dst.path(), None, true, false).unwrap() {
            if e.kind == EntryKind::File {
                assert_eq!(recorded[&e.path].hash, e.hash, "{}", e.path);
            }
        }
        let b = assert_same(src.path(), dst.path());
        let a = scan::scan(src.path(), None, true, false).unwrap();
        // Times come across to the nanosecond.
        let ia = scan::index(&a);
        for e in &b {
            assert_eq!(e.mtime_ns, ia[&e.path].mtime_ns, "{}", e.path);
        }
        // The pack lent its hashes: a full scan now reads nothing new.
        let known = load_state(&st);
        assert_eq!(
            known["big"].hash.as_deref(),
            ia["big"].hash.as_deref(),
            "hash recorded while packing"
        );
    }

    #[test]
    fn a_copy_in_names_what_stopped_its_pack_not_only_the_cut_stream() {
        let src = tempfile::tempdir().unwrap();
        std::fs::write(src.path().join("a"), b"a").unwrap();
        let _socket = std::os::unix::net::UnixListener::bind(src.path().join("s")).unwrap();
        let dst = tempfile::tempdir().unwrap();
        let state = tempfile::tempdir().unwrap();
        let e = copy_in(
            (src.path(), &state.path().join("src.json")),
            (dst.path(), &state.path().join("dst.json")),
            None,
            &b"a\ns\n"[..],
            &mut Vec::new(),
        )
        .unwrap_err();
        assert!(e.to_string().contains("`s` is a socket"), "{e}");
    }

    #[test]
    fn a_scan_of_some_paths_gives_their_entries_as_a_whole_scan_does() {
        let src = tree();
        let state = tempfile::tempdir().unwrap();
        let st = state.path().join("s.json");
        let mut all = Vec::new();
        scan_out(src.path(), &st, true, false, &mut all).unwrap();
        let all = scan::index(&read_scan(&all));
        // A folder (not descended into), a file, one gone, in scan order.
        let mut some = Vec::new();
        scan_only(
            src.path(),
            &st,
            true,
            false,
            &b"a\nbig\ngone\n"[..],
            &mut some,
        )
        .unwrap();
        let some = read_scan(&some);
        assert_eq!(
            some.iter().map(|e| e.path.as_str()).collect::<Vec<_>>(),
            ["a", "big"]
        );
        for e in &some {
            assert_eq!(e.hash, all[&e.path].hash, "{}", e.path);
            assert_eq!(e.mode, all[&e.path].mode, "{}", e.path);
        }
    }

    #[test]
    fn unpack_replaces_entries_of_another_kind_and_delete_removes() {
        let src = tree();
        let dst = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dst.path().join("link/inner")).unwrap();
        std::fs::write(dst.path().join("a"), b"a file where a dir goes").unwrap();
        std::fs::write(dst.path().join("stale"), b"old").unwrap();
        let entries = scan::scan(src.path(), None, false, false).unwrap();
        let st = src.path().join("..").join("state-x.json");
        let mut stream = Vec::new();
        pack(src.path(), &st, &paths(&entries)[..], &mut stream).unwrap();
        unpack(
            dst.path(),
            &st.with_extension("d"),
            &stream[..],
            &mut Vec::new(),
        )
        .unwrap();
        delete(dst.path(), &b"stale\n"[..]).unwrap();
        assert_same(src.path(), dst.path());
        assert!(delete(dst.path(), &b"../x\n"[..]).is_err());
        let _ = std::fs::remove_file(st);
    }
    /// A stream that leads its own entries out of the volume: a symlink
    /// `a` → outside, then `a/x`; and deletes by absolute path or `..`.
    pub fn hostile_stream(outside: &Path) -> Vec<u8> {
        let line = |path: &str, kind: &str, size: u64, target: Option<&str>| {
            let mut v = serde_json::json!({"path": path, "kind": kind, "mode": 0o644, "uid": 0, "gid": 0,
                "size": size, "mtime_ns": 0, "ctime_ns": 0, "ino": 0});
            if let Some(t) = target {
                v["target"] = t.into();
            }
            format!("{v}\n")
        };
        let mut s = line("a", "symlink", 0, Some(outside.to_str().unwrap()));
        s.push_str(&line("a/x", "file", 3, None));
        s.push_str("pwn{\"end\":2}\n");
        s.into_bytes()
    }

    #[test]
    fn a_stream_never_writes_or_deletes_outside_the_volume() {
        let outside = tempfile::tempdir().unwrap();
        let vol = tempfile::tempdir().unwrap();
        let state = tempfile::tempdir().unwrap();
        let st = state.path().join("s.json");
        let err = unpack(
            vol.path(),
            &st,
            &hostile_stream(outside.path())[..],
            &mut Vec::new(),
        )
        .unwrap_err();
        assert!(err.to_string().contains("refused path `a/x`"), "{err}");
        assert_eq!(std::fs::read_dir(outside.path()).unwrap().count(), 0);
        std::fs::write(outside.path().join("keep"), b"x").unwrap();
        let keep = outside.path().join("keep");
        for bad in [
            format!("{}\n", keep.display()),
            "a/keep\n".into(),
            "../x\n".into(),
        ] {
            assert!(delete(vol.path(), bad.as_bytes()).is_err(), "{bad}");
        }
        assert!(keep.exists());
    }
    #[test]
    fn a_stranger_holding_the_direct_port_delays_the_sender_by_seconds_at_most() {
        let src = tree();
        let dst = tempfile::tempdir().unwrap();
        let state = tempfile::tempdir().unwrap();
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let token = "a".repeat(64);
        let (d, st) = (dst.path().to_path_buf(), state.path().join("d.json"));
        let t = token.clone();
        let receiver = std::thread::spawn(move || {
            receive(&d, &st, port, format!("{t}\n").as_bytes(), &mut Vec::new())
        });
        std::thread::sleep(std::time::Duration::from_millis(200));
        // Connects first and says nothing.
        let stranger = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
        let started = std::time::Instant::now();
        let entries = scan::scan(src.path(), None, false, false).unwrap();
        let mut input = format!("{token}\n").into_bytes();
        input.extend(paths(&entries));
        let to = format!("127.0.0.1:{port}");
        send(
            src.path(),
            &state.path().join("s.json"),
            &to,
            None,
            &input[..],
            &mut Vec::new(),
        )
        .unwrap();
        receiver.join().unwrap().unwrap();
        assert!(
            started.elapsed() < std::time::Duration::from_secs(10),
            "{:?}",
            started.elapsed()
        );
        drop(stranger);
        assert_same(src.path(), dst.path());
    }
    #[test]
    fn a_file_written_in_the_same_tick_as_its_hashing_is_read_again() {
        let src = tree();
        let state = tempfile::tempdir().unwrap();
        let st = state.path().join("s.json");
        // The cache says `big` was hashed in the very tick of its last
        // change, with a hash that is no longer right (a write in that tick
        // changed no time): the next scan must not trust it.
        let mut e = entry_of(src.path(), b"big").unwrap();
        e.hash = Some("0".repeat(64));
        e.hashed_at_ns = Some(e.ctime_ns);
        save_state(&st, &scan::index(&[e.clone()])).unwrap();
        let mut out = Vec::new();
        scan_out(src.path(), &st, true, false, &mut out).unwrap();
        let fresh = read_scan(&out)
            .into_iter()
            .find(|x| x.path == "big")
            .unwrap();
        assert_ne!(fresh.hash, e.hash, "a racily clean hash was reused");
        // Hashed long after its last change: the cache serves.
        e.hashed_at_ns = Some(e.ctime_ns + scan::RACY_WINDOW_NS + 1);
        save_state(&st, &scan::index(&[e.clone()])).unwrap();
        let mut out = Vec::new();
        scan_out(src.path(), &st, true, false, &mut out).unwrap();
        let cached = read_scan(&out)
            .into_iter()
            .find(|x| x.path == "big")
            .unwrap();
        assert_eq!(cached.hash, e.hash);
    }

    #[test]
    fn a_record_kept_by_an_earlier_helper_serves_the_next_but_not_its_hashes_taken_while_stopped() {
        let src = tree();
        let records = tempfile::tempdir().unwrap();
        let (marks, marks2) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        let st = record_of(records.path(), "blog-pgdata.20261201t221500z").unwrap();
        // An earlier helper hashed `big` long after its last change, and
        // `a/b/file.txt` while the apps were stopped (racy, so only that
        // standing let it hold).
        let mut big = entry_of(src.path(), b"big").unwrap();
        big.hash = Some("1".repeat(64));
        big.hashed_at_ns = Some(big.ctime_ns + scan::RACY_WINDOW_NS + 1);
        let mut still = entry_of(src.path(), b"a/b/file.txt").unwrap();
        still.hash = Some("2".repeat(64));
        still.hashed_at_ns = Some(still.ctime_ns);
        still.still = true;
        save_state(&st, &scan::index(&[still.clone(), big.clone()])).unwrap();
        // The next helper takes the record over: its stopped scan reuses
        // the one, not the other (the apps may have run in between).
        adopt(&st, marks.path()).unwrap();
        let mut out = Vec::new();
        scan_out(src.path(), &st, true, true, &mut out).unwrap();
        let got = scan::index(&read_scan(&out));
        assert_eq!(got["big"].hash, big.hash);
        assert_ne!(got["a/b/file.txt"].hash, still.hash);
        // Within one helper, a hash taken while stopped holds for its next
        // stopped scan: taking the record over again changes nothing.
        let mut kept = scan::index(&state::Reader::open(&st).collect::<Vec<_>>());
        assert!(kept["a/b/file.txt"].still);
        kept.get_mut("a/b/file.txt").unwrap().hash = Some("3".repeat(64));
        save_state(&st, &kept).unwrap();
        adopt(&st, marks.path()).unwrap();
        let mut out = Vec::new();
        scan_out(src.path(), &st, true, true, &mut out).unwrap();
        let got = scan::index(&read_scan(&out));
        assert_eq!(got["a/b/file.txt"].hash.as_deref(), Some(&*"3".repeat(64)));
        // Another helper: not any more.
        adopt(&st, marks2.path()).unwrap();
        assert!(state::Reader::open(&st).all(|e| !e.still));
        // Names that are no volume's are refused, never joined.
        for bad in ["", "../x", "a/b", ".hidden", "x\ny"] {
            assert_eq!(record_of(records.path(), bad), None, "{bad}");
        }
    }
}
