//! Carrying data between the helpers of a move: scans, deletes and the
//! stream of files, straight between the helpers when the hosts reach each
//! other, else through the Docker API.

use super::*;

/// `/drover helper ARGS…`, as run in a helper.
pub fn helper_cmd(args: &[&str]) -> Vec<String> {
    ["/drover", "helper"]
        .iter()
        .chain(args)
        .map(|s| s.to_string())
        .collect()
}

/// Writes `input` to a command's stdin, then closes it.
pub(super) fn feed(
    mut stdin: std::pin::Pin<Box<dyn tokio::io::AsyncWrite + Send>>,
    input: Vec<Bytes>,
) -> tokio::task::JoinHandle<std::io::Result<()>> {
    tokio::spawn(async move {
        let mut r = Ok(());
        for part in &input {
            r = stdin.write_all(part).await;
            if r.is_err() {
                break;
            }
        }
        let _ = stdin.shutdown().await;
        r
    })
}

/// The port a receiving helper listens on inside its container.
pub(super) const DIRECT_PORT: u16 = 7070;

pub(super) fn random_token() -> Result<String, String> {
    crate::contract::hostkey::random_bytes().map(|b| crate::contract::hostkey::hex(&b))
}

pub(super) fn helper_name(volume: &str) -> String {
    format!("{}{volume}", crate::plan::HELPER_PREFIX)
}

pub(super) fn first_lines(b: &[u8]) -> String {
    let s = String::from_utf8_lossy(b);
    let s = s.trim();
    s.chars().take(600).collect()
}

/// Escaped paths, one per line, as the helpers read them.
#[derive(Debug, Default, Clone)]
pub struct PathList {
    lines: Vec<u8>,
    count: usize,
}

impl PathList {
    pub fn push(&mut self, path: &str) {
        self.lines.extend_from_slice(path.as_bytes());
        self.lines.push(b'\n');
        self.count += 1;
    }

    pub fn len(&self) -> usize {
        self.count
    }

    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// The paths of both lists (each in scan order), once each, in scan
    /// order: merged line by line, never held as strings.
    pub fn union(&self, other: &PathList) -> PathList {
        if other.is_empty() {
            return self.clone();
        }
        let (mut a, mut b) = (self.iter().peekable(), other.iter().peekable());
        let mut out = PathList::default();
        loop {
            let next = match (a.peek(), b.peek()) {
                (Some(x), Some(y)) => match scan::key(x).cmp(&scan::key(y)) {
                    std::cmp::Ordering::Less => a.next(),
                    std::cmp::Ordering::Greater => b.next(),
                    std::cmp::Ordering::Equal => {
                        b.next();
                        a.next()
                    }
                },
                (Some(_), None) => a.next(),
                (None, Some(_)) => b.next(),
                (None, None) => return out,
            };
            if let Some(p) = next {
                out.push(p);
            }
        }
    }

    /// The paths, as pushed.
    pub fn iter(&self) -> impl Iterator<Item = &str> {
        self.lines
            .split(|c| *c == b'\n')
            .filter(|l| !l.is_empty())
            // Every line was pushed as a `&str`.
            .map(|l| std::str::from_utf8(l).unwrap_or_default())
    }

    /// The paths, for tests and messages.
    pub fn paths(&self) -> Vec<String> {
        self.iter().map(str::to_string).collect()
    }
}

/// What a pass sends and deletes so that the target matches the source,
/// decided pair by pair as both scans stream in. Entries are compared by
/// everything the copy keeps (times included); `by_content` also compares
/// hashes where both sides have one.
pub struct SendPlan {
    by_content: bool,
    pub send: PathList,
    pub delete: PathList,
    /// The bytes of the files to send.
    pub bytes: u64,
    links: scan::Links,
}

impl SendPlan {
    pub fn new(by_content: bool) -> SendPlan {
        SendPlan {
            by_content,
            send: PathList::default(),
            delete: PathList::default(),
            bytes: 0,
            links: scan::Links::default(),
        }
    }

