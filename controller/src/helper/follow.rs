//! In the helper: the volume a copy on this host is filling, read as it
//! fills. A volume's first backup pushes a snapshot that must first be
//! copied whole; reading each file into the repository as soon as the copy
//! has written it lets the push run beside the copy, not after it. What
//! this reads is a partial backup, no backup of drover's: the push of the
//! finished snapshot then compares each file with it (size, times and
//! inode) and reads only what the copy changed after ([`super::repo`]).
//!
//! The copy ([`super::copy_in`]) notes each entry in [`super::COPIED`] once
//! it is written. The order of a backup is that of a walk of the folders,
//! so the source volume is walked, and each entry waits until the copy has
//! noted it; once the copy has ended, an entry it did not note is left
//! out (the push of the snapshot reads it).

use std::collections::HashSet;
use std::io::{BufRead, BufReader};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use rustic_core::{BackupOptions, LocalSource, ReadSource, ReadSourceEntry, RusticResult};

use crate::helper::scan::escape;

type Open = <LocalSource as ReadSource>::Open;

/// The volume at `root`, being filled from `source` by a copy that notes
/// what it wrote in `log`.
pub struct Following {
    pub source: PathBuf,
    pub root: PathBuf,
    pub log: PathBuf,
    pub opts: BackupOptions,
    /// [`RACY`], but in tests.
    pub racy: Duration,
}

impl Following {
    /// The volume at [`super::repo::PATH`] filled from [`super::SOURCE`].
    pub fn here(opts: BackupOptions) -> Following {
        Following {
            source: super::SOURCE.into(),
            root: super::repo::PATH.into(),
            log: super::COPIED.into(),
            opts,
            racy: RACY,
        }
    }
}

/// How long the copy may note nothing before it is taken to have ended (a
/// file of many gigabytes only costs the push the reading of what
/// follows).
const STALLED: Duration = Duration::from_secs(60);

/// A file changed this recently when it is read may be written again
/// within the same tick of the clock: its change time is then left out of
/// the partial backup, so that the push after never takes it as
/// unchanged.
const RACY: Duration = Duration::from_millis(50);

impl ReadSource for Following {
    type Open = Open;
    type Iter = Box<dyn Iterator<Item = RusticResult<ReadSourceEntry<Open>>> + Send>;

    fn size(&self) -> RusticResult<Option<u64>> {
        Ok(None)
    }

    fn entries(&self) -> Self::Iter {
        let walk = ignore::WalkBuilder::new(&self.source)
            .standard_filters(false)
            .follow_links(false)
            .sort_by_file_path(Path::cmp)
            .build();
        let (source, root, opts) = (self.source.clone(), self.root.clone(), self.opts.clone());
        let racy = self.racy;
        let mut copied = Copied::new(&self.log);
        // A folder left out, with everything beneath it.
        let mut left_out: Option<PathBuf> = None;
        Box::new(walk.filter_map(move |e| {
            // What cannot be read here is read by the push after.
            let e = e.ok()?;
            let rel = e.path().strip_prefix(&source).ok()?.to_path_buf();
            if left_out.as_ref().is_some_and(|d| rel.starts_with(d)) {
                return None;
            }
            let written =
                rel.as_os_str().is_empty() || copied.wait_for(&escape(rel.as_os_str().as_bytes()));
            let entry = written
                .then(|| entry_at(&opts, &root.join(&rel), racy))
                .flatten();
            if entry.is_none() && e.file_type().is_some_and(|t| t.is_dir()) {
                left_out = Some(rel);
            }
            entry.map(Ok)
        }))
    }
}

