//! `drover volume ls`, `rm` and `adopt`; the snapshot commands are in
//! `snapshots.rs`.

use super::*;

#[derive(Subcommand)]
pub enum VolumeCommand {
    /// Managed volumes on every host, with orphaned and retained copies marked.
    Ls {
        #[arg(default_value = ".")]
        dir: PathBuf,
    },
    /// Delete one managed volume and its data: `drover volume rm [DIR] --host HOST NAME`.
    Rm {
        /// `[DIR] NAME`: the manifest directory (default `.`) and the volume's
        /// Docker name (`<stack>-<volume>`).
        #[arg(num_args = 1..=2, required = true, value_names = ["DIR", "NAME"])]
        args: Vec<String>,
        /// The host the volume is on.
        #[arg(long)]
        host: String,
        /// Do not ask.
        #[arg(long)]
        yes: bool,
    },
    /// Record one copy of a volume as the current one and every other copy
    /// as retained (nothing is copied or deleted): `drover volume adopt
    /// [DIR] --host HOST NAME`. For a volume whose copy records were lost.
    Adopt {
        /// `[DIR] NAME`: the manifest directory (default `.`) and the volume's
        /// Docker name (`<stack>-<volume>`).
        #[arg(num_args = 1..=2, required = true, value_names = ["DIR", "NAME"])]
        args: Vec<String>,
        /// The host whose copy holds the data to keep.
        #[arg(long)]
        host: String,
    },
    /// Take a consistent snapshot of a volume now, on its host:
    /// `drover volume snapshot [DIR] STACK/VOLUME [--name NAME]`.
    Snapshot {
        /// `[DIR] STACK/VOLUME`.
        #[arg(num_args = 1..=2, required = true, value_names = ["DIR", "STACK/VOLUME"])]
        args: Vec<String>,
        /// The snapshot's name (default: the UTC time, like `20261201t221500z`).
        #[arg(long)]
        name: Option<String>,
        /// How the apps that mount it are held for the last pass (default:
        /// the volume's `consistency`, else `freeze`).
        #[arg(long, value_parser = consistency_arg)]
        consistency: Option<Consistency>,
        /// Also store it in this repository of the Cluster (a backup).
        #[arg(long, value_name = "REPO")]
        push: Option<String>,
        #[arg(long, value_enum, default_value_t = CopyVia::Auto)]
        copy_via: CopyVia,
    },
    /// Back a volume up now as its schedule does: its snapshot
    /// `last-backup` brought up to date and pushed, then `keep` applied:
    /// `drover volume backup [DIR] STACK/VOLUME [--to REPO]`.
    Backup {
        /// `[DIR] STACK/VOLUME`.
        #[arg(num_args = 1..=2, required = true, value_names = ["DIR", "STACK/VOLUME"])]
        args: Vec<String>,
        /// The repository (default: the volume's `backup.to`).
        #[arg(long, value_name = "REPO")]
        to: Option<String>,
        #[arg(long, value_enum, default_value_t = CopyVia::Auto)]
        copy_via: CopyVia,
    },
    /// Every snapshot of every volume, or of one: `drover volume snapshots [DIR] [STACK/VOLUME]`.
    Snapshots {
        /// `[DIR] [STACK/VOLUME]`.
        #[arg(num_args = 0..=2, value_names = ["DIR", "STACK/VOLUME"])]
        args: Vec<String>,
        #[arg(long, value_enum, default_value_t = OutputFormat::Text)]
        output: OutputFormat,
    },
    /// Replace a volume's content with one of its snapshots; the content
    /// replaced is kept as snapshot `before-restore-<time>`:
    /// `drover volume restore [DIR] STACK/VOLUME SNAPSHOT`.
    Restore {
        /// `[DIR] STACK/VOLUME SNAPSHOT`.
        #[arg(num_args = 2..=3, required = true, value_names = ["DIR", "STACK/VOLUME", "SNAPSHOT"])]
        args: Vec<String>,
        /// Do not ask.
        #[arg(long)]
        yes: bool,
        /// Show what would happen; change nothing.
        #[arg(long)]
        dry_run: bool,
        #[arg(long, value_enum, default_value_t = CopyVia::Auto)]
        copy_via: CopyVia,
    },
    /// The volume's host is gone: make the volume on the host the manifests
    /// now place it on, from a backup, as the current copy:
    /// `drover volume recover [DIR] STACK/VOLUME --from REPO[:ID]`.
    Recover {
        /// `[DIR] STACK/VOLUME`.
        #[arg(num_args = 1..=2, required = true, value_names = ["DIR", "STACK/VOLUME"])]
        args: Vec<String>,
        /// The repository, and the backup's ID (default: the newest backup
        /// of the volume).
        #[arg(long, value_name = "REPO[:ID]")]
        from: String,
        /// Do not ask.
        #[arg(long)]
        yes: bool,
        /// Show which backup and how old it is; change nothing.
        #[arg(long)]
        dry_run: bool,
        #[arg(long, value_enum, default_value_t = CopyVia::Auto)]
        copy_via: CopyVia,
    },
    /// Make a volume that does not exist yet from another one (as it is now,
    /// or one of its snapshots):
    /// `drover volume clone [DIR] STACK/VOLUME[@SNAPSHOT] NEWSTACK/NEWVOLUME`.
    Clone {
        /// `[DIR] STACK/VOLUME[@SNAPSHOT] NEWSTACK/NEWVOLUME`.
        #[arg(num_args = 2..=3, required = true, value_names = ["DIR", "SOURCE", "TARGET"])]
        args: Vec<String>,
        /// The host to make it on (default: where the manifests place it).
        #[arg(long)]
        host: Option<String>,
        #[arg(long, value_enum, default_value_t = CopyVia::Auto)]
        copy_via: CopyVia,
    },
}

