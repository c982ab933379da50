//! `drover volume snapshot`, `snapshots`, `restore` and `clone`: the
//! commands on a volume's data at rest (`docs/snapshots.md`).

use super::*;

use drover::data::backup;
use drover::data::snapshot::{self, CloneSource, Consistency, CopyOptions, On, Request, Writers};
use drover::desired::{Desired, VolumeSpec};
use drover::docker::hosts::Connections;
use drover::observed::ObservedHost;
use drover::output::{human_bytes, human_duration};

/// `STACK/VOLUME` of a command line.
fn stack_volume(arg: &str) -> Result<(String, String), Failure> {
    match arg.split_once('/') {
        Some((s, v)) if !s.is_empty() && !v.is_empty() && !v.contains('/') => {
            Ok((s.to_string(), v.to_string()))
        }
        _ => Err(format!("`{arg}` is not `STACK/VOLUME`").into()),
    }
}

/// The volume `STACK/VOLUME` names in the manifests.
fn wanted<'a>(d: &'a Desired, arg: &str) -> Result<&'a VolumeSpec, Failure> {
    let (stack, volume) = stack_volume(arg)?;
    if !d.stacks.contains(&stack) {
        return Err(format!("there is no stack `{stack}` in the manifests").into());
    }
    d.volume(&stack, &volume)
        .ok_or_else(|| format!("stack `{stack}` has no volume `{volume}` in the manifests").into())
}

/// `[DIR] A…`: the directory is given when there is one more argument
/// than the command takes.
fn split_dir(args: &[String], takes: usize) -> (PathBuf, &[String]) {
    if args.len() > takes {
        (PathBuf::from(&args[0]), &args[1..])
    } else {
        (PathBuf::from("."), args)
    }
}

/// The engines, held under their leases, with every host read again.
struct Held {
    rt: tokio::runtime::Runtime,
    conns: Connections,
    leases: Option<drover::onhost::lease::Leases>,
    observed: Observed,
}

impl Held {
    fn take(spec: &Spec, command: &str) -> Result<Held, Failure> {
        let rt = runtime()?;
        let mut conns = rt.block_on(connect_all(spec));
        let stop = tokio_util::sync::CancellationToken::new();
        let holder = Arc::new(Holder::new(command));
        let (leases, observed) = rt.block_on(take_and_observe(&mut conns, &holder, &stop))?;
        let mut held = Held {
            rt,
            conns,
            leases: Some(leases),
            observed,
        };
        held.thaw();
        Ok(held)
    }

    /// A host read under the lease, or why it cannot be used.
    fn host(&self, d: &Desired, host: &str) -> Result<(On, ObservedHost), Failure> {
        let Some(api) = self.conns.engines.get(host) else {
            return Err(match self.conns.unreachable.get(host) {
                Some(reason) => {
                    format!("host `{host}` could not be read: {reason}; nothing was done")
                }
                None => format!("`{host}` is not a host of the Cluster"),
            }
            .into());
        };
        let Some(state) = self.observed.hosts.get(host) else {
            let reason = self
                .observed
                .unreachable
                .get(host)
                .cloned()
                .unwrap_or_default();
            return Err(
                format!("host `{host}` could not be read: {reason}; nothing was done").into(),
            );
        };
        Ok((On::of(api, d), state.clone()))
    }

    /// Apps a drover that stopped left frozen are let go first.
    fn thaw(&mut self) {
        let mut again = false;
        for (host, state) in &self.observed.hosts {
            if let Some(api) = self.conns.engines.get(host) {
                if !self
                    .rt
                    .block_on(snapshot::thaw(api.as_ref(), state))
                    .is_empty()
                {
                    again = true;
                }
            }
        }
        if again {
            self.observed = self
                .rt
                .block_on(drover::docker::hosts::observe_all(&self.conns));
        }
    }

    fn release(mut self) {
        if let Some(l) = self.leases.take() {
            self.rt.block_on(l.release());
        }
    }
}

