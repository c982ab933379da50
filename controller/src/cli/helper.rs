//! `drover helper`: what runs inside a helper container during a move.

use super::*;

#[derive(Subcommand)]
pub enum HelperCommand {
    /// Lists the volume, one JSON entry per line.
    Scan {
        /// Hash every regular file (reusing hashes of unchanged files).
        #[arg(long)]
        hash: bool,
        /// No app writes the volume now, nor since the last scan with
        /// `--stopped`: that scan's hashes hold for unchanged files.
        #[arg(long)]
        stopped: bool,
        /// Only the paths read from stdin (one per line, in scan order), not the whole volume.
        #[arg(long)]
        only: bool,
        /// The volume at `/source` (a copy on one host), not this one.
        #[arg(long)]
        source: bool,
    },
    /// Streams the paths read from stdin to stdout.
    Pack,
    /// Applies a stream read from stdin.
    Unpack,
    /// Deletes the paths read from stdin.
    Delete,
    /// Copies the paths read from stdin from the volume at `/source` (on
    /// the same host) into this one.
    CopyIn,
    /// Streams the paths read from stdin (after a token line) to a receiving helper.
    Send {
        #[arg(long)]
        to: String,
        /// At most this many bytes per second (for tests).
        #[arg(long)]
        rate: Option<u64>,
    },
    /// Waits for a sending helper (after reading the token from stdin) and unpacks its stream.
    Receive {
        #[arg(long)]
        port: u16,
    },
    /// Backs the volume up into a repository, or restores it from one,
    /// reaching the repository through drover over stdin and stdout.
    Repo,
    /// Waits, so that commands can be run in the helper.
    Idle {
        #[arg(long, default_value_t = 21600)]
        seconds: u64,
    },
}

pub fn run(command: HelperCommand) -> ExitCode {
    use drover::helper::{self, ROOT};
    let root = Path::new(ROOT);
    helper::widen_pipes();
    match command {
        HelperCommand::Repo => {
            return exit(helper::repo::run(std::io::stdin(), std::io::stdout()));
        }
        // The container's main process: it takes no record over (only
        // the commands that use one do, before they read it).
        HelperCommand::Idle { seconds } => {
            helper::idle(Duration::from_secs(seconds));
            return exit(Ok(()));
        }
        _ => {}
    }
    let (own, source_state) = helper::records();
    let state = own.as_path();
    let stdin = std::io::stdin().lock();
    let mut stdout = std::io::stdout().lock();
    let result = match command {
        HelperCommand::Scan {
            hash,
            stopped,
            only,
            source,
        } => {
            let (root, state) = match source {
                true => (Path::new(helper::SOURCE), source_state.as_path()),
                false => (root, state),
            };
            match only {
                false => helper::scan_out(root, state, hash, stopped, &mut stdout),
                true => helper::scan_only(root, state, hash, stopped, stdin, &mut stdout),
            }
        }
        HelperCommand::Pack => helper::pack(root, state, stdin, &mut stdout),
        HelperCommand::Unpack => helper::unpack(root, state, stdin, &mut stdout),
        HelperCommand::Delete => helper::delete(root, stdin),
        HelperCommand::CopyIn => {
            let source = (Path::new(helper::SOURCE), source_state.as_path());
            let log = Some(Path::new(helper::COPIED));
            helper::copy_in(source, (root, state), log, stdin, &mut stdout)
        }
        HelperCommand::Send { to, rate } => {
            helper::send(root, state, &to, rate, stdin, &mut stdout)
        }
        HelperCommand::Receive { port } => helper::receive(root, state, port, stdin, &mut stdout),
        HelperCommand::Repo | HelperCommand::Idle { .. } => unreachable!("run above"),
    };
    exit(result)
}

fn exit(result: std::io::Result<()>) -> ExitCode {
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("drover helper: {e}");
            ExitCode::from(1)
        }
    }
}