/// The entry of `at`, as rustic's walk makes it; its change time left out
/// when it is `racy` ([`RACY`]).
fn entry_at(opts: &BackupOptions, at: &Path, racy: Duration) -> Option<ReadSourceEntry<Open>> {
    let e = ignore::WalkBuilder::new(at)
        .standard_filters(false)
        .follow_links(false)
        .max_depth(Some(0))
        .build()
        .next()?
        .ok()?;
    let mut entry = opts.ignore_save_opts.map_entry(e).ok()?;
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as i128);
    let changed = entry.node.meta.ctime.map(|t| t.as_nanosecond());
    if changed.is_none_or(|c| now - c < racy.as_nanos() as i128) {
        entry.node.meta.ctime = None;
    }
    Some(entry)
}

/// Whether the copy that writes `log` has ended: the log ends with the
/// empty line of a copy's end.
pub fn copy_ended(log: &Path) -> bool {
    use std::os::unix::fs::FileExt;
    let Ok(f) = std::fs::File::open(log) else {
        return false;
    };
    let len = f.metadata().map_or(0, |m| m.len());
    let mut tail = [0u8; 2];
    match len {
        0 => false,
        1 => f.read_exact_at(&mut tail[..1], 0).is_ok() && tail[0] == b'\n',
        _ => f.read_exact_at(&mut tail, len - 2).is_ok() && tail == *b"\n\n",
    }
}

/// What the copy has noted in its log so far.
struct Copied {
    path: PathBuf,
    log: Option<BufReader<std::fs::File>>,
    seen: HashSet<String>,
    line: String,
    ended: bool,
    grew: Instant,
}

impl Copied {
    fn new(path: &Path) -> Copied {
        Copied {
            path: path.to_path_buf(),
            log: None,
            seen: HashSet::new(),
            line: String::new(),
            ended: false,
            grew: Instant::now(),
        }
    }

    /// Whether the copy wrote `path` (escaped), waiting for it while the
    /// copy goes on.
    fn wait_for(&mut self, path: &str) -> bool {
        loop {
            if self.seen.contains(path) {
                return true;
            }
            if self.ended {
                return false;
            }
            if !self.read() {
                if self.grew.elapsed() > STALLED {
                    self.ended = true;
                }
                std::thread::sleep(Duration::from_millis(5));
            }
        }
    }

    /// Reads what the log gained; whether it gained anything.
    fn read(&mut self) -> bool {
        if self.log.is_none() {
            self.log = std::fs::File::open(&self.path).ok().map(BufReader::new);
        }
        let Some(log) = &mut self.log else {
            return false;
        };
        let mut grew = false;
        // A line not yet whole stays in `line`, and is read on next time.
        while matches!(log.read_line(&mut self.line), Ok(n) if n > 0) {
            let Some(path) = self.line.strip_suffix('\n') else {
                break;
            };
            grew = true;
            match path.is_empty() {
                true => self.ended = true,
                false => {
                    self.seen.insert(path.to_string());
                }
            }
            self.line.clear();
            if self.ended {
                break;
            }
        }
        if grew {
            self.grew = Instant::now();
        }
        grew
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    #[test]
    fn an_entry_waits_for_the_copy_and_one_it_never_wrote_is_left_out_at_its_end() {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("log");
        let mut copied = Copied::new(&log);
        let writer = std::thread::spawn({
            let log = log.clone();
            move || {
                std::thread::sleep(Duration::from_millis(50));
                let mut f = std::fs::File::create(&log).unwrap();
                f.write_all(b"a\nb/").unwrap();
                f.flush().unwrap();
                std::thread::sleep(Duration::from_millis(50));
                f.write_all(b"c\n\nd\n").unwrap();
            }
        });
        assert!(!copy_ended(&log));
        assert!(copied.wait_for("b/c"));
        assert!(copied.wait_for("a"));
        assert!(!copied.wait_for("x"), "the copy ended without it");
        assert!(!copied.wait_for("d"), "noted after the copy's end");
        writer.join().unwrap();
        assert!(!copy_ended(&log), "a line came after the end");
        std::fs::write(&log, b"a\n\n").unwrap();
        assert!(copy_ended(&log));
        std::fs::write(&log, b"\n").unwrap();
        assert!(copy_ended(&log), "a copy of nothing");
    }
}