/// The host a volume's current copy is on: where the manifests place it,
/// once it is there.
fn current_host(held: &Held, d: &Desired, v: &VolumeSpec) -> Result<(On, ObservedHost), Failure> {
    let (on, state) = held.host(d, &v.host)?;
    let here = state.volumes.iter().find(|o| o.name == v.name);
    if !here.is_some_and(drover::plan::may_be_current) {
        let elsewhere = held
            .observed
            .hosts
            .iter()
            .find(|(h, s)| {
                *h != &v.host
                    && s.volumes
                        .iter()
                        .any(|o| o.name == v.name && drover::plan::may_be_current(o))
            })
            .map(|(h, _)| h.clone());
        return Err(match elsewhere {
            Some(h) => format!(
                "volume `{}/{}` is on `{h}` and the manifests place it on `{}`: run `drover reconcile` to move it first",
                v.stack, v.volume, v.host
            ),
            None => format!(
                "volume `{}/{}` does not exist on `{}` yet: run `drover reconcile` first",
                v.stack, v.volume, v.host
            ),
        }
        .into());
    }
    Ok((on, state))
}

/// The Cluster's repository `name`.
fn repository<'a>(spec: &'a Spec, name: &str) -> Result<&'a drover::model::Repository, Failure> {
    spec.repositories.get(name).ok_or_else(|| {
        let known: Vec<String> = spec.repositories.keys().map(|r| format!("`{r}`")).collect();
        if known.is_empty() {
            format!("the Cluster declares no repositories; `{name}` is not one: add it under `repositories:`")
        } else {
            format!("`{name}` is not a repository of the Cluster: its repositories are {}", known.join(", "))
        }
        .into()
    })
}

/// What a push printed.
fn pushed_text(p: &backup::Pushed) -> String {
    format!(
        "{}pushed it to repository `{}` as backup {}: {} in {} files{}, {} added, {}, {}\n",
        if p.created {
            format!("made repository `{}` (restic format); ", p.repository)
        } else {
            String::new()
        },
        p.repository,
        p.short(),
        human_bytes(p.stats.bytes),
        p.stats.files,
        match (p.stats.partial, p.stats.followed) {
            (true, _) => ", only the changed folders read",
            (false, true) => " read as the copy filled the snapshot",
            (false, false) => " read",
        },
        human_bytes(p.stats.added),
        p.stats.way,
        human_duration(p.took)
    )
}

fn copy_options(copy_via: CopyVia) -> CopyOptions {
    CopyOptions::quiet(copy_via.direct())
}

fn held_text(c: &snapshot::Copied, consistency: Consistency) -> String {
    match (c.held, consistency) {
        (Some(d), Consistency::Freeze) => format!("; froze the apps {}", human_duration(d)),
        (Some(d), _) => format!("; stopped the apps {}", human_duration(d)),
        (None, Consistency::None) => "; a live copy (`consistency: none`)".into(),
        (None, _) => "; no app mounts it".into(),
    }
}

pub fn snapshot(
    args: &[String],
    name: Option<String>,
    consistency: Option<Consistency>,
    push: Option<String>,
    copy_via: CopyVia,
) -> Result<ExitCode, Failure> {
    let (dir, rest) = split_dir(args, 1);
    let [target] = rest else {
        return Err(
            "usage: drover volume snapshot [DIR] STACK/VOLUME [--name NAME]"
                .to_string()
                .into(),
        );
    };
    if let Some(n) = &name {
        snapshot::check_name(n)?;
    }
    let spec = load_spec(&dir)?;
    let d = desired::render(&spec);
    let v = wanted(&d, target)?.clone();
    let repository = push.as_deref().map(|r| repository(&spec, r)).transpose()?;
    // The repository is opened, its password checked, while the hosts are
    // read, and before any app is frozen.
    let opening = repository.map(backup::Opening::begin);
    let held = Held::take(&spec, "volume snapshot")?;
    let result = (|| {
        let (on, state) = current_host(&held, &d, &v)?;
        let opened = opening.map(backup::Opening::wait).transpose()?;
        let req = Request {
            name,
            consistency: consistency.unwrap_or(v.consistency),
            revision: None,
            scheduled: false,
            refresh: false,
        };
        let w = Writers::for_volume(&d, &state, &v);
        let taken = held.rt.block_on(snapshot::take(
            &on,
            &state,
            &v,
            &w,
            &req,
            &copy_options(copy_via),
            snapshot::now(),
        ))?;
        print(&format!(
            "took snapshot `{}` of `{}/{}` on `{}`: {} in {} entries, {}{}\n",
            taken.name,
            v.stack,
            v.volume,
            taken.host,
            human_bytes(taken.copied.bytes),
            taken.copied.files,
            human_duration(taken.took),
            held_text(&taken.copied, taken.consistency)
        ));
        if let Some(o) = &opened {
            let pushed = held.rt.block_on(backup::push(
                &on,
                &v,
                (&taken.volume, None),
                o,
                None,
                copy_via.direct(),
            ))?;
            print(&pushed_text(&pushed));
        }
        Ok(ExitCode::SUCCESS)
    })();
    held.release();
    result
}

