//! `drover controller`: the loop, until a signal stops it.

use super::*;

/// `drover controller`'s arguments.
#[derive(Args)]
pub struct ControllerArgs {
    #[arg(default_value = ".")]
    pub dir: PathBuf,
    /// A full pass at least this often, even when nothing was seen to change.
    #[arg(long, default_value = "60s", value_parser = duration_arg, value_name = "DURATION")]
    pub resync: Duration,
    /// Serve `/healthz`, `/livez` and Prometheus `/metrics` here (e.g. `0.0.0.0:9090`).
    #[arg(long, value_name = "ADDR")]
    pub listen: Option<std::net::SocketAddr>,
    /// A pass starts once changes have been quiet this long (at most 10 times as long after the first).
    #[arg(long, default_value = "300ms", value_parser = duration_arg, value_name = "DURATION")]
    pub debounce: Duration,
    /// At most this many restorations of one app (started or made again
    /// after being stopped or removed out of band)…
    #[arg(long, default_value_t = 5, value_name = "N")]
    pub heal_limit: usize,
    /// …within this window; past it the app is left as it is until the window moves.
    #[arg(long, default_value = "10m", value_parser = duration_arg, value_name = "DURATION")]
    pub heal_window: Duration,
    /// Apply a directory that holds no app, removing every managed app
    /// from the hosts (refused without it, however the directory got so).
    #[arg(long)]
    pub allow_empty: bool,
    #[command(flatten)]
    pub apply: ApplyArgs,
}

pub fn run(args: ControllerArgs) -> Result<ExitCode, Failure> {
    let ControllerArgs {
        dir,
        resync,
        listen,
        debounce,
        heal_limit,
        heal_window,
        allow_empty,
        apply,
    } = args;
    let opts = drover::controller::Options {
        dir,
        resync,
        listen,
        debounce: drover::controller::schedule::Debounce {
            quiet: debounce,
            max: debounce * 10,
        },
        apply: apply.options(),
        heal_limit,
        heal_window,
        allow_empty,
    };
    let rt = runtime()?;
    rt.block_on(async {
        let stop = tokio_util::sync::CancellationToken::new();
        stop_on_signals(stop.clone())?;
        drover::controller::run(opts, stop).await?;
        Ok(ExitCode::SUCCESS)
    })
}