    pub fn add(&mut self, pair: Pair) {
        let send = match &pair {
            Pair::Src(_) => true,
            Pair::Dst(t) => {
                if !t.path.is_empty() {
                    self.delete.push(&t.path);
                }
                false
            }
            Pair::Both(s, t) => {
                s.kind != t.kind
                    || s.mode != t.mode
                    || (s.uid, s.gid) != (t.uid, t.gid)
                    || s.size != t.size
                    || s.target != t.target
                    || (s.sparse && !t.sparse)
                    || s.xattrs != t.xattrs
                    || (s.kind != EntryKind::Dir && s.mtime_ns != t.mtime_ns)
                    || (self.by_content && s.hash.is_some() && t.hash.is_some() && s.hash != t.hash)
            }
        };
        self.links.note(&pair, send);
        if let (true, Pair::Src(s) | Pair::Both(s, _)) = (send, &pair) {
            self.send.push(&s.path);
            if s.kind == EntryKind::File {
                self.bytes += s.size;
            }
        }
    }

    /// Hard links travel together: a file's names are sent all at once when
    /// any of them is, or when the other side does not name one file with
    /// them (the stream carries the content once).
    pub fn finish(mut self) -> SendPlan {
        let mut queued: std::collections::HashSet<&str> = self
            .links
            .src
            .iter()
            .filter(|l| l.sent)
            .map(|l| l.path.as_str())
            .collect();
        let mut more = Vec::new();
        for (_, g) in self.links.groups() {
            if scan::split(&g) || g.iter().any(|l| queued.contains(l.path.as_str())) {
                for l in g.iter().filter(|l| l.in_src) {
                    if queued.insert(l.path.as_str()) {
                        more.push(l.path.clone());
                    }
                }
            }
        }
        if !more.is_empty() {
            // The list stays in scan order: each helper's record of its
            // files is rewritten in that order as the stream goes.
            let mut all = self.send.paths();
            all.extend(more);
            all.sort_by_cached_key(|p| scan::key(p));
            self.send = PathList::default();
            for p in &all {
                self.send.push(p);
            }
        }
        self
    }
}

/// What to send and delete so that `dst` matches `src` (both scans held
/// whole, sorted as scans are), and the bytes to send.
pub fn to_send(src: &[Entry], dst: &[Entry], by_content: bool) -> (Vec<String>, Vec<String>, u64) {
    let mut plan = SendPlan::new(by_content);
    for p in scan::pairs(src, dst) {
        plan.add(p);
    }
    let plan = plan.finish();
    (plan.send.paths(), plan.delete.paths(), plan.bytes)
}

/// One side of a copy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Side {
    Src,
    Dst,
}

/// A helper running, idle, for a job on the volume it mounts at `/data`
/// (one left after its copy, or one started for a push): its container's
/// name, and whether it has a network to reach a store itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Kept {
    pub name: String,
    pub network: bool,
}

/// The two helper containers of a copy: one with the source volume
/// (read-only), one with the target volume, on the same host or two.
pub struct Helpers<'a> {
    cp: &'a Copier,
    /// The Docker volumes, and the helpers' container names.
    src_volume: String,
    pub(super) dst_volume: String,
    src_name: String,
    dst_name: String,
    stack: String,
    image: String,
    /// Both volumes are on one host: the target's helper mounts the source
    /// too and copies in place.
    local: bool,
    /// `address:port` of the target helper while the direct path works.
    direct: std::sync::Mutex<Option<String>>,
    /// On one host: the helper has a network, for a job after the copy
    /// ([`Helpers::with_network`]); false again if it could not start so.
    network: std::sync::atomic::AtomicBool,
}