pub fn backup(args: &[String], to: Option<String>, copy_via: CopyVia) -> Result<ExitCode, Failure> {
    let (dir, rest) = split_dir(args, 1);
    let [target] = rest else {
        return Err("usage: drover volume backup [DIR] STACK/VOLUME [--to REPO]"
            .to_string()
            .into());
    };
    let spec = load_spec(&dir)?;
    let d = desired::render(&spec);
    let v = wanted(&d, target)?.clone();
    let name = match (&to, &v.backup) {
        (Some(r), _) => r.clone(),
        (None, Some(b)) => b.to.clone(),
        (None, None) => {
            return Err(format!(
                "volume `{}/{}` has no `backup:` in the manifests: give the repository with `--to REPO`",
                v.stack, v.volume
            )
            .into())
        }
    };
    let r = repository(&spec, &name)?;
    let opening = backup::Opening::begin(r);
    let held = Held::take(&spec, "volume backup")?;
    let result = (|| {
        let (on, state) = current_host(&held, &d, &v)?;
        let w = Writers::for_volume(&d, &state, &v);
        let (made, o) = held.rt.block_on(backup::backup(
            &on,
            &state,
            &v,
            &w,
            (r, opening.opened()),
            v.consistency,
            None,
            &copy_options(copy_via),
        ))?;
        print(&format!(
            "brought snapshot `{}` of `{}/{}` up to date on `{}`: {}{}\n",
            made.taken.name,
            v.stack,
            v.volume,
            made.taken.host,
            human_duration(made.taken.took),
            held_text(&made.taken.copied, made.taken.consistency)
        ));
        print(&pushed_text(&made.pushed));
        // The schedule's `keep`, when it is that repository's.
        if let Some(b) = v.backup.as_ref().filter(|b| b.to == name) {
            let n = held.rt.block_on(backup::retain(&o, &v, b.keep))?;
            if n > 0 {
                print(&format!("forgot {n} older backups past `keep`\n"));
            }
        }
        Ok(ExitCode::SUCCESS)
    })();
    held.release();
    result
}

pub fn list(args: &[String], output: OutputFormat) -> Result<ExitCode, Failure> {
    // `[DIR] [STACK/VOLUME]`: one argument is the directory if it is one.
    let (dir, filter) = match args {
        [] => (PathBuf::from("."), None),
        [one] if Path::new(one).is_dir() => (PathBuf::from(one), None),
        [one] => (PathBuf::from("."), Some(one.clone())),
        [dir, one] => (PathBuf::from(dir), Some(one.clone())),
        _ => {
            return Err("usage: drover volume snapshots [DIR] [STACK/VOLUME]"
                .to_string()
                .into())
        }
    };
    let filter = filter.as_deref().map(stack_volume).transpose()?;
    let spec = load_spec(&dir)?;
    let observed = observe_spec(&spec)?;
    let mut rows = snapshot::list(
        &observed,
        filter.as_ref().map(|(s, v)| (s.as_str(), v.as_str())),
    );
    // Beside them, the backups in every repository of the Cluster (all
    // opened at once: each derives its key, and waits on its store).
    let mut unreadable_repo = false;
    let rt = runtime()?;
    let listings = rt.block_on(futures_util::future::join_all(
        spec.repositories
            .values()
            .map(|r| backup::list_if_any(r, filter.clone())),
    ));
    for (r, listing) in spec.repositories.values().zip(listings) {
        match listing {
            Ok(list) => rows.extend(backup::listed(&r.name, &list)),
            Err(e) => {
                eprintln!("warning: {e}");
                unreadable_repo = true;
            }
        }
    }
    snapshot::sort(&mut rows);
    match output {
        OutputFormat::Json => print(&format!(
            "{}\n",
            serde_json::to_string_pretty(&rows).unwrap_or_default()
        )),
        OutputFormat::Text => print(&snapshot::table(&rows)),
    }
    if unreadable_repo {
        return Ok(ExitCode::from(1));
    }
    Ok(unreachable_exit(&observed))
}

