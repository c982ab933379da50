//! A repository's store, as a rustic backend: made on drover's machine, or
//! in a helper on a volume's host that can reach the store itself (the
//! direct path of a backup or restore, `docs/backups.md`).
//!
//! drover turns a repository's `url` and `env` into a [`Store`]; it travels
//! to a helper in its job, on stdin, never on a command line.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use rustic_core::{RusticResult, WriteBackend};
use serde::{Deserialize, Serialize};

/// How to reach a repository's files.
#[derive(Clone, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Store {
    /// A directory (on the machine that opens it).
    Local { path: String },
    /// An S3-compatible store, with OpenDAL's options (credentials among
    /// them).
    S3 { options: BTreeMap<String, String> },
    /// A restic REST server; the URL may carry credentials.
    Rest { url: String },
}

impl std::fmt::Debug for Store {
    /// Never the credentials.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Store::Local { path } => write!(f, "Local({path})"),
            Store::S3 { options } => write!(
                f,
                "S3({})",
                options.get("endpoint").map_or("", String::as_str)
            ),
            Store::Rest { .. } => write!(f, "Rest"),
        }
    }
}

impl Store {
    /// The backend that reads and writes the store's files.
    pub fn backend(&self) -> RusticResult<Arc<dyn WriteBackend>> {
        Ok(match self {
            Store::Local { path } => Arc::new(rustic_backend::local::LocalBackend::new(
                path,
                BTreeMap::<String, String>::new(),
            )?),
            Store::S3 { options } => {
                Arc::new(rustic_backend::OpenDALBackend::new("s3", options.clone())?)
            }
            Store::Rest { url } => Arc::new(rustic_backend::RestBackend::new(
                url,
                BTreeMap::<String, String>::new(),
            )?),
        })
    }

    /// The host and port a network store answers on; none for a directory.
    pub fn address(&self) -> Option<(String, u16)> {
        let url = match self {
            Store::Local { .. } => return None,
            Store::S3 { options } => options.get("endpoint")?.as_str(),
            Store::Rest { url } => url.as_str(),
        };
        address(url)
    }

    /// Whether a TCP connection to the store opens within `within`: a host
    /// that cannot reach it is told at once, not after a backend's retries;
    /// if not, why (the address and what the last try met). A try that
    /// times out is made again while time is left (a busy host or network
    /// can lose the first packets); a refusal or an address that does not
    /// resolve is final.
    pub fn reachable(&self, within: Duration) -> Result<(), String> {
        use std::net::ToSocketAddrs;
        let Some((host, port)) = self.address() else {
            return Err("the store has no network address".into());
        };
        let addrs: Vec<_> = (host.as_str(), port)
            .to_socket_addrs()
            .map_err(|e| format!("`{host}` does not resolve: {e}"))?
            .collect();
        let deadline = std::time::Instant::now() + within;
        let mut last = format!("`{host}` has no address");
        loop {
            let mut timed_out = false;
            for a in &addrs {
                let left = deadline.saturating_duration_since(std::time::Instant::now());
                let each = left
                    .min(Duration::from_secs(3))
                    .max(Duration::from_millis(1));
                match std::net::TcpStream::connect_timeout(a, each) {
                    Ok(_) => return Ok(()),
                    Err(e) => {
                        timed_out |= e.kind() == std::io::ErrorKind::TimedOut;
                        last = format!("{a}: {e}");
                    }
                }
            }
            if !timed_out || std::time::Instant::now() >= deadline {
                return Err(last);
            }
        }
    }
}

/// `http(s)://[user:pass@]HOST[:PORT]/…` → host and port.
fn address(url: &str) -> Option<(String, u16)> {
    let (scheme, rest) = url.split_once("://")?;
    let authority = rest.split('/').next()?;
    let authority = authority.rsplit_once('@').map_or(authority, |(_, a)| a);
    let default = if scheme == "https" { 443 } else { 80 };
    if let Some(v6) = authority.strip_prefix('[') {
        let (host, tail) = v6.split_once(']')?;
        let port = tail
            .strip_prefix(':')
            .map_or(Some(default), |p| p.parse().ok())?;
        return Some((host.to_string(), port));
    }
    match authority.rsplit_once(':') {
        Some((host, port)) => Some((host.to_string(), port.parse().ok()?)),
        None => Some((authority.to_string(), default)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_come_from_endpoints_and_urls() {
        let a = |u: &str| address(u);
        assert_eq!(a("http://10.0.0.1:9000"), Some(("10.0.0.1".into(), 9000)));
        assert_eq!(
            a("https://s3.example.com"),
            Some(("s3.example.com".into(), 443))
        );
        assert_eq!(a("http://u:p@rest:8000/x/"), Some(("rest".into(), 8000)));
        assert_eq!(a("http://[::1]:81/"), Some(("::1".into(), 81)));
        assert_eq!(a("nowhere"), None);
        let local = Store::Local { path: "/x".into() };
        assert_eq!(local.address(), None);
        assert!(local.reachable(Duration::from_millis(10)).is_err());
    }

    #[test]
    fn a_store_that_listens_is_reached_and_one_that_refuses_is_given_up_at_once() {
        let listening = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let at = |port: u16| Store::Rest {
            url: format!("http://127.0.0.1:{port}/"),
        };
        let open = at(listening.local_addr().unwrap().port());
        assert_eq!(open.reachable(Duration::from_secs(10)), Ok(()));
        let closed = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            l.local_addr().unwrap().port()
        };
        let started = std::time::Instant::now();
        let why = at(closed).reachable(Duration::from_secs(10)).unwrap_err();
        assert!(started.elapsed() < Duration::from_secs(5), "{why}");
        assert!(why.contains(&format!("127.0.0.1:{closed}")), "{why}");
    }

    #[test]
    fn credentials_are_never_shown() {
        let s = Store::S3 {
            options: BTreeMap::from([
                ("endpoint".into(), "http://h:1".into()),
                ("secret_access_key".into(), "hunter2".into()),
            ]),
        };
        assert!(!format!("{s:?}").contains("hunter2"));
        let r = Store::Rest {
            url: "http://u:hunter2@h/".into(),
        };
        assert!(!format!("{r:?}").contains("hunter2"));
    }
}
