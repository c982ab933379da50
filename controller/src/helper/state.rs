//! A helper's record of the files it knows the hash of: its last scan, and
//! what its packs and unpacks read and wrote since. Kept per volume in the
//! host's records ([`crate::helper::RECORDS`], else the helper's own
//! `/tmp`) as JSON lines in scan order ([`scan::key`]), so that it is read and
//! rewritten as a stream next to a scan or a stream of files: a helper's
//! memory does not grow with the number of entries.
//!
//! A record that cannot be read is no record (hashes are taken again); a
//! change that does not come in scan order drops the whole record, never
//! keeps a stale hash.

use std::io::{self, BufRead, BufReader, BufWriter, Write};
use std::path::{Path, PathBuf};

use crate::helper::scan::{self, Entry};

/// The record, read in scan order.
pub struct Reader {
    lines: Option<io::Split<BufReader<std::fs::File>>>,
    next: Option<(Vec<u8>, Entry)>,
}

impl Reader {
    /// The record at `path`; an empty one if there is none.
    pub fn open(path: &Path) -> Reader {
        let lines = std::fs::File::open(path)
            .ok()
            .map(|f| BufReader::with_capacity(1 << 16, f).split(b'\n'));
        let mut r = Reader { lines, next: None };
        r.advance();
        r
    }

    fn advance(&mut self) {
        self.next = None;
        let Some(lines) = self.lines.as_mut() else {
            return;
        };
        match lines.next() {
            Some(Ok(line)) => match serde_json::from_slice::<Entry>(&line) {
                Ok(e) => self.next = Some((scan::key(&e.path), e)),
                Err(_) => self.lines = None,
            },
            _ => self.lines = None,
        }
    }

    /// The next entry, if it comes before `key` (or at it, `or_equal`).
    fn take_before(&mut self, key: &[u8], or_equal: bool) -> Option<Entry> {
        let before = self
            .next
            .as_ref()
            .is_some_and(|(k, _)| k.as_slice() < key || (or_equal && k.as_slice() == key));
        if !before {
            return None;
        }
        let e = self.next.take().map(|(_, e)| e);
        self.advance();
        e
    }

    /// The entry of `path`, passing over those before it: paths must be
    /// asked in scan order.
    pub fn find(&mut self, path: &str) -> Option<Entry> {
        let key = scan::key(path);
        while self.take_before(&key, false).is_some() {}
        self.take_before(&key, true)
    }
}

impl Iterator for Reader {
    type Item = Entry;

    fn next(&mut self) -> Option<Entry> {
        let e = self.next.take().map(|(_, e)| e);
        self.advance();
        e
    }
}

/// A new record, written beside the old one and put in its place at the end.
pub struct Writer {
    path: PathBuf,
    tmp: PathBuf,
    w: BufWriter<std::fs::File>,
}

impl Writer {
    pub fn create(path: &Path) -> io::Result<Writer> {
        // Beside it, and this writer's own: two helpers never write one
        // file (helpers in other containers share the records and may
        // have the same process id, so the name is made new until it is),
        // and a name with a dot keeps its whole name.
        static MADE: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        loop {
            let mut tmp = path.as_os_str().to_os_string();
            let nanos = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.subsec_nanos());
            let made = MADE.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            tmp.push(format!(".tmp.{}.{nanos}.{made}", std::process::id()));
            let tmp = PathBuf::from(tmp);
            match std::fs::File::options()
                .write(true)
                .create_new(true)
                .open(&tmp)
            {
                Ok(f) => {
                    return Ok(Writer {
                        w: BufWriter::with_capacity(1 << 16, f),
                        path: path.to_path_buf(),
                        tmp,
                    })
                }
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => continue,
                Err(e) => return Err(e),
            }
        }
    }

    /// Adds an entry (in scan order) if it has a hash.
    pub fn push(&mut self, e: &Entry) -> io::Result<()> {
        if e.hash.is_some() {
            serde_json::to_writer(&mut self.w, e).map_err(io::Error::other)?;
            self.w.write_all(b"\n")?;
        }
        Ok(())
    }

    pub fn finish(mut self) -> io::Result<()> {
        self.w.flush()?;
        std::fs::rename(&self.tmp, &self.path)
    }
}