use drover::data::snapshot::Consistency;

fn consistency_arg(s: &str) -> Result<Consistency, String> {
    Consistency::parse(s).ok_or_else(|| format!("`{s}` is not one of `freeze`, `stop`, `none`"))
}

/// `[DIR] NAME` of a volume command.
fn dir_and_name(args: &[String], command: &str) -> Result<(PathBuf, String), Failure> {
    match args {
        [name] => Ok((PathBuf::from("."), name.clone())),
        [dir, name] => Ok((PathBuf::from(dir), name.clone())),
        _ => Err(format!("usage: drover volume {command} [DIR] --host HOST NAME").into()),
    }
}

pub fn run(command: VolumeCommand) -> Result<ExitCode, Failure> {
    match command {
        VolumeCommand::Snapshot {
            args,
            name,
            consistency,
            push,
            copy_via,
        } => super::snapshots::snapshot(&args, name, consistency, push, copy_via),
        VolumeCommand::Backup { args, to, copy_via } => {
            super::snapshots::backup(&args, to, copy_via)
        }
        VolumeCommand::Snapshots { args, output } => super::snapshots::list(&args, output),
        VolumeCommand::Restore {
            args,
            yes,
            dry_run,
            copy_via,
        } => super::snapshots::restore(&args, yes, dry_run, copy_via),
        VolumeCommand::Clone {
            args,
            host,
            copy_via,
        } => super::snapshots::clone(&args, host, copy_via),
        VolumeCommand::Recover {
            args,
            from,
            yes,
            dry_run,
            copy_via,
        } => super::snapshots::recover(&args, &from, yes, dry_run, copy_via),
        VolumeCommand::Ls { dir } => {
            let spec = load_spec(&dir)?;
            let observed = observe_spec(&spec)?;
            print(&volume_table(&desired::render(&spec), &observed));
            Ok(unreachable_exit(&observed))
        }
        VolumeCommand::Adopt { args, host } => {
            let (dir, name) = dir_and_name(&args, "adopt")?;
            let spec = load_spec(&dir)?;
            let rt = runtime()?;
            let mut conns = rt.block_on(connect_all(&spec));
            let stop = tokio_util::sync::CancellationToken::new();
            let holder = Arc::new(Holder::new("volume adopt"));
            let (leases, observed) = rt.block_on(take_and_observe(&mut conns, &holder, &stop))?;
            let done = rt.block_on(drover::onhost::records::adopt(
                &conns.engines,
                &observed,
                &name,
                &host,
            ));
            rt.block_on(leases.release());
            for line in done? {
                print(&format!("{line}\n"));
            }
            Ok(ExitCode::SUCCESS)
        }
        VolumeCommand::Rm { args, host, yes } => {
            let (dir, name) = dir_and_name(&args, "rm")?;
            let spec = load_spec(&dir)?;
            let d = desired::render(&spec);
            let rt = runtime()?;
            let conns = rt.block_on(connect_all(&spec));
            let Some(api) = conns.engines.get(&host) else {
                return Err(match conns.unreachable.get(&host) {
                    Some(reason) => format!("host `{host}` could not be read: {reason}"),
                    None => format!("`{host}` is not a host of the Cluster"),
                }
                .into());
            };
            // Read and deleted under the host's lease: no move or other
            // drover works on it meanwhile.
            let lease = rt
                .block_on(drover::onhost::lease::take(
                    api.as_ref(),
                    &Holder::new("volume rm"),
                ))
                .map_err(|e| e.to_string())?;
            let result = (|| -> Result<ExitCode, Failure> {
                let state = rt
                    .block_on(api.observe())
                    .map_err(|e| format!("host `{host}` could not be read: {e}"))?;
                let removable = rt.block_on(drover::data::remove::check(
                    &d, &conns, &host, &name, &state,
                ))?;
                let question = format!("Delete volume `{name}` on `{host}` and all its data");
                let refusal = "deleting volume data needs confirmation: pass `--yes`";
                if !confirm(yes, &question, refusal)? {
                    eprintln!("nothing was deleted");
                    return Ok(ExitCode::from(1));
                }
                rt.block_on(drover::data::remove::remove(api.as_ref(), removable))?;
                print(&format!("deleted volume `{name}` on `{host}`\n"));
                Ok(ExitCode::SUCCESS)
            })();
            rt.block_on(drover::onhost::lease::release(api.as_ref(), &lease));
            result
        }
    }
}
