//! drover's side of the relay ([`crate::helper::relay`]): the helper's
//! storage calls answered against the real store.

use std::sync::Arc;

use bytes::Bytes;
use rustic_core::{FileType, Id, RusticError, WriteBackend};
use serde::Serialize;

use crate::helper::relay::{
    call_len, explain as first_line, frame, take_frame, Call, Numbered, Reply,
};

/// How many pack uploads drover runs at a time.
const UPLOADS: usize = 4;
/// How many reads drover runs at a time.
const READS: usize = 8;

/// A read under way: its call's number and its answer.
type Read = (u64, Result<(Reply, Vec<u8>), String>);

/// A reply: the answer, or the error in it.
fn reply(seq: u64, answered: Result<(Reply, Vec<u8>), String>) -> Vec<u8> {
    let (reply, data) = answered.unwrap_or_else(|e| {
        (
            Reply {
                error: Some(e),
                ..Reply::default()
            },
            Vec::new(),
        )
    });
    let reply = Reply {
        seq,
        len: data.len() as u64,
        ..reply
    };
    frame(&reply, &data)
}

/// Sends a finished read's reply to the helper.
async fn send_read(
    input: &mut (impl tokio::io::AsyncWrite + Unpin),
    done: Result<Read, tokio::task::JoinError>,
    send_err: impl Fn(std::io::Error) -> String,
) -> Result<(), String> {
    use tokio::io::AsyncWriteExt;
    let (seq, answered) = done.map_err(|e| e.to_string())?;
    input
        .write_all(&reply(seq, answered))
        .await
        .map_err(send_err)
}

/// drover's side: answers the helper's calls of `exec` against `store`
/// until it is done; returns its result. `job` is sent first.
pub async fn serve(
    api: &Arc<dyn crate::docker::DockerApi>,
    mut exec: crate::docker::Exec,
    store: Arc<dyn WriteBackend>,
    job: &impl Serialize,
    what: &str,
) -> Result<serde_json::Value, String> {
    use futures_util::StreamExt;
    use tokio::io::AsyncWriteExt;
    use tokio::task::JoinSet;

    let send_err = |e: std::io::Error| {
        format!(
            "the helper `{what}` on `{}` stopped reading: {e}",
            api.host()
        )
    };
    exec.input
        .write_all(&frame(job, &[]))
        .await
        .map_err(send_err)?;
    let mut buf = Vec::new();
    let mut stderr = Vec::new();
    let mut uploads: JoinSet<Result<(), String>> = JoinSet::new();
    let mut reads: JoinSet<Read> = JoinSet::new();
    let mut failed: Option<String> = None;
    // Waits for the uploads under way; the first failure stays.
    async fn settle(
        uploads: &mut JoinSet<Result<(), String>>,
        failed: &mut Option<String>,
        until: usize,
    ) {
        while uploads.len() > until {
            match uploads.join_next().await {
                Some(Ok(Ok(()))) => {}
                Some(Ok(Err(e))) => {
                    failed.get_or_insert(e);
                }
                Some(Err(e)) => {
                    failed.get_or_insert(e.to_string());
                }
                None => break,
            }
        }
    }
    loop {
        while let Some(done) = reads.try_join_next() {
            send_read(&mut exec.input, done, send_err).await?;
        }
        let next = take_frame::<Numbered>(&mut buf, call_len)?;
        let Some((Numbered { seq, call }, body)) = next else {
            tokio::select! {
                Some(done) = reads.join_next(), if !reads.is_empty() => {
                    send_read(&mut exec.input, done, send_err).await?;
                }
                out = exec.output.next() => match out {
                    Some(Ok(crate::docker::ExecOutput::Stdout(b))) => buf.extend_from_slice(&b),
                    Some(Ok(crate::docker::ExecOutput::Stderr(b))) => stderr.extend_from_slice(&b),
                    Some(Err(e)) => return Err(e.to_string()),
                    None => {
                        let code = api.exec_exit_code(&exec.id).await.ok().flatten();
                        let said = String::from_utf8_lossy(&stderr);
                        let said = said.trim();
                        settle(&mut uploads, &mut failed, 0).await;
                        return Err(match (failed, said.is_empty()) {
                            (Some(e), _) => e,
                            (None, false) => said.trim_start_matches("drover helper: ").to_string(),
                            (None, true) => format!(
                                "the helper `{what}` on `{}` ended without a result (exit {})",
                                api.host(),
                                code.map_or("unknown".into(), |c| c.to_string())
                            ),
                        });
                    }
                },
            }
            continue;
        };
        let pack = matches!(
            call,
            Call::Write {
                tpe: FileType::Pack,
                ..
            }
        );
        let read = matches!(call, Call::Read { .. } | Call::ReadPartial { .. });
        if pack {
            settle(&mut uploads, &mut failed, UPLOADS - 1).await;
        } else if !read {
            settle(&mut uploads, &mut failed, 0).await;
            while let Some(done) = reads.join_next().await {
                send_read(&mut exec.input, done, send_err).await?;
            }
        }
        let answered = match (&failed, call) {
            (_, Call::Done { result }) => {
                if let Some(e) = failed {
                    return Err(e);
                }
                return Ok(result);
            }
            (Some(e), _) => Err(e.clone()),
            (
                None,
                Call::Write {
                    tpe, id, cacheable, ..
                },
            ) if pack => {
                let store = Arc::clone(&store);
                crate::relocate::test_checkpoint("pushing");
                uploads.spawn_blocking(move || {
                    let id = id.parse::<Id>().map_err(|e| e.to_string())?;
                    store
                        .write_bytes(tpe, &id, cacheable, Bytes::from(body).into())
                        .map_err(|e| format!("storing a pack failed: {}", first_line(&e)))
                });
                Ok((Reply::default(), Vec::new()))
            }
            (None, call) if read => {
                if reads.len() >= READS {
                    if let Some(done) = reads.join_next().await {
                        send_read(&mut exec.input, done, send_err).await?;
                    }
                }
                let store = Arc::clone(&store);
                reads.spawn_blocking(move || (seq, answer(&*store, call, body)));
                continue;
            }
            (None, call) => {
                let store = Arc::clone(&store);
                tokio::task::spawn_blocking(move || answer(&*store, call, body))
                    .await
                    .map_err(|e| e.to_string())?
            }
        };
        exec.input
            .write_all(&reply(seq, answered))
            .await
            .map_err(send_err)?;
    }
}