pub fn restore(
    args: &[String],
    yes: bool,
    dry_run: bool,
    copy_via: CopyVia,
) -> Result<ExitCode, Failure> {
    let (dir, rest) = split_dir(args, 2);
    let [target, name] = rest else {
        return Err(
            "usage: drover volume restore [DIR] STACK/VOLUME SNAPSHOT [--yes]"
                .to_string()
                .into(),
        );
    };
    let from_repo = name.split_once(':');
    match from_repo {
        Some((_, id)) if id != "latest" => drover::data::repository::check_backup_id(id)?,
        Some(_) => {}
        None => snapshot::check_name(name)?,
    }
    let spec = load_spec(&dir)?;
    let d = desired::render(&spec);
    let v = wanted(&d, target)?.clone();
    if let Some((repo_name, id)) = from_repo {
        let r = repository(&spec, repo_name)?;
        let id = (id != "latest").then_some(id);
        return restore_backup(&spec, &d, &v, r, id, yes, dry_run, copy_via);
    }
    if dry_run {
        let observed = observe_spec(&spec)?;
        let Some(state) = observed.hosts.get(&v.host) else {
            return Err(format!("host `{}` could not be read; nothing was done", v.host).into());
        };
        print(&snapshot::restore_preview(state, &v, name)?);
        return Ok(ExitCode::SUCCESS);
    }
    let held = Held::take(&spec, "volume restore")?;
    let result = (|| {
        let (on, state) = current_host(&held, &d, &v)?;
        let w = Writers::for_volume(&d, &state, &v);
        // (A snapshot that is not there is named before anything is asked.)
        snapshot::restore_preview(&state, &v, name)?;
        if !confirm_replace(yes, &v, &format!("snapshot `{name}`"))? {
            return Ok(ExitCode::from(1));
        }
        let done = held.rt.block_on(snapshot::restore(
            &on,
            &state,
            &v,
            &w,
            name,
            &copy_options(copy_via),
        ))?;
        print(&restored_text(&v, name, &done));
        Ok(ExitCode::SUCCESS)
    })();
    held.release();
    result
}

/// `drover volume restore STACK/VOLUME REPO:ID`: the backup is brought to
/// the volume's host as a snapshot, then restored like any snapshot.
#[allow(clippy::too_many_arguments)]
fn restore_backup(
    spec: &Spec,
    d: &Desired,
    v: &VolumeSpec,
    r: &drover::model::Repository,
    id: Option<&str>,
    yes: bool,
    dry_run: bool,
    copy_via: CopyVia,
) -> Result<ExitCode, Failure> {
    let rt = runtime()?;
    let (o, b) = rt.block_on(backup::find(r, &v.stack, &v.volume, id))?;
    let what = format!(
        "backup `{}:{}` (taken {} on `{}`)",
        r.name,
        b.short(),
        b.taken,
        b.host
    );
    if dry_run {
        print(&format!(
            "would bring {what} to `{}` as snapshot `{}-{}`, then restore `{}/{}` from it: the apps that mount it are stopped and started again, and its content is kept first as a snapshot `before-restore-<time>`\n",
            v.host, r.name, b.short(), v.stack, v.volume
        ));
        return Ok(ExitCode::SUCCESS);
    }
    drop(rt);
    let held = Held::take(spec, "volume restore")?;
    let result = (|| {
        let (on, state) = current_host(&held, d, v)?;
        if !confirm_replace(yes, v, &what)? {
            return Ok(ExitCode::from(1));
        }
        let pulled = std::time::Instant::now();
        let name = held.rt.block_on(backup::pull_snapshot(
            &on,
            &state,
            v,
            &o,
            &b,
            copy_via.direct(),
        ))?;
        print(&format!(
            "brought {what} to `{}` as snapshot `{name}`, checked against the backup, {}\n",
            v.host,
            human_duration(pulled.elapsed())
        ));
        let state = held
            .rt
            .block_on(on.api.observe())
            .map_err(|e| format!("host `{}` could not be read again: {e}", v.host))?;
        let w = Writers::for_volume(d, &state, v);
        let done = held.rt.block_on(snapshot::restore(
            &on,
            &state,
            v,
            &w,
            &name,
            &copy_options(copy_via),
        ))?;
        print(&restored_text(v, &name, &done));
        Ok(ExitCode::SUCCESS)
    })();
    held.release();
    result
}

