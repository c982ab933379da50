//! Real Git servers on loopback for the tests of `drover controller --git`:
//! `git daemon`, and smart HTTP through `git http-backend` behind lighttpd
//! over TLS with basic authentication (credentials never go in clear
//! text: the controller refuses to send them over plain `http://`). Commits and pushes are made with the `git`
//! command line, as users make them.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// The user and password lighttpd asks for.
pub const USER: &str = "drover";
pub const PASSWORD: &str = "pw-7f3a9c1e";

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn listening(port: u16) -> bool {
    std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()
}

/// Runs `git ARGS` in `dir`, failing the test when it fails.
pub fn git(dir: &Path, args: &[&str]) -> String {
    let o = Command::new("git")
        .current_dir(dir)
        .args(args)
        .env("GIT_AUTHOR_NAME", "Test Author")
        .env("GIT_AUTHOR_EMAIL", "author@example.test")
        .env("GIT_COMMITTER_NAME", "Test Author")
        .env("GIT_COMMITTER_EMAIL", "author@example.test")
        .env("GIT_CONFIG_GLOBAL", "/dev/null")
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .output()
        .expect("git runs");
    assert!(
        o.status.success(),
        "git {}: {}",
        args.join(" "),
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8_lossy(&o.stdout).trim().to_string()
}

/// A folder of bare repositories served by `git daemon` and, with
/// authentication, over smart HTTP.
pub struct GitServer {
    pub root: tempfile::TempDir,
    pub daemon_port: u16,
    pub http_port: u16,
    daemon: Option<Child>,
    http: Option<Child>,
}

impl GitServer {
    pub fn start() -> GitServer {
        let root = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(root.path().join("repos")).unwrap();
        let mut s = GitServer {
            root,
            daemon_port: free_port(),
            http_port: free_port(),
            daemon: None,
            http: None,
        };
        s.start_daemon();
        s.start_http();
        s
    }

    fn repos(&self) -> PathBuf {
        self.root.path().join("repos")
    }

    pub fn start_daemon(&mut self) {
        // git-daemon itself, not `git daemon`: `git` would run it as a
        // child that outlives a kill.
        let exec_path = git(self.root.path(), &["--exec-path"]);
        let child = Command::new(Path::new(&exec_path).join("git-daemon"))
            .args([
                "--reuseaddr",
                "--export-all",
                "--enable=receive-pack",
                "--listen=127.0.0.1",
                &format!("--port={}", self.daemon_port),
                &format!("--base-path={}", self.repos().display()),
            ])
            .arg(self.repos())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("git daemon starts");
        self.daemon = Some(child);
        let port = self.daemon_port;
        super::wait_until(Duration::from_secs(20), "git daemon to listen", || {
            listening(port)
        });
    }

    pub fn stop_daemon(&mut self) {
        if let Some(mut c) = self.daemon.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
        let port = self.daemon_port;
        super::wait_until(Duration::from_secs(20), "git daemon to stop", || {
            !listening(port)
        });
    }

    fn start_http(&mut self) {
        let dir = self.root.path();
        super::make_certificates(dir, "127.0.0.1");
        std::fs::write(dir.join("users"), format!("{USER}:{PASSWORD}\n")).unwrap();
        std::fs::create_dir_all(dir.join("www")).unwrap();
        let conf = format!(
            r#"server.document-root = "{www}"
server.bind = "127.0.0.1"
server.port = {port}
server.errorlog = "{root}/lighttpd.log"
server.modules = ("mod_openssl", "mod_alias", "mod_setenv", "mod_cgi", "mod_auth", "mod_authn_file")
ssl.engine = "enable"
ssl.pemfile = "{root}/server-cert.pem"
ssl.privkey = "{root}/server-key.pem"
alias.url = ("/git" => "/usr/lib/git-core/git-http-backend")
$HTTP["url"] =~ "^/git" {{
  cgi.assign = ("" => "")
  setenv.set-environment = ("GIT_PROJECT_ROOT" => "{repos}", "GIT_HTTP_EXPORT_ALL" => "1")
  auth.backend = "plain"
  auth.backend.plain.userfile = "{root}/users"
  auth.require = ("" => ("method" => "basic", "realm" => "git", "require" => "valid-user"))
}}
"#,
            www = dir.join("www").display(),
            root = dir.display(),
            repos = self.repos().display(),
            port = self.http_port,
        );
        std::fs::write(dir.join("lighttpd.conf"), conf).unwrap();
        let child = Command::new("lighttpd")
            .args(["-D", "-f"])
            .arg(dir.join("lighttpd.conf"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("lighttpd starts");
        self.http = Some(child);
        let port = self.http_port;
        super::wait_until(Duration::from_secs(20), "lighttpd to listen", || {
            listening(port)
        });
    }

    /// The certificate authority of the HTTPS server's certificate.
    pub fn ca(&self) -> PathBuf {
        self.root.path().join("ca.pem")
    }

    /// A new bare repository `name.git` on branch `main`, and a working
    /// clone of it to commit in.
    pub fn repo(&self, name: &str) -> Repo {
        let bare = self.repos().join(format!("{name}.git"));
        std::fs::create_dir_all(&bare).unwrap();
        git(&bare, &["init", "-q", "--bare", "-b", "main"]);
        git(&bare, &["config", "http.receivepack", "true"]);
        let work = self.root.path().join("work").join(name);
        std::fs::create_dir_all(&work).unwrap();
        git(&work, &["init", "-q", "-b", "main"]);
        git(&work, &["remote", "add", "origin", bare.to_str().unwrap()]);
        Repo {
            work,
            name: name.into(),
            daemon: format!("git://127.0.0.1:{}/{name}.git", self.daemon_port),
            https: format!("https://127.0.0.1:{}/git/{name}.git", self.http_port),
        }
    }
}

/// An SSH server on loopback that lets one key in, for `ssh://` URLs.
pub struct SshServer {
    pub port: u16,
    /// The client's private key, and a known-hosts file with the server's.
    pub key: PathBuf,
    pub known_hosts: PathBuf,
    child: Child,
}

impl GitServer {
    /// Starts sshd on loopback for the repositories of this server.
    pub fn start_ssh(&self) -> SshServer {
        let dir = self.root.path().join("ssh");
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::create_dir_all("/run/sshd").unwrap();
        let keygen = |file: &str| {
            let o = Command::new("ssh-keygen")
                .args(["-q", "-t", "ed25519", "-N", "", "-f"])
                .arg(dir.join(file))
                .output()
                .unwrap();
            assert!(
                o.status.success(),
                "ssh-keygen: {}",
                String::from_utf8_lossy(&o.stderr)
            );
        };
        keygen("host_key");
        keygen("client_key");
        std::fs::copy(dir.join("client_key.pub"), dir.join("authorized_keys")).unwrap();
        let port = free_port();
        let conf = format!(
            "Port {port}\nListenAddress 127.0.0.1\nHostKey {d}/host_key\nAuthorizedKeysFile {d}/authorized_keys\n\
             PidFile {d}/sshd.pid\nPasswordAuthentication no\nKbdInteractiveAuthentication no\n\
             PermitRootLogin prohibit-password\nStrictModes no\nUsePAM no\n",
            d = dir.display()
        );
        std::fs::write(dir.join("sshd_config"), conf).unwrap();
        let child = Command::new("/usr/sbin/sshd")
            .args(["-D", "-e", "-f"])
            .arg(dir.join("sshd_config"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("sshd starts");
        super::wait_until(Duration::from_secs(20), "sshd to listen", || {
            listening(port)
        });
        let host_key = std::fs::read_to_string(dir.join("host_key.pub")).unwrap();
        let mut fields = host_key.split_whitespace();
        let (kind, key) = (fields.next().unwrap(), fields.next().unwrap());
        std::fs::write(
            dir.join("known_hosts"),
            format!("[127.0.0.1]:{port} {kind} {key}\n"),
        )
        .unwrap();
        SshServer {
            port,
            key: dir.join("client_key"),
            known_hosts: dir.join("known_hosts"),
            child,
        }
    }
}

impl SshServer {
    /// The `ssh://` URL of `repo`.
    pub fn url(&self, server: &GitServer, repo: &Repo) -> String {
        format!(
            "ssh://root@127.0.0.1:{}{}/{}.git",
            self.port,
            server.repos().display(),
            repo.name
        )
    }
}

impl Drop for SshServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for GitServer {
    fn drop(&mut self) {
        for c in [self.daemon.take(), self.http.take()].into_iter().flatten() {
            let mut c = c;
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// A repository: its working clone and the URLs it is served at.
pub struct Repo {
    pub work: PathBuf,
    pub name: String,
    pub daemon: String,
    pub https: String,
}

impl Repo {
    pub fn write(&self, file: &str, content: &str) {
        let path = self.work.join(file);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, content).unwrap();
    }

    pub fn remove(&self, file: &str) {
        git(&self.work, &["rm", "-q", file]);
    }

    /// Commits everything with `message`; its SHA.
    pub fn commit(&self, message: &str) -> String {
        git(&self.work, &["add", "-A"]);
        git(
            &self.work,
            &["commit", "-q", "--allow-empty", "-m", message],
        );
        git(&self.work, &["rev-parse", "HEAD"])
    }

    pub fn push(&self) {
        git(&self.work, &["push", "-q", "-f", "origin", "HEAD:main"]);
    }

    /// Commits and pushes; the commit's SHA.
    pub fn commit_and_push(&self, message: &str) -> String {
        let sha = self.commit(message);
        self.push();
        sha
    }

    /// Moves the branch back to `sha` and force-pushes it.
    pub fn force_push(&self, sha: &str) {
        git(&self.work, &["reset", "-q", "--hard", sha]);
        self.push();
    }
}
