//! The controller's dashboard in a real browser: headless Chromium loads it
//! from a controller on real engines, a screenshot is taken, the page shows
//! the stacks, an app stopped behind drover's back appears without a
//! reload, and no secret is anywhere in the page or its API. Its password
//! is checked over plain HTTP.

mod support;

use std::io::{BufRead, Read, Write};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use support::*;

const CANARY: &str = "CANARY-DASHBOARD-5150";

fn stack(a: &str, b: &str) -> String {
    format!(
        "kind: Stack
name: dash
volumes:
  data: {{}}
apps:
  db:
    image: {IMAGE}
    host: {a}
    pull: never
    restart: 'no'
    environment: {{ PASSWORD: '${{DASH_SECRET}}' }}
    volumes: ['data:/data']
    command: ['sh', '-c', 'trap \"exit 0\" TERM; while :; do sleep 1; done']
    stop_grace_period: 1s
  web:
    image: {IMAGE}
    host: {b}
    pull: never
    restart: 'no'
    depends_on: [db]
    command: ['sh', '-c', 'trap \"exit 0\" TERM; while :; do sleep 1; done']
    stop_grace_period: 1s
"
    )
}

/// A headless Chromium with its DevTools protocol on a port of loopback.
struct Browser {
    child: Child,
    port: u16,
    _profile: tempfile::TempDir,
}

impl Browser {
    fn open(url: &str) -> Browser {
        let profile = tempfile::tempdir().unwrap();
        let mut child = Command::new("chromium")
            .args([
                "--headless=new",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-dev-shm-usage",
                "--no-first-run",
                "--remote-debugging-address=127.0.0.1",
                "--remote-debugging-port=0",
                "--window-size=1280,1500",
            ])
            .arg(format!("--user-data-dir={}", profile.path().display()))
            .arg(url)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("chromium runs (scripts/test-hosts.sh installs it)");
        let mut lines = std::io::BufReader::new(child.stderr.take().unwrap()).lines();
        let port = loop {
            let line = lines
                .next()
                .expect("chromium says where DevTools listen")
                .unwrap();
            if let Some(rest) = line.split("ws://127.0.0.1:").nth(1) {
                break rest.split('/').next().unwrap().parse().unwrap();
            }
        };
        // Its further words are read and dropped.
        std::thread::spawn(move || lines.for_each(drop));
        Browser {
            child,
            port,
            _profile: profile,
        }
    }