/// The record, changed path by path as a pack or an unpack goes: paths in
/// scan order replace their entries, every other entry stays.
pub struct Rewrite {
    path: PathBuf,
    old: Reader,
    new: Option<Writer>,
    last: Option<Vec<u8>>,
}

impl Rewrite {
    pub fn open(path: &Path) -> io::Result<Rewrite> {
        Ok(Rewrite {
            path: path.to_path_buf(),
            old: Reader::open(path),
            new: Some(Writer::create(path)?),
            last: None,
        })
    }

    /// `path` now has the entry `e` (or none: it is forgotten).
    pub fn set(&mut self, path: &str, e: Option<&Entry>) -> io::Result<()> {
        let key = scan::key(path);
        let Some(new) = self.new.as_mut() else {
            return Ok(());
        };
        if self.last.as_ref().is_some_and(|l| *l >= key) {
            // Out of order: forget everything rather than keep a stale hash.
            if let Some(w) = self.new.take() {
                let _ = std::fs::remove_file(&w.tmp);
            }
            let _ = std::fs::remove_file(&self.path);
            return Ok(());
        }
        while let Some(old) = self.old.take_before(&key, false) {
            new.push(&old)?;
        }
        let _replaced = self.old.take_before(&key, true);
        if let Some(e) = e {
            new.push(e)?;
        }
        self.last = Some(key);
        Ok(())
    }

    pub fn finish(mut self) -> io::Result<()> {
        let Some(mut new) = self.new.take() else {
            return Ok(());
        };
        for old in self.old.by_ref() {
            new.push(&old)?;
        }
        new.finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hashed(path: &str, hash: &str) -> Entry {
        let d = tempfile::tempdir().unwrap();
        let mut e = scan::entry_of(d.path(), b"").unwrap();
        e.path = path.into();
        e.hash = Some(hash.into());
        e
    }

    fn paths(p: &Path) -> Vec<(String, String)> {
        Reader::open(p)
            .map(|e| (e.path, e.hash.unwrap_or_default()))
            .collect()
    }

    #[test]
    fn a_rewrite_replaces_and_forgets_in_order_and_keeps_the_rest() {
        let d = tempfile::tempdir().unwrap();
        let st = d.path().join("state");
        let mut w = Writer::create(&st).unwrap();
        for (p, h) in [("a", "1"), ("a/b", "2"), ("a-c", "3"), ("z", "4")] {
            w.push(&hashed(p, h)).unwrap();
        }
        w.finish().unwrap();
        let mut r = Reader::open(&st);
        assert_eq!(r.find("a/b").map(|e| e.hash), Some(Some("2".into())));
        assert_eq!(r.find("a-b").map(|e| e.hash), None);
        assert_eq!(r.find("z").map(|e| e.hash), Some(Some("4".into())));
        let mut rw = Rewrite::open(&st).unwrap();
        rw.set("a/b", None).unwrap();
        rw.set("a/c", Some(&hashed("a/c", "5"))).unwrap();
        rw.set("a-c", Some(&hashed("a-c", "6"))).unwrap();
        rw.finish().unwrap();
        assert_eq!(
            paths(&st),
            [("a", "1"), ("a/c", "5"), ("a-c", "6"), ("z", "4")]
                .map(|(p, h)| (p.to_string(), h.to_string()))
        );
        // Out of order: nothing is kept.
        let mut rw = Rewrite::open(&st).unwrap();
        rw.set("z", None).unwrap();
        rw.set("a", None).unwrap();
        rw.finish().unwrap();
        assert!(paths(&st).is_empty());
    }
}
