//! A repository reached through drover: the helper on a volume's host runs
//! rustic_core against a backend whose every call travels over its stdin
//! and stdout to drover, which makes it against the real store.
//!
//! Frames, both ways: a 4-byte big-endian length, that many bytes of JSON,
//! then the body the JSON announces (`len`). drover sends the job first;
//! the helper then sends numbered calls, from as many threads as rustic
//! runs, and ends with `done`; each reply carries its call's number.
//! Reads run several at a time and are answered as each ends. Pack uploads
//! are answered as soon as they arrive and run several at a time; every
//! other call waits until the reads and uploads under way are done, so an
//! index or snapshot is never written before the packs it names — a store
//! that fails mid-upload leaves a valid repository.

use std::collections::HashMap;
use std::io::{Read, Write};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{mpsc, Arc, Mutex};

use bytes::Bytes;
use rustic_core::{
    BytesList, ErrorKind, FileType, Id, ReadBackend, RusticError, RusticResult, WriteBackend,
};
use serde::{Deserialize, Serialize};

/// The largest frame header (a listing of many packs fits).
const MAX_HEADER: usize = 256 << 20;
/// The largest body: rustic's packs are far smaller.
const MAX_BODY: u64 = 1 << 31;

/// A call of the helper's backend.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum Call {
    List {
        tpe: FileType,
    },
    Read {
        tpe: FileType,
        id: String,
    },
    ReadPartial {
        tpe: FileType,
        id: String,
        cacheable: bool,
        offset: u32,
        length: u32,
    },
    Write {
        tpe: FileType,
        id: String,
        cacheable: bool,
        len: u64,
    },
    Remove {
        tpe: FileType,
        id: String,
        cacheable: bool,
    },
    Create,
    /// The job's result; the last frame.
    Done {
        result: serde_json::Value,
    },
}

/// A call as sent: its number, which its reply carries back.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Numbered {
    pub seq: u64,
    #[serde(flatten)]
    pub call: Call,
}

/// drover's answer to a call.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Reply {
    /// The number of the call it answers.
    #[serde(default)]
    pub seq: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// A listing: IDs and sizes.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub list: Vec<(String, u32)>,
    /// The length of the body that follows.
    #[serde(default)]
    pub len: u64,
}

/// Encodes a frame.
pub fn frame(header: &impl Serialize, body: &[u8]) -> Vec<u8> {
    let json = serde_json::to_vec(header).expect("frames serialize");
    let mut out = Vec::with_capacity(4 + json.len() + body.len());
    out.extend_from_slice(&(json.len() as u32).to_be_bytes());
    out.extend_from_slice(&json);
    out.extend_from_slice(body);
    out
}

/// Reads a frame's header (its body, if any, follows on `r`).
pub fn read_header<T: for<'de> Deserialize<'de>>(r: &mut impl Read) -> std::io::Result<T> {
    let mut len = [0u8; 4];
    r.read_exact(&mut len)?;
    let len = u32::from_be_bytes(len) as usize;
    if len > MAX_HEADER {
        return Err(std::io::Error::other("a relay frame is too large"));
    }
    let mut json = vec![0u8; len];
    r.read_exact(&mut json)?;
    serde_json::from_slice(&json).map_err(std::io::Error::other)
}

/// Takes a complete frame's header and body off the front of `buf`, if it
/// holds one; `len` says how long its body is.
pub fn take_frame<T: for<'de> Deserialize<'de>>(
    buf: &mut Vec<u8>,
    len: impl Fn(&T) -> u64,
) -> Result<Option<(T, Vec<u8>)>, String> {
    if buf.len() < 4 {
        return Ok(None);
    }
    let hlen = u32::from_be_bytes([buf[0], buf[1], buf[2], buf[3]]) as usize;
    if hlen > MAX_HEADER {
        return Err("a relay frame is too large".into());
    }
    if buf.len() < 4 + hlen {
        return Ok(None);
    }
    let header: T = serde_json::from_slice(&buf[4..4 + hlen])
        .map_err(|e| format!("a relay frame cannot be read: {e}"))?;
    let blen = len(&header);
    if blen > MAX_BODY {
        return Err("a relay frame's body is too large".into());
    }
    let end = 4 + hlen + blen as usize;
    if buf.len() < end {
        return Ok(None);
    }
    let body = buf[4 + hlen..end].to_vec();
    buf.drain(..end);
    Ok(Some((header, body)))
}

/// The body length of a call.
pub fn call_len(c: &Numbered) -> u64 {
    match c.call {
        Call::Write { len, .. } => len,
        _ => 0,
    }
}

/// The calls waiting for their replies, by number; `None` once the link
/// to drover is broken.
type Waiting = Mutex<Option<HashMap<u64, mpsc::SyncSender<(Reply, Bytes)>>>>;

/// The helper's side: a backend whose calls go to drover over stdio. A
/// thread reads the replies and hands each to the call it answers.
pub struct Relayed {
    output: Mutex<Box<dyn Write + Send>>,
    waiting: Arc<Waiting>,
    next: AtomicU64,
}

impl Relayed {
    pub fn new(mut input: Box<dyn Read + Send>, output: Box<dyn Write + Send>) -> Relayed {
        let waiting: Arc<Waiting> = Arc::new(Mutex::new(Some(HashMap::new())));
        let replies = Arc::clone(&waiting);
        std::thread::spawn(move || {
            let read = |input: &mut Box<dyn Read + Send>| -> std::io::Result<(Reply, Bytes)> {
                let reply: Reply = read_header(input)?;
                let mut data = vec![0u8; usize::try_from(reply.len).unwrap_or(usize::MAX)];
                input.read_exact(&mut data)?;
                Ok((reply, Bytes::from(data)))
            };
            while let Ok((reply, data)) = read(&mut input) {
                let mut waiting = replies.lock().unwrap_or_else(|e| e.into_inner());
                let caller = waiting.as_mut().and_then(|w| w.remove(&reply.seq));
                drop(waiting);
                if let Some(caller) = caller {
                    let _ = caller.send((reply, data));
                }
            }
            // Every call still waiting hears that the link broke.
            replies.lock().unwrap_or_else(|e| e.into_inner()).take();
        });
        Relayed {
            output: Mutex::new(output),
            waiting,
            next: AtomicU64::new(1),
        }
    }

