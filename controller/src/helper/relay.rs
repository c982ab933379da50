//! A repository reached through drover: the helper on a volume's host runs
//! rustic_core against a backend whose every call travels over its stdin
//! and stdout to drover, which makes it against the real store.
//!
//! Frames, both ways: a 4-byte big-endian length, that many bytes of JSON,
//! then the body the JSON announces (`len`). drover sends the job first;
//! the helper then sends calls, each answered before the next, and ends
//! with `done`. Pack uploads are answered as soon as they arrive and run
//! several at a time; every other call waits until they are stored, so an
//! index or snapshot is never written before the packs it names — a store
//! that fails mid-upload leaves a valid repository.

use std::io::{Read, Write};
use std::sync::Mutex;

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

/// drover's answer to a call.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Reply {
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
pub fn call_len(c: &Call) -> u64 {
    match c {
        Call::Write { len, .. } => *len,
        _ => 0,
    }
}

/// The helper's side: a backend whose calls go to drover over stdio.
pub struct Relayed {
    io: Mutex<(Box<dyn Read + Send>, Box<dyn Write + Send>)>,
}

impl Relayed {
    pub fn new(input: Box<dyn Read + Send>, output: Box<dyn Write + Send>) -> Relayed {
        Relayed {
            io: Mutex::new((input, output)),
        }
    }

    fn call(&self, call: &Call, body: &[u8]) -> RusticResult<(Reply, Bytes)> {
        let broken = |e: std::io::Error| {
            RusticError::with_source(ErrorKind::Backend, "the link to drover broke", e)
        };
        let mut io = self.io.lock().unwrap_or_else(|e| e.into_inner());
        let (input, output) = &mut *io;
        output.write_all(&frame(call, body)).map_err(broken)?;
        output.flush().map_err(broken)?;
        let reply: Reply = read_header(input).map_err(broken)?;
        let mut data = vec![0u8; usize::try_from(reply.len).unwrap_or(usize::MAX)];
        input.read_exact(&mut data).map_err(broken)?;
        if let Some(e) = reply.error {
            return Err(RusticError::new(ErrorKind::Backend, "{why}").attach_context("why", e));
        }
        Ok((reply, Bytes::from(data)))
    }

    /// Sends the job's result: the last frame.
    pub fn done(&self, result: serde_json::Value) -> std::io::Result<()> {
        let mut io = self.io.lock().unwrap_or_else(|e| e.into_inner());
        io.1.write_all(&frame(&Call::Done { result }, &[]))?;
        io.1.flush()
    }
}

impl ReadBackend for Relayed {
    fn location(&self) -> String {
        "drover".into()
    }

    fn list_with_size(&self, tpe: FileType) -> RusticResult<Vec<(Id, u32)>> {
        let (reply, _) = self.call(&Call::List { tpe }, &[])?;
        reply
            .list
            .iter()
            .map(|(id, size)| Ok((id.parse::<Id>()?, *size)))
            .collect()
    }

    fn read_full(&self, tpe: FileType, id: &Id) -> RusticResult<Bytes> {
        let id = id.to_hex().to_string();
        Ok(self.call(&Call::Read { tpe, id }, &[])?.1)
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
        Ok(self.call(&call, &[])?.1)
    }

    fn warmup_path(&self, tpe: FileType, id: &Id) -> String {
        format!("{}/{}", tpe.dirname(), id.to_hex().as_str())
    }
}

impl WriteBackend for Relayed {
    fn create(&self) -> RusticResult<()> {
        self.call(&Call::Create, &[]).map(|_| ())
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
        self.call(&call, &body).map(|_| ())
    }

    fn remove(&self, tpe: FileType, id: &Id, cacheable: bool) -> RusticResult<()> {
        let call = Call::Remove {
            tpe,
            id: id.to_hex().to_string(),
            cacheable,
        };
        self.call(&call, &[]).map(|_| ())
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
        let f = frame(
            &Call::Write {
                tpe: FileType::Pack,
                id: "ab".into(),
                cacheable: false,
                len: 3,
            },
            b"xyz",
        );
        let mut buf = f[..f.len() - 1].to_vec();
        assert!(take_frame::<Call>(&mut buf, call_len).unwrap().is_none());
        buf.push(f[f.len() - 1]);
        buf.extend_from_slice(&frame(&Call::Create, &[]));
        let (c, body) = take_frame::<Call>(&mut buf, call_len).unwrap().unwrap();
        assert!(matches!(c, Call::Write { len: 3, .. }));
        assert_eq!(body, b"xyz");
        assert!(matches!(
            take_frame::<Call>(&mut buf, call_len).unwrap(),
            Some((Call::Create, _))
        ));
        assert!(buf.is_empty());
    }
}