impl<'a> Helpers<'a> {
    pub(super) fn new(
        cp: &'a Copier,
        (src_volume, dst_volume): (&str, &str),
        stack: &str,
        image: &str,
    ) -> Helpers<'a> {
        Helpers {
            cp,
            src_volume: src_volume.to_string(),
            dst_volume: dst_volume.to_string(),
            src_name: helper_name(src_volume),
            dst_name: helper_name(dst_volume),
            stack: stack.to_string(),
            image: image.to_string(),
            local: Arc::ptr_eq(&cp.src, &cp.dst) && src_volume != dst_volume,
            direct: std::sync::Mutex::new(None),
            network: Default::default(),
        }
    }

    /// On one host, the helper starts with a network (when the engine
    /// lets it), for a job after the copy that reaches a store itself.
    pub fn with_network(&self) {
        if self.local {
            self.network
                .store(true, std::sync::atomic::Ordering::Relaxed);
        }
    }

    /// The target's helper, left running after the copy instead of
    /// [`Helpers::stop`].
    pub fn kept(&self) -> Kept {
        Kept {
            name: self.dst_name.clone(),
            network: self.network.load(std::sync::atomic::Ordering::Relaxed),
        }
    }

    fn api(&self, side: Side) -> &'a Arc<dyn DockerApi> {
        match side {
            Side::Src => &self.cp.src,
            Side::Dst => &self.cp.dst,
        }
    }

    /// The helper that acts for a side: on one host the target's helper
    /// reads the source volume too (mounted at `/source`).
    fn name(&self, side: Side) -> &str {
        match side {
            Side::Src if !self.local => &self.src_name,
            _ => &self.dst_name,
        }
    }

    pub(super) fn spec(
        &self,
        side: Side,
        network: bool,
        publish: Option<(String, u16)>,
    ) -> HelperSpec {
        HelperSpec {
            name: self.name(side).to_string(),
            image: self.image.clone(),
            volume: match side {
                Side::Src => self.src_volume.clone(),
                Side::Dst => self.dst_volume.clone(),
            },
            read_only: side == Side::Src,
            source: (self.local && side == Side::Dst).then(|| self.src_volume.clone()),
            labels: crate::contract::internal_labels([(labels::STACK, &self.stack)]),
            cmd: helper_cmd(&["idle", "--seconds", "21600"]),
            network,
            publish,
            records: true,
        }
    }

    pub async fn start(&self) -> Result<(), String> {
        let addr = self.cp.target_address.as_str();
        let loopback =
            addr.is_empty() || addr == "localhost" || addr.starts_with("127.") || addr == "::1";
        let direct = self.cp.direct && !loopback && !self.local;
        let sides: &[Side] = if self.local {
            &[Side::Dst]
        } else {
            &[Side::Src, Side::Dst]
        };
        for &side in sides {
            let (api, name) = (self.api(side), self.name(side));
            api.remove_container(name)
                .await
                .map_err(|e| e.to_string())?;
            // Published on every interface of the target: `address` may be
            // one the host does not hold itself (NAT).
            let publish = (direct && side == Side::Dst).then(|| (String::new(), DIRECT_PORT));
            let network = direct || self.network.load(std::sync::atomic::Ordering::Relaxed);
            let port = match api.run_helper(&self.spec(side, network, publish)).await {
                Ok(p) => p,
                Err(e) if network => {
                    self.network
                        .store(false, std::sync::atomic::Ordering::Relaxed);
                    let way = match direct {
                        true => "copying through the Docker API",
                        false => "the repository is reached through drover",
                    };
                    tracing::warn!(host = %api.host(), error = %e, "a networked helper cannot start; {way}");
                    api.remove_container(name)
                        .await
                        .map_err(|e| e.to_string())?;
                    api.run_helper(&self.spec(side, false, None))
                        .await
                        .map_err(|e| format!("cannot start the helper on `{}`: {e}", api.host()))?
                }
                Err(e) => return Err(format!("cannot start the helper on `{}`: {e}", api.host())),
            };
            if let Some(p) = port {
                let at = if addr.contains(':') {
                    format!("[{addr}]:{p}")
                } else {
                    format!("{addr}:{p}")
                };
                *self.direct.lock().unwrap_or_else(|e| e.into_inner()) = Some(at);
            }
        }
        Ok(())
    }

    pub async fn stop(&self) {
        let _ = bounded(self.cp.dst.remove_container(&self.dst_name)).await;
        if !self.local {
            let _ = bounded(self.cp.src.remove_container(&self.src_name)).await;
        }
    }

    /// Runs a helper command, feeding it `input`; returns its output.
    pub(super) async fn run(
        &self,
        side: Side,
        args: &[&str],
        input: Vec<u8>,
    ) -> Result<Vec<u8>, String> {
        let api = self.api(side);
        let mut ex = api
            .exec(self.name(side), helper_cmd(args))
            .await
            .map_err(|e| e.to_string())?;
        let writer = feed(ex.input, vec![Bytes::from(input)]);
        let (out, err) = collect(&mut ex.output).await?;
        let _ = writer.await;
        check_exit(api, &ex.id, args[0], &err).await?;
        Ok(out)
    }

    /// Starts a scan of one side, read entry by entry as it streams in.
    /// `stopped`: the apps are stopped, and have been since the last
    /// scan with it ([`crate::helper::scan::scan`]).
    /// `only`: just these paths (in scan order), not the whole volume.
    pub(super) async fn scan(
        &self,
        side: Side,
        hash: bool,
        stopped: bool,
        only: Option<&PathList>,
    ) -> Result<ScanStream, String> {
        let api = self.api(side);
        let mut args = vec!["scan"];
        if hash {
            args.push("--hash");
        }
        if stopped {
            args.push("--stopped");
        }
        if only.is_some() {
            args.push("--only");
        }
        if self.local && side == Side::Src {
            args.push("--source");
        }
        let args = args.as_slice();
        let mut ex = api
            .exec(self.name(side), helper_cmd(args))
            .await
            .map_err(|e| e.to_string())?;
        match only {
            // Fed while the entries stream back. A list cut short makes
            // the scan shorter, and the check then finds paths missing on
            // one side: a move fails, never passes, on it.
            Some(paths) => {
                let input = std::mem::replace(&mut ex.input, Box::pin(tokio::io::sink()));
                drop(feed(input, vec![Bytes::from(paths.lines.clone())]));
            }
            None => {
                let _ = ex.input.shutdown().await;
            }
        }
        Ok(ScanStream {
            api: Arc::clone(api),
            ex,
            pending: Vec::new(),
            ready: Default::default(),
            seen: 0,
            read: 0,
            ended: false,
            done: false,
            err: Vec::new(),
        })
    }

    pub(super) async fn delete(&self, paths: &PathList) -> Result<(), String> {
        self.run(Side::Dst, &["delete"], paths.lines.clone())
            .await?;
        Ok(())
    }

    /// Streams `paths` from the source helper into the target helper: over
    /// the direct path while it works, else through drover.
    pub(super) async fn transfer(
        &self,
        paths: PathList,
        total: u64,
        phase: Phase,
    ) -> Result<(), String> {
        if self.local {
            return self.transfer_local(paths, total, phase).await;
        }
        let paths = Bytes::from(paths.lines);
        let direct = self
            .direct
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        if let Some(to) = direct {
            match self.transfer_direct(&to, paths.clone(), total, phase).await {
                Ok(()) => return Ok(()),
                Err(e) => {
                    tracing::warn!(volume = %self.src_volume, error = %e, "the direct path between the helpers failed; copying through the Docker API instead");
                    *self.direct.lock().unwrap_or_else(|e| e.into_inner()) = None;
                }
            }
        }
        self.transfer_api(paths, total, phase).await
    }

    /// On one host: the target's helper reads the source volume itself.
    pub(super) async fn transfer_local(
        &self,
        paths: PathList,
        total: u64,
        phase: Phase,
    ) -> Result<(), String> {
        let out = self.run(Side::Dst, &["copy-in"], paths.lines).await?;
        self.unpacked(&out, phase, total, "local")
    }

    /// The direct path: the target helper listens on a published port, the
    /// source helper connects with a one-time token and streams to it.
    pub(super) async fn transfer_direct(
        &self,
        to: &str,
        paths: Bytes,
        total: u64,
        phase: Phase,
    ) -> Result<(), String> {
        let token = random_token()?;
        let port = DIRECT_PORT.to_string();
        let mut recv = self
            .cp
            .dst
            .exec(&self.dst_name, helper_cmd(&["receive", "--port", &port]))
            .await
            .map_err(|e| e.to_string())?;
        recv.input
            .write_all(format!("{token}\n").as_bytes())
            .await
            .map_err(|e| e.to_string())?;
        let _ = recv.input.shutdown().await;
        let mut args = vec!["send", "--to", to];
        let rate = test_throttle().map(|r| r.to_string());
        if let Some(r) = &rate {
            args.extend(["--rate", r.as_str()]);
        }
        let mut send = self
            .cp
            .src
            .exec(&self.src_name, helper_cmd(&args))
            .await
            .map_err(|e| e.to_string())?;
        let writer = feed(send.input, vec![Bytes::from(format!("{token}\n")), paths]);
        let mut send_err = Vec::new();
        let mut pending = Vec::new();
        while let Some(chunk) = send.output.next().await {
            match chunk.map_err(|e| e.to_string())? {
                ExecOutput::Stdout(b) => {
                    for line in complete_lines(&mut pending, &b) {
                        if let Ok(v) = serde_json::from_slice::<serde_json::Value>(&line) {
                            if let Some(n) = v["sent"].as_u64() {
                                self.cp.report(phase, n.min(total));
                            }
                        }
                    }
                }
                ExecOutput::Stderr(b) if send_err.len() < 4096 => send_err.extend_from_slice(&b),
                ExecOutput::Stderr(_) => {}
            }
        }
        let _ = writer.await;
        // A sender that failed (say, it could not connect) is not waited
        // for by its receiver: that one gives up on its own. When the
        // receiver failed first (a full disk, say), its reason is the one
        // given.
        if let Err(sent) = check_exit(&self.cp.src, &send.id, "send", &send_err).await {
            let received =
                tokio::time::timeout(Duration::from_secs(5), collect(&mut recv.output)).await;
            if let Ok(Ok((_, err))) = received {
                check_exit(&self.cp.dst, &recv.id, "receive", &err).await?;
            }
            return Err(sent);
        }
        let (out, err) = collect(&mut recv.output).await?;
        check_exit(&self.cp.dst, &recv.id, "receive", &err).await?;
        self.unpacked(&out, phase, total, "direct")
    }

    /// Reads the summary a finished unpack printed.
    pub(super) fn unpacked(
        &self,
        out: &[u8],
        phase: Phase,
        total: u64,
        path: &str,
    ) -> Result<(), String> {
        let done: crate::helper::Unpacked = serde_json::from_slice(out)
            .map_err(|_| format!("the unpack on `{}` gave no summary", self.cp.to()))?;
        self.cp.report(phase, total);
        tracing::debug!(entries = done.end, bytes = done.bytes, path, "unpacked");
        Ok(())
    }

    /// The API path: both helpers' streams pass through drover.
    pub(super) async fn transfer_api(
        &self,
        paths: Bytes,
        total: u64,
        phase: Phase,
    ) -> Result<(), String> {
        let pack = self
            .cp
            .src
            .exec(&self.src_name, helper_cmd(&["pack"]))
            .await
            .map_err(|e| e.to_string())?;
        let unpack = self
            .cp
            .dst
            .exec(&self.dst_name, helper_cmd(&["unpack"]))
            .await
            .map_err(|e| e.to_string())?;
        // The unpack's output is read as it comes: its end means the unpack
        // has exited, and a stream it no longer reads must not be written
        // on (a write would wait for ever).
        let mut unpack_input = unpack.input;
        let ended = tokio_util::sync::CancellationToken::new();
        let unpack_output = {
            let (mut output, ended) = (unpack.output, ended.clone());
            tokio::spawn(async move {
                let r = collect(&mut output).await;
                ended.cancel();
                r
            })
        };
        let writer = feed(pack.input, vec![paths]);
        let mut pack_err = Vec::new();
        let mut sent = 0u64;
        let mut last = Instant::now();
        let mut broken = None;
        let throttle = test_throttle();
        // Reading from the source and writing to the target overlap; at most
        // QUEUE chunks (a few MiB) wait in between.
        const QUEUE: usize = 64;
        let (tx, mut rx) = tokio::sync::mpsc::channel(QUEUE);
        let mut source = pack.output;
        let reader = tokio::spawn(async move {
            while let Some(chunk) = source.next().await {
                let stop = chunk.is_err();
                if tx.send(chunk).await.is_err() || stop {
                    break;
                }
            }
        });
        while let Some(chunk) = rx.recv().await {
            match chunk {
                Ok(ExecOutput::Stdout(b)) => {
                    if broken.is_none() {
                        tokio::select! {
                            r = unpack_input.write_all(&b) => {
                                if let Err(e) = r {
                                    broken = Some(e.to_string());
                                }
                            }
                            () = ended.cancelled() => {
                                broken = Some("the unpack ended before the stream did".into());
                            }
                        }
                    }
                    if broken.is_some() {
                        break;
                    }
                    sent += b.len() as u64;
                    if let Some(rate) = throttle {
                        let secs = b.len() as f64 / rate as f64;
                        tokio::time::sleep(Duration::from_secs_f64(secs)).await;
                    }
                    if last.elapsed() > Duration::from_millis(200) {
                        self.cp.report(phase, sent.min(total));
                        last = Instant::now();
                    }
                }
                Ok(ExecOutput::Stderr(b)) if pack_err.len() < 4096 => {
                    pack_err.extend_from_slice(&b)
                }
                Ok(ExecOutput::Stderr(_)) => {}
                Err(e) => {
                    broken.get_or_insert(e.to_string());
                    break;
                }
            }
        }
        drop(rx);
        let _ = unpack_input.shutdown().await;
        let (out, err) = unpack_output
            .await
            .map_err(|e| format!("reading the unpack failed: {e}"))??;
        // The target's reason first: a source cut off mid-stream only says
        // that it was.
        check_exit(&self.cp.dst, &unpack.id, "unpack", &err).await?;
        reader.abort();
        let _ = reader.await;
        let _ = writer.await;
        check_exit(&self.cp.src, &pack.id, "pack", &pack_err).await?;
        if let Some(e) = broken {
            return Err(format!("the stream to `{}` broke: {e}", self.cp.to()));
        }
        self.unpacked(&out, phase, total, "api")
    }
}