    fn call(&self, call: Call, body: &[u8]) -> RusticResult<(Reply, Bytes)> {
        let broken = |e: std::io::Error| {
            RusticError::with_source(ErrorKind::Backend, "the link to drover broke", e)
        };
        let seq = self.next.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = mpsc::sync_channel(1);
        match self
            .waiting
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .as_mut()
        {
            Some(waiting) => waiting.insert(seq, tx),
            None => return Err(broken(std::io::ErrorKind::BrokenPipe.into())),
        };
        {
            let mut output = self.output.lock().unwrap_or_else(|e| e.into_inner());
            output
                .write_all(&frame(&Numbered { seq, call }, body))
                .map_err(broken)?;
            output.flush().map_err(broken)?;
        }
        let (reply, data) = rx
            .recv()
            .map_err(|_| broken(std::io::ErrorKind::UnexpectedEof.into()))?;
        if let Some(e) = reply.error {
            return Err(RusticError::new(ErrorKind::Backend, "{why}").attach_context("why", e));
        }
        Ok((reply, data))
    }

    /// Sends the job's result: the last frame.
    pub fn done(&self, result: serde_json::Value) -> std::io::Result<()> {
        let mut output = self.output.lock().unwrap_or_else(|e| e.into_inner());
        let call = Numbered {
            seq: 0,
            call: Call::Done { result },
        };
        output.write_all(&frame(&call, &[]))?;
        output.flush()
    }
}

impl ReadBackend for Relayed {
    fn location(&self) -> String {
        "drover".into()
    }

    fn list_with_size(&self, tpe: FileType) -> RusticResult<Vec<(Id, u32)>> {
        let (reply, _) = self.call(Call::List { tpe }, &[])?;
        reply
            .list
            .iter()
            .map(|(id, size)| Ok((id.parse::<Id>()?, *size)))
            .collect()
    }

    fn read_full(&self, tpe: FileType, id: &Id) -> RusticResult<Bytes> {
        let id = id.to_hex().to_string();
        Ok(self.call(Call::Read { tpe, id }, &[])?.1)
    }

    fn read_partial(
        &self,
        tpe: FileType,
        id: &Id,
        cacheable: bool,
        offset: u32,
        length: u32,
    ) -> RusticResult<Bytes> {
        let id = id.to_hex().to_string();
        let call = Call::ReadPartial {
            tpe,
            id,
            cacheable,
            offset,
            length,
        };
        Ok(self.call(call, &[])?.1)
    }

    fn warmup_path(&self, tpe: FileType, id: &Id) -> String {
        format!("{}/{}", tpe.dirname(), id.to_hex().as_str())
    }
}

impl WriteBackend for Relayed {
    fn create(&self) -> RusticResult<()> {
        self.call(Call::Create, &[]).map(|_| ())
    }

    fn write_bytes(
        &self,
        tpe: FileType,
        id: &Id,
        cacheable: bool,
        content: BytesList,
    ) -> RusticResult<()> {
        let body: Vec<u8> = content.slice().concat();
        let call = Call::Write {
            tpe,
            id: id.to_hex().to_string(),
            cacheable,
            len: body.len() as u64,
        };
        self.call(call, &body).map(|_| ())
    }

    fn remove(&self, tpe: FileType, id: &Id, cacheable: bool) -> RusticResult<()> {
        let call = Call::Remove {
            tpe,
            id: id.to_hex().to_string(),
            cacheable,
        };
        self.call(call, &[]).map(|_| ())
    }
}

/// What went wrong, on one line: rustic's guidance and its cause, without
/// its kind.
pub fn explain(e: &RusticError) -> String {
    let s = e.display_log();
    let s = s.strip_prefix("Error: ").unwrap_or(&s);
    let s = match s.find(" (kind: ") {
        Some(at) => {
            let rest = &s[at..];
            let end = rest.find(')').map_or(rest.len(), |e| e + 1);
            format!("{}{}", &s[..at], &rest[end..])
        }
        None => s.to_string(),
    };
    s.split_whitespace().collect::<Vec<_>>().join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_are_taken_only_when_whole() {
        let write = Call::Write {
            tpe: FileType::Pack,
            id: "ab".into(),
            cacheable: false,
            len: 3,
        };
        let f = frame(
            &Numbered {
                seq: 7,
                call: write,
            },
            b"xyz",
        );
        let mut buf = f[..f.len() - 1].to_vec();
        assert!(take_frame::<Numbered>(&mut buf, call_len)
            .unwrap()
            .is_none());
        buf.push(f[f.len() - 1]);
        let create = Numbered {
            seq: 8,
            call: Call::Create,
        };
        buf.extend_from_slice(&frame(&create, &[]));
        let (c, body) = take_frame::<Numbered>(&mut buf, call_len).unwrap().unwrap();
        assert!(matches!(c.call, Call::Write { len: 3, .. }) && c.seq == 7);
        assert_eq!(body, b"xyz");
        assert!(matches!(
            take_frame::<Numbered>(&mut buf, call_len).unwrap(),
            Some((
                Numbered {
                    seq: 8,
                    call: Call::Create
                },
                _
            ))
        ));
        assert!(buf.is_empty());
    }
}
