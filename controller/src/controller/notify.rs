//! `--notify URL`: one JSON object per event, POSTed to each URL by a task
//! of its own, retried with backoff. A pass never waits for a delivery: an
//! event is queued, and dropped (and counted) when too many already wait.
//! A notification URL often carries a token (Slack's do): only its scheme
//! and host are ever logged.

use std::sync::Arc;
use std::time::Duration;

use serde::Serialize;
use tokio::sync::mpsc;

use super::Shared;

/// What a notification is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Kind {
    RevisionApplied,
    RevisionInvalid,
    PassFailed,
    Heal,
    MoveStarted,
    MoveFinished,
    MoveFailed,
    BackupFailed,
    Rollback,
}

impl Kind {
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::RevisionApplied => "revision-applied",
            Kind::RevisionInvalid => "revision-invalid",
            Kind::PassFailed => "pass-failed",
            Kind::Heal => "heal",
            Kind::MoveStarted => "move-started",
            Kind::MoveFinished => "move-finished",
            Kind::MoveFailed => "move-failed",
            Kind::BackupFailed => "backup-failed",
            Kind::Rollback => "rollback",
        }
    }
}

/// One event, as sent.
#[derive(Debug, Clone, Serialize)]
pub struct Event {
    pub event: Kind,
    pub revision: Option<String>,
    pub stack: Option<String>,
    pub app: Option<String>,
    pub host: Option<String>,
    pub message: String,
    /// RFC 3339, UTC.
    pub time: String,
}

impl Event {
    pub fn new(event: Kind, revision: Option<&str>, message: impl Into<String>) -> Event {
        Event {
            event,
            revision: revision.map(str::to_string),
            stack: None,
            app: None,
            host: None,
            message: message.into(),
            time: crate::data::clock::rfc3339(crate::data::clock::now()),
        }
    }

    pub fn on(mut self, stack: Option<&str>, app: Option<&str>, host: Option<&str>) -> Event {
        self.stack = stack.map(str::to_string);
        self.app = app.map(str::to_string);
        self.host = host.map(str::to_string);
        self
    }

    /// Slack's `{"text": …}`.
    fn slack(&self) -> serde_json::Value {
        let mut text = format!("drover: {}", self.event.as_str());
        let what: Vec<String> = [
            self.stack.as_ref().map(|s| match &self.app {
                Some(a) => format!("{s}/{a}"),
                None => s.clone(),
            }),
            self.host.as_ref().map(|h| format!("on `{h}`")),
            self.revision
                .as_ref()
                .map(|r| format!("at {}", &r[..r.len().min(12)])),
        ]
        .into_iter()
        .flatten()
        .collect();
        if !what.is_empty() {
            text += &format!(" ({})", what.join(" "));
        }
        text += &format!(": {}", self.message);
        serde_json::json!({ "text": text })
    }
}

/// How events are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Format {
    #[default]
    Json,
    Slack,
}

/// Queues events for every `--notify` URL.
#[derive(Clone, Default)]
pub struct Notifier {
    queues: Vec<mpsc::Sender<Event>>,
    shared: Option<Arc<Shared>>,
}

/// Events waiting per URL, beyond which new ones are dropped.
const QUEUE: usize = 256;
/// Tries per event and URL.
const TRIES: u32 = 5;

/// `scheme://host[:port]` of a URL, for logs.
fn shown(url: &str) -> String {
    match url.split_once("://") {
        Some((scheme, rest)) => {
            let authority = rest.split('/').next().unwrap_or(rest);
            let host = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
            format!("{scheme}://{host}")
        }
        None => "(a URL)".into(),
    }
}

impl Notifier {
    /// One delivery task per URL; must run inside the runtime.
    pub fn start(urls: &[String], format: Format, shared: Arc<Shared>) -> Notifier {
        let client = reqwest::Client::builder()
            .timeout(Duration::from_secs(10))
            .build()
            .ok();
        let mut queues = Vec::new();
        for url in urls {
            let Some(client) = client.clone() else {
                tracing::error!("notifications cannot be sent: no HTTP client");
                break;
            };
            let (tx, rx) = mpsc::channel(QUEUE);
            tokio::spawn(deliver(
                client,
                url.clone(),
                format,
                rx,
                Arc::clone(&shared),
            ));
            queues.push(tx);
        }
        Notifier {
            queues,
            shared: Some(shared),
        }
    }

    /// Queues `event` for every URL; never waits.
    pub fn send(&self, event: Event) {
        for q in &self.queues {
            if q.try_send(event.clone()).is_err() {
                if let Some(s) = &self.shared {
                    s.metrics.count(&s.metrics.notifications, "dropped");
                }
                tracing::warn!(
                    event = event.event.as_str(),
                    "too many notifications wait; one was dropped"
                );
            }
        }
    }
}

async fn deliver(
    client: reqwest::Client,
    url: String,
    format: Format,
    mut rx: mpsc::Receiver<Event>,
    shared: Arc<Shared>,
) {
    let to = shown(&url);
    while let Some(event) = rx.recv().await {
        let body = match format {
            Format::Json => serde_json::to_value(&event).unwrap_or_default(),
            Format::Slack => event.slack(),
        };
        let mut wait = Duration::from_millis(500);
        let mut last = String::new();
        let mut sent = false;
        for attempt in 1..=TRIES {
            match client.post(&url).json(&body).send().await {
                Ok(r) if r.status().is_success() => {
                    sent = true;
                    break;
                }
                Ok(r) => last = format!("answered {}", r.status()),
                Err(e) => last = describe(e),
            }
            if attempt < TRIES {
                tokio::time::sleep(wait).await;
                wait = (wait * 2).min(Duration::from_secs(30));
            }
        }
        if sent {
            shared.metrics.count(&shared.metrics.notifications, "sent");
        } else {
            shared
                .metrics
                .count(&shared.metrics.notifications, "failed");
            tracing::warn!(to = %to, event = event.event.as_str(), error = %last, tries = TRIES, "a notification could not be delivered");
        }
    }
}

/// A client error without the URL it names (it may carry a token).
fn describe(e: reqwest::Error) -> String {
    let e = e.without_url();
    let mut s = e.to_string();
    let mut source = std::error::Error::source(&e);
    while let Some(cause) = source {
        s += &format!(": {cause}");
        source = cause.source();
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_are_written_as_the_contract_lists() {
        let e = Event::new(
            Kind::RevisionApplied,
            Some("0123456789abcdef0123"),
            "applied",
        )
        .on(Some("blog"), None, Some("node-a"));
        let v = serde_json::to_value(&e).unwrap();
        assert_eq!(v["event"], "revision-applied");
        assert_eq!(v["stack"], "blog");
        assert_eq!(v["app"], serde_json::Value::Null);
        for k in [
            "event", "revision", "stack", "app", "host", "message", "time",
        ] {
            assert!(v.get(k).is_some(), "{k} in {v}");
        }
        assert_eq!(
            e.slack()["text"],
            "drover: revision-applied (blog on `node-a` at 0123456789ab): applied"
        );
    }

    #[test]
    fn a_url_is_logged_without_its_path_or_user() {
        assert_eq!(
            shown("https://u:p@hooks.slack.com/services/T0/B0/secret"),
            "https://hooks.slack.com"
        );
    }
}