/// All of a command's output: stdout and stderr.
pub(super) async fn collect(
    output: &mut crate::docker::ExecOutputStream,
) -> Result<(Vec<u8>, Vec<u8>), String> {
    let (mut out, mut err) = (Vec::new(), Vec::new());
    while let Some(chunk) = output.next().await {
        match chunk.map_err(|e| e.to_string())? {
            ExecOutput::Stdout(b) => out.extend_from_slice(&b),
            ExecOutput::Stderr(b) => err.extend_from_slice(&b),
        }
    }
    Ok((out, err))
}

/// Appends `chunk` to `pending` and takes out every complete line.
pub(super) fn complete_lines(pending: &mut Vec<u8>, chunk: &[u8]) -> Vec<Vec<u8>> {
    pending.extend_from_slice(chunk);
    let Some(last) = pending.iter().rposition(|c| *c == b'\n') else {
        return Vec::new();
    };
    let done: Vec<u8> = pending.drain(..=last).collect();
    done.split(|c| *c == b'\n')
        .filter(|l| !l.is_empty())
        .map(<[u8]>::to_vec)
        .collect()
}

pub(super) async fn check_exit(
    api: &Arc<dyn DockerApi>,
    id: &str,
    what: &str,
    stderr: &[u8],
) -> Result<(), String> {
    for _ in 0..50 {
        match api.exec_exit_code(id).await {
            Ok(Some(0)) => return Ok(()),
            Ok(Some(code)) => {
                return Err(format!(
                    "helper `{what}` on `{}` failed (exit {code}): {}",
                    api.host(),
                    first_lines(stderr)
                ))
            }
            Ok(None) => tokio::time::sleep(Duration::from_millis(20)).await,
            Err(e) => return Err(e.to_string()),
        }
    }
    Err(format!(
        "helper `{what}` on `{}` did not finish",
        api.host()
    ))
}