/// How old a backup taken at `unix` is, for people.
fn age(unix: i64) -> String {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64);
    human_duration(Duration::from_secs(now.saturating_sub(unix).max(0) as u64))
}

pub fn recover(
    args: &[String],
    from: &str,
    yes: bool,
    dry_run: bool,
    copy_via: CopyVia,
) -> Result<ExitCode, Failure> {
    let (dir, rest) = split_dir(args, 1);
    let [target] = rest else {
        return Err(
            "usage: drover volume recover [DIR] STACK/VOLUME --from REPO[:ID]"
                .to_string()
                .into(),
        );
    };
    let (repo_name, id) = match from.split_once(':') {
        Some((r, "latest")) => (r, None),
        Some((r, id)) => {
            drover::data::repository::check_backup_id(id)?;
            (r, Some(id))
        }
        None => (from, None),
    };
    let spec = load_spec(&dir)?;
    let d = desired::render(&spec);
    let v = wanted(&d, target)?.clone();
    let r = repository(&spec, repo_name)?;
    let rt = runtime()?;
    let (o, b) = rt.block_on(backup::find(r, &v.stack, &v.volume, id))?;
    drop(rt);
    let what = format!(
        "backup `{}:{}`, taken {} on `{}` ({} old){}",
        r.name,
        b.short(),
        b.taken,
        b.host,
        age(b.unix),
        b.bytes.map_or(String::new(), |n| format!(
            ", {} in {} files",
            human_bytes(n),
            b.files.unwrap_or(0)
        ))
    );
    let held = Held::take(&spec, "volume recover")?;
    let result = (|| {
        let (epoch, lost) = backup::recovery_check(&held.observed, &v)?;
        let lost_text = if lost.is_empty() {
            String::new()
        } else {
            format!(
                "; {} cannot be read: if it comes back, its copy is kept as stale and never used or started",
                lost.iter().map(|h| format!("`{h}`")).collect::<Vec<_>>().join(", ")
            )
        };
        let plan = format!(
            "recover `{}/{}` on `{}` from {what}, as its current copy (epoch {epoch}){lost_text}",
            v.stack, v.volume, v.host
        );
        if dry_run {
            print(&format!("would {plan}\n"));
            return Ok(ExitCode::SUCCESS);
        }
        let question = format!("{}{}", plan[..1].to_uppercase(), &plan[1..]);
        let refusal = format!("{question}: this needs confirmation: pass `--yes`");
        if !confirm(yes, &question, &refusal)? {
            eprintln!("nothing was changed");
            return Ok(ExitCode::from(1));
        }
        let (on, _) = held.host(&d, &v.host)?;
        let done = held.rt.block_on(backup::recover(
            &on,
            &held.observed,
            &v,
            &o,
            &b,
            copy_via.direct(),
        ))?;
        print(&format!(
            "recovered `{}/{}` on `{}` from {what}: {} in {} files, checked against the backup, {}, {}; `drover reconcile` starts its apps\n",
            v.stack,
            v.volume,
            v.host,
            human_bytes(done.pulled.stats.bytes),
            done.pulled.stats.files,
            done.pulled.stats.way,
            human_duration(done.pulled.took)
        ));
        Ok(ExitCode::SUCCESS)
    })();
    held.release();
    result
}