/// Makes one call against the store: the reply and its body.
fn answer(store: &dyn WriteBackend, call: Call, body: Vec<u8>) -> Result<(Reply, Vec<u8>), String> {
    let id = |s: &str| s.parse::<Id>().map_err(|e| e.to_string());
    let err = |e: Box<RusticError>| first_line(&e);
    let none = Reply::default();
    match call {
        Call::List { tpe } => {
            let list = store.list_with_size(tpe).map_err(err)?;
            let list = list
                .into_iter()
                .map(|(i, s)| (i.to_hex().to_string(), s))
                .collect();
            Ok((Reply { list, ..none }, Vec::new()))
        }
        Call::Read { tpe, id: i } => {
            let b = store.read_full(tpe, &id(&i)?).map_err(err)?;
            Ok((none, b.to_vec()))
        }
        Call::ReadPartial {
            tpe,
            id: i,
            cacheable,
            offset,
            length,
        } => {
            let b = store
                .read_partial(tpe, &id(&i)?, cacheable, offset, length)
                .map_err(err)?;
            Ok((none, b.to_vec()))
        }
        Call::Write {
            tpe,
            id: i,
            cacheable,
            ..
        } => {
            store
                .write_bytes(tpe, &id(&i)?, cacheable, Bytes::from(body).into())
                .map_err(err)?;
            Ok((none, Vec::new()))
        }
        Call::Remove {
            tpe,
            id: i,
            cacheable,
        } => {
            store.remove(tpe, &id(&i)?, cacheable).map_err(err)?;
            Ok((none, Vec::new()))
        }
        Call::Create => {
            store.create().map_err(err)?;
            Ok((none, Vec::new()))
        }
        Call::Done { .. } => Ok((none, Vec::new())),
    }
}