/// A helper's scan as it streams in, entry by entry, checked to be
/// complete (its order is checked by the merge).
pub(super) struct ScanStream {
    api: Arc<dyn DockerApi>,
    ex: crate::docker::Exec,
    pending: Vec<u8>,
    ready: std::collections::VecDeque<Entry>,
    seen: u64,
    /// The bytes the scan read to hash files, once it ended.
    pub read: u64,
    ended: bool,
    done: bool,
    err: Vec<u8>,
}

impl scan::Entries for ScanStream {
    /// The next entry; `None` once the scan ended complete.
    async fn next(&mut self) -> Result<Option<Entry>, String> {
        loop {
            if let Some(e) = self.ready.pop_front() {
                return Ok(Some(e));
            }
            if self.done {
                return Ok(None);
            }
            match self.ex.output.next().await {
                Some(chunk) => match chunk.map_err(|e| e.to_string())? {
                    ExecOutput::Stdout(b) => {
                        for line in complete_lines(&mut self.pending, &b) {
                            let line = serde_json::from_slice::<crate::helper::Line>(&line)
                                .map_err(|e| {
                                    format!("a scan on `{}` gave a bad line: {e}", self.api.host())
                                })?;
                            match line {
                                _ if self.ended => {
                                    return Err(format!(
                                        "the scan on `{}` went on after its end",
                                        self.api.host()
                                    ))
                                }
                                crate::helper::Line::Entry(e) => {
                                    self.seen += 1;
                                    self.ready.push_back(*e);
                                }
                                crate::helper::Line::End { end, read } => {
                                    self.read = read;
                                    if end != self.seen {
                                        return Err(format!(
                                            "the scan on `{}` was cut short",
                                            self.api.host()
                                        ));
                                    }
                                    self.ended = true;
                                }
                            }
                        }
                    }
                    ExecOutput::Stderr(b) => self.err.extend_from_slice(&b),
                },
                None => {
                    check_exit(&self.api, &self.ex.id, "scan", &self.err).await?;
                    if !self.ended || !self.pending.is_empty() {
                        return Err(format!("the scan on `{}` was cut short", self.api.host()));
                    }
                    self.done = true;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::PathList;

    #[test]
    fn a_union_of_two_lists_keeps_scan_order_and_each_path_once() {
        let list = |paths: &[&str]| {
            let mut l = PathList::default();
            for p in paths {
                l.push(p);
            }
            l
        };
        let sent = list(&["a", "a/b", "a-c", "z"]);
        let deleted = list(&["a/b", "a/x", "b"]);
        assert_eq!(
            sent.union(&deleted).paths(),
            ["a", "a/b", "a/x", "a-c", "b", "z"]
        );
        assert_eq!(sent.union(&PathList::default()).paths(), sent.paths());
        assert_eq!(PathList::default().union(&deleted).paths(), deleted.paths());
    }
}
