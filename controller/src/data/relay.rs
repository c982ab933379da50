//! drover's side of the relay ([`crate::helper::relay`]): the helper's
//! storage calls answered against the real store.

use std::sync::Arc;

use bytes::Bytes;
use rustic_core::{FileType, Id, RusticError, WriteBackend};
use serde::Serialize;

use crate::helper::relay::{call_len, explain as first_line, frame, take_frame, Call, Reply};

/// How many pack uploads drover runs at a time.
const UPLOADS: usize = 4;

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
    let mut uploads: tokio::task::JoinSet<Result<(), String>> = tokio::task::JoinSet::new();
    let mut failed: Option<String> = None;
    // Waits for the uploads under way; the first failure stays.
    async fn settle(
        uploads: &mut tokio::task::JoinSet<Result<(), String>>,
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
        let next = take_frame::<Call>(&mut buf, call_len)?;
        let Some((call, body)) = next else {
            match exec.output.next().await {
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
        if pack {
            settle(&mut uploads, &mut failed, UPLOADS - 1).await;
        } else {
            settle(&mut uploads, &mut failed, 0).await;
        }
        let (reply, data) = match (&failed, call) {
            (_, Call::Done { result }) => {
                if let Some(e) = failed {
                    return Err(e);
                }
                return Ok(result);
            }
            (Some(e), _) => (
                Reply {
                    error: Some(e.clone()),
                    ..Reply::default()
                },
                Vec::new(),
            ),
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
                (Reply::default(), Vec::new())
            }
            (None, call) => {
                let store = Arc::clone(&store);
                let done = tokio::task::spawn_blocking(move || answer(&*store, call, body))
                    .await
                    .map_err(|e| e.to_string())?;
                match done {
                    Ok(answered) => answered,
                    Err(e) => (
                        Reply {
                            error: Some(e),
                            ..Reply::default()
                        },
                        Vec::new(),
                    ),
                }
            }
        };
        let reply = Reply {
            len: data.len() as u64,
            ..reply
        };
        exec.input
            .write_all(&frame(&reply, &data))
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
