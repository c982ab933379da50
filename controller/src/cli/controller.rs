//! `drover controller`: the loop, until a signal stops it.

use super::*;

/// `drover controller`'s arguments.
#[derive(Args)]
pub struct ControllerArgs {
    /// The manifest directory, kept up to date by something else (default `.`).
    #[arg(conflicts_with = "git")]
    pub dir: Option<PathBuf>,
    /// Follow this Git remote instead: clone it, fetch it, apply each new
    /// commit of `--branch` (HTTPS credentials from `DROVER_GIT_TOKEN`, or
    /// `DROVER_GIT_USERNAME` and `DROVER_GIT_PASSWORD`).
    #[arg(long, value_name = "URL")]
    pub git: Option<String>,
    /// The branch to follow.
    #[arg(long, default_value = "main", requires = "git", value_name = "BRANCH")]
    pub branch: String,
    /// The manifest directory inside the repository.
    #[arg(long, requires = "git", value_name = "PATH")]
    pub path: Option<PathBuf>,
    /// Fetch at least this often (a webhook fetches at once).
    #[arg(long, default_value = "1m", value_parser = duration_arg, requires = "git", value_name = "DURATION")]
    pub interval: Duration,
    /// drover's own folder for the clone and the trees it reads (default:
    /// under `$STATE_DIRECTORY`, `$XDG_STATE_HOME/drover` or `~/.local/state/drover`).
    #[arg(long, requires = "git", value_name = "DIR")]
    pub workdir: Option<PathBuf>,
    /// SSH remotes: the private key to use…
    #[arg(long, requires = "git", value_name = "FILE")]
    pub ssh_key: Option<PathBuf>,
    /// …and the known-hosts file the server's key must be in.
    #[arg(long, requires = "git", value_name = "FILE")]
    pub known_hosts: Option<PathBuf>,
    /// Accept signed webhook deliveries at `POST /hooks/git` (with
    /// `--listen`), checked against the secret in this environment variable.
    #[arg(long, requires = "git", value_name = "VAR")]
    pub webhook_secret_env: Option<String>,
    /// POST a JSON object per event to this URL (repeatable).
    #[arg(long, value_name = "URL")]
    pub notify: Vec<String>,
    /// How notifications are written: `json` or `slack` (`{"text": …}`).
    #[arg(long, default_value = "json", value_parser = ["json", "slack"], value_name = "FORMAT")]
    pub notify_format: String,
    /// A full pass at least this often, even when nothing was seen to change.
    #[arg(long, default_value = "60s", value_parser = duration_arg, value_name = "DURATION")]
    pub resync: Duration,
    /// Serve the dashboard at `/`, `/healthz`, `/livez` and Prometheus
    /// `/metrics` here (e.g. `127.0.0.1:9090`).
    #[arg(long, value_name = "ADDR")]
    pub listen: Option<std::net::SocketAddr>,
    /// The dashboard asks for the `user:password` in this environment
    /// variable (HTTP basic authentication; put TLS in front of it beyond
    /// a trusted network).
    #[arg(long, requires = "listen", value_name = "VAR")]
    pub dashboard_auth_env: Option<String>,
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
        git,
        branch,
        path,
        interval,
        workdir,
        ssh_key,
        known_hosts,
        webhook_secret_env,
        notify,
        notify_format,
        resync,
        listen,
        dashboard_auth_env,
        debounce,
        heal_limit,
        heal_window,
        allow_empty,
        apply,
    } = args;
    let dashboard_auth = match dashboard_auth_env {
        Some(var) => match std::env::var(&var) {
            Ok(v)
                if v.split_once(':')
                    .is_some_and(|(u, p)| !u.is_empty() && !p.is_empty()) =>
            {
                Some(v)
            }
            _ => {
                return Err(Failure::Message(format!(
                    "--dashboard-auth-env: `{var}` must hold `user:password`"
                )))
            }
        },
        None => None,
    };
    let git = match git {
        Some(url) => Some(git_source(
            url,
            branch,
            path,
            interval,
            workdir,
            ssh_key,
            known_hosts,
            webhook_secret_env,
        )?),
        None => None,
    };
    let opts = drover::controller::Options {
        dir: dir.unwrap_or_else(|| PathBuf::from(".")),
        git,
        notify,
        notify_format: if notify_format == "slack" {
            drover::controller::notify::Format::Slack
        } else {
            drover::controller::notify::Format::Json
        },
        resync,
        listen,
        dashboard_auth,
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

#[allow(clippy::too_many_arguments)]
fn git_source(
    url: String,
    branch: String,
    path: Option<PathBuf>,
    interval: Duration,
    workdir: Option<PathBuf>,
    ssh_key: Option<PathBuf>,
    known_hosts: Option<PathBuf>,
    webhook_secret_env: Option<String>,
) -> Result<drover::controller::follow::GitSource, Failure> {
    let path = path.unwrap_or_default();
    let inside = path
        .components()
        .all(|c| matches!(c, std::path::Component::Normal(_)));
    if !inside {
        return Err(Failure::Message(format!(
            "--path `{}` must be a folder inside the repository (relative, without `..`)",
            path.display()
        )));
    }
    let webhook_secret = match webhook_secret_env {
        Some(var) => match std::env::var(&var) {
            Ok(v) if !v.is_empty() => Some(v),
            _ => {
                return Err(Failure::Message(format!(
                    "--webhook-secret-env names `{var}`, which is not set"
                )))
            }
        },
        None => None,
    };
    let workdir = match workdir {
        Some(w) => w,
        None => {
            let var = |n: &str| {
                std::env::var_os(n)
                    .filter(|v| !v.is_empty())
                    .map(PathBuf::from)
            };
            let state = var("STATE_DIRECTORY")
                .or_else(|| var("XDG_STATE_HOME").map(|d| d.join("drover")))
                .or_else(|| var("HOME").map(|h| h.join(".local/state/drover")))
                .unwrap_or_else(|| PathBuf::from("/var/lib/drover"));
            // One folder per remote and branch.
            let key = blake3::hash(format!("{url}\n{branch}").as_bytes()).to_hex();
            state.join("git").join(&key.as_str()[..16])
        }
    };
    Ok(drover::controller::follow::GitSource {
        remote: drover::git::Remote {
            url,
            branch,
            path,
            workdir,
            auth: drover::git::Auth::from_env(ssh_key, known_hosts),
        },
        interval: interval.max(Duration::from_secs(1)),
        webhook_secret,
    })
}