    /// The DevTools socket of the page that shows `url`.
    fn page(
        &self,
        url: &str,
    ) -> tungstenite::WebSocket<tungstenite::stream::MaybeTlsStream<std::net::TcpStream>> {
        let mut ws = None;
        wait_until(
            Duration::from_secs(30),
            "the page's DevTools target",
            || {
                // DevTools keep the connection open: curl reads by length.
                let list = format!("http://127.0.0.1:{}/json/list", self.port);
                let o = Command::new("curl")
                    .args(["-sf", "-m", "5", &list])
                    .output()
                    .unwrap();
                let body = String::from_utf8_lossy(&o.stdout).into_owned();
                if !o.status.success() {
                    return false;
                }
                let targets: serde_json::Value = serde_json::from_str(&body).unwrap();
                ws = targets.as_array().unwrap().iter().find_map(|t| {
                    (t["type"] == "page" && t["url"].as_str().is_some_and(|u| u.starts_with(url)))
                        .then(|| t["webSocketDebuggerUrl"].as_str().unwrap().to_string())
                });
                ws.is_some()
            },
        );
        tungstenite::connect(ws.unwrap()).unwrap().0
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Calls a DevTools method and returns its `result`.
fn call(
    ws: &mut tungstenite::WebSocket<tungstenite::stream::MaybeTlsStream<std::net::TcpStream>>,
    id: &mut u64,
    method: &str,
    params: serde_json::Value,
) -> serde_json::Value {
    *id += 1;
    let request = serde_json::json!({ "id": *id, "method": method, "params": params });
    ws.send(tungstenite::Message::text(request.to_string()))
        .unwrap();
    loop {
        let msg = ws.read().unwrap();
        let Ok(text) = msg.into_text() else { continue };
        let v: serde_json::Value = serde_json::from_str(text.as_str()).unwrap_or_default();
        if v["id"] == *id {
            assert!(v.get("error").is_none(), "{method}: {v}");
            return v["result"].clone();
        }
    }
}

/// What the page shows now, as text, or its whole HTML.
fn page_text(
    ws: &mut tungstenite::WebSocket<tungstenite::stream::MaybeTlsStream<std::net::TcpStream>>,
    id: &mut u64,
    expression: &str,
) -> String {
    let r = call(
        ws,
        id,
        "Runtime.evaluate",
        serde_json::json!({ "expression": expression, "returnByValue": true }),
    );
    r["result"]["value"]
        .as_str()
        .unwrap_or_default()
        .to_string()
}

#[test]
fn the_dashboard_shows_the_cluster_live_in_a_browser_and_never_a_secret() {
    let Some((_turn, hosts)) = hosts() else {
        return;
    };
    let f = Fixture::new(hosts, &["dash"]);
    let (a, b) = (&f.hosts[0], &f.hosts[1]);
    f.write("dash.yaml", &stack(&a.name, &b.name));
    let ctl = f.controller(&["--resync", "2s"], &[("DASH_SECRET", CANARY)]);
    wait_until(
        Duration::from_secs(90),
        "the first pass to converge",
        || ctl.health().1["ready"] == true,
    );

    let url = format!("http://127.0.0.1:{}/", ctl.port);
    let browser = Browser::open(&url);
    let mut ws = browser.page(&url);
    let mut id = 0;
    let text = |ws: &mut _, id: &mut u64| page_text(ws, id, "document.body.innerText");
    let mut shown = String::new();
    wait_until(
        Duration::from_secs(30),
        "the page to show the stack",
        || {
            shown = text(&mut ws, &mut id);
            shown.contains("dash") && shown.contains("running") && shown.contains(&a.name)
        },
    );
    for expected in [
        "Hosts",
        "Apps",
        "Dependency graph",
        "Recent actions",
        "✔ in sync",
    ] {
        assert!(shown.contains(expected), "no `{expected}` in:\n{shown}");
    }
    // The graph is drawn: a box per app, an arrow for web's wait.
    let svg = page_text(
        &mut ws,
        &mut id,
        "document.getElementById('graph').innerHTML",
    );
    assert_eq!(svg.matches("class=\"app\"").count(), 2, "{svg}");
    assert_eq!(svg.matches("<line ").count(), 1, "{svg}");

    // A screenshot of the page, kept with the test run.
    let shot = call(
        &mut ws,
        &mut id,
        "Page.captureScreenshot",
        serde_json::json!({ "format": "png" }),
    );
    use base64::Engine as _;
    let png = base64::engine::general_purpose::STANDARD
        .decode(shot["data"].as_str().unwrap())
        .unwrap();
    assert!(
        png.starts_with(b"\x89PNG") && png.len() > 20_000,
        "{} bytes",
        png.len()
    );
    let out = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("dashboard.png");
    std::fs::write(&out, &png).unwrap();
    eprintln!("screenshot: {}", out.display());

    // An app stopped behind drover's back shows, with no reload.
    let before = page_text(&mut ws, &mut id, "String(performance.timeOrigin)");
    assert!(docker(b, &["stop", "-t", "1", "dash-web"]).status.success());
    let started = Instant::now();
    wait_until(
        Duration::from_secs(60),
        "the page to show the restart",
        || {
            shown = text(&mut ws, &mut id);
            shown.contains("start container `dash-web`") && shown.contains("container is exited")
        },
    );
    eprintln!(
        "shown {:.1}s after the stop",
        started.elapsed().as_secs_f64()
    );
    assert_eq!(
        page_text(&mut ws, &mut id, "String(performance.timeOrigin)"),
        before,
        "the page was not reloaded"
    );

    // No secret anywhere: the page, its API, the status.
    let html = page_text(&mut ws, &mut id, "document.documentElement.outerHTML");
    let (_, api) = ctl.get("/api/dashboard").unwrap();
    for (what, body) in [("page", &html), ("api", &api), ("text", &shown)] {
        assert!(!body.contains(CANARY), "the secret is in the {what}");
    }
    drop(ws);
    drop(browser);
}

/// `GET path` with an `Authorization` header, if any: the code and the
/// response's head.
fn get_with(port: u16, path: &str, auth: Option<&str>) -> (u16, String) {
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let header = auth.map_or(String::new(), |a| format!("Authorization: {a}\r\n"));
    write!(s, "GET {path} HTTP/1.0\r\nHost: x\r\n{header}\r\n").unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    let code = out.split_whitespace().nth(1).unwrap().parse().unwrap();
    (code, out)
}

#[test]
fn the_dashboard_asks_for_its_password() {
    let Some((_turn, hosts)) = hosts() else {
        return;
    };
    let f = Fixture::new(hosts, &["dash"]);
    f.write("dash.yaml", &stack(&f.hosts[0].name, &f.hosts[1].name));
    let ctl = f.controller(
        &["--dashboard-auth-env", "DASH_AUTH"],
        &[("DASH_SECRET", CANARY), ("DASH_AUTH", "ops:correct horse")],
    );
    let good = format!(
        "Basic {}",
        drover::controller::dashboard::basic_credentials("ops:correct horse")
    );
    for path in ["/", "/api/dashboard"] {
        let (code, head) = get_with(ctl.port, path, None);
        assert_eq!(code, 401, "{path}");
        assert!(
            head.contains("www-authenticate: Basic realm=\"drover\""),
            "{head}"
        );
        assert_eq!(get_with(ctl.port, path, Some("Basic b3BzOndyb25n")).0, 401);
        let (code, body) = get_with(ctl.port, path, Some(&good));
        assert_eq!(code, 200, "{path}");
        assert!(!body.contains(CANARY));
    }
    let (_, body) = get_with(ctl.port, "/api/dashboard", Some(&good));
    assert!(body.contains("\"protected\":true"), "{body}");
    // /healthz and /metrics stay as they were: for probes and Prometheus.
    assert!(ctl.get("/healthz").is_some());

    // A password variable that is not `user:password` is refused at start.
    let o = f.drover_with(
        &[
            "controller",
            "--listen",
            "127.0.0.1:0",
            "--dashboard-auth-env",
            "DASH_AUTH",
        ],
        &[("DASH_AUTH", "no-colon")],
    );
    assert!(!o.status.success());
    assert!(
        stderr(&o).contains("must hold `user:password`"),
        "{}",
        stderr(&o)
    );
}