/// Asks before the content of `v` is replaced with `with`; says so when
/// nothing was changed.
fn confirm_replace(yes: bool, v: &VolumeSpec, with: &str) -> Result<bool, Failure> {
    let question = format!(
        "Replace the content of `{}/{}` on `{}` with {with}",
        v.stack, v.volume, v.host
    );
    let refusal = format!("{question}: this needs confirmation: pass `--yes`");
    let ok = confirm(yes, &question, &refusal)?;
    if !ok {
        eprintln!("nothing was changed");
    }
    Ok(ok)
}

fn restored_text(v: &VolumeSpec, name: &str, done: &snapshot::Restored) -> String {
    format!(
        "restored `{}/{}` on `{}` from snapshot `{name}` ({} in {} entries); its content before is snapshot `{}`; the apps were stopped {}{}\n",
        v.stack,
        v.volume,
        v.host,
        human_bytes(done.copied.bytes),
        done.copied.files,
        done.before,
        human_duration(done.stopped),
        if done.started.is_empty() {
            String::new()
        } else {
            format!(" and started again: {}", done.started.join(", "))
        }
    )
}

pub fn clone(
    args: &[String],
    host: Option<String>,
    copy_via: CopyVia,
) -> Result<ExitCode, Failure> {
    let (dir, rest) = split_dir(args, 2);
    let [source, target] = rest else {
        return Err("usage: drover volume clone [DIR] STACK/VOLUME[@SNAPSHOT] NEWSTACK/NEWVOLUME [--host HOST]"
            .to_string()
            .into());
    };
    let (source, snap) = match source.split_once('@') {
        Some((s, n)) => {
            snapshot::check_name(n)?;
            (s.to_string(), Some(n.to_string()))
        }
        None => (source.clone(), None),
    };
    let spec = load_spec(&dir)?;
    let d = desired::render(&spec);
    let from = wanted(&d, &source)?.clone();
    let (new_stack, new_volume) = stack_volume(target)?;
    // The new volume as the manifests make it, or (not in them) as a
    // volume of that stack on `--host`.
    let mut to = match d.volume(&new_stack, &new_volume) {
        Some(v) => v.clone(),
        None => {
            let Some(h) = &host else {
                return Err(format!(
                    "stack `{new_stack}` has no volume `{new_volume}` in the manifests: add it, or give `--host`"
                )
                .into());
            };
            drover::desired::volume_spec(&new_stack, &new_volume, h)
        }
    };
    if let Some(h) = &host {
        if !spec.hosts.contains_key(h) {
            return Err(format!("`{h}` is not a host of the Cluster").into());
        }
        to.host = h.clone();
    }
    if to.name == from.name {
        return Err("a volume cannot be cloned into itself".to_string().into());
    }
    let held = Held::take(&spec, "volume clone")?;
    let result = (|| {
        let (src, src_state) = current_host(&held, &d, &from)?;
        let (dst, dst_state) = held.host(&d, &to.host)?;
        let w = Writers::for_volume(&d, &src_state, &from);
        let source = CloneSource {
            on: src,
            state: &src_state,
            volume: &from,
            snapshot: snap.clone(),
            writers: w,
            consistency: from.consistency,
        };
        let copied = held.rt.block_on(snapshot::clone(
            &source,
            &dst,
            &dst_state,
            &to,
            &copy_options(copy_via),
        ))?;
        print(&format!(
            "cloned `{}/{}{}` into `{}/{}` on `{}`: {} in {} entries{}\n",
            from.stack,
            from.volume,
            snap.as_ref().map_or(String::new(), |n| format!("@{n}")),
            to.stack,
            to.volume,
            to.host,
            human_bytes(copied.bytes),
            copied.files,
            if snap.is_some() {
                String::new()
            } else {
                held_text(&copied, from.consistency)
            }
        ));
        Ok(ExitCode::SUCCESS)
    })();
    held.release();
    result
}
