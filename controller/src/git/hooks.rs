//! Webhook deliveries from a Git forge, checked against a shared secret as
//! each forge signs them:
//! - GitHub: `X-Hub-Signature-256: sha256=<hex>`, HMAC-SHA256 of the body;
//! - Gitea and Forgejo (and Gogs): `X-Gitea-Signature` (`X-Forgejo-Signature`,
//!   `X-Gogs-Signature`): the same HMAC, hex, without a prefix;
//! - GitLab: `X-Gitlab-Token`: the secret itself.
//!
//! Every comparison takes the same time whatever the input.

use hmac::{Hmac, Mac};
use sha2::Sha256;

/// Which forge's signature a delivery carried, when it was good.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Forge {
    GitHub,
    Gitea,
    GitLab,
}

impl Forge {
    pub fn as_str(self) -> &'static str {
        match self {
            Forge::GitHub => "github",
            Forge::Gitea => "gitea",
            Forge::GitLab => "gitlab",
        }
    }
}

/// The forge whose good signature `header` (a lookup by lower-case name)
/// shows for `body`, or `None`: a missing or bad signature.
pub fn verify<'a>(
    secret: &[u8],
    body: &[u8],
    header: impl Fn(&str) -> Option<&'a str>,
) -> Option<Forge> {
    if secret.is_empty() {
        return None;
    }
    if let Some(sig) = header("x-hub-signature-256") {
        let hex = sig.trim().strip_prefix("sha256=")?;
        return hmac_matches(secret, body, hex).then_some(Forge::GitHub);
    }
    for name in [
        "x-gitea-signature",
        "x-forgejo-signature",
        "x-gogs-signature",
    ] {
        if let Some(sig) = header(name) {
            return hmac_matches(secret, body, sig.trim()).then_some(Forge::Gitea);
        }
    }
    if let Some(token) = header("x-gitlab-token") {
        return same(token.as_bytes(), secret).then_some(Forge::GitLab);
    }
    None
}

/// The hex HMAC-SHA256 of `body` under `secret`, as GitHub and Gitea send it.
pub fn sign(secret: &[u8], body: &[u8]) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret).expect("any key length");
    mac.update(body);
    mac.finalize()
        .into_bytes()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

fn hmac_matches(secret: &[u8], body: &[u8], hex: &str) -> bool {
    let Some(given) = unhex(hex) else {
        return false;
    };
    let mut mac = Hmac::<Sha256>::new_from_slice(secret).expect("any key length");
    mac.update(body);
    mac.verify_slice(&given).is_ok()
}

fn unhex(s: &str) -> Option<Vec<u8>> {
    if !s.len().is_multiple_of(2) {
        return None;
    }
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(s.get(i..i + 2)?, 16).ok())
        .collect()
}

/// Equal, in a time that depends on the lengths only.
fn same(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers<'a>(pairs: &'a [(&'a str, &'a str)]) -> impl Fn(&str) -> Option<&'a str> + 'a {
        move |n| pairs.iter().find(|(k, _)| *k == n).map(|(_, v)| *v)
    }

    #[test]
    fn github_signatures_are_checked_against_the_body() {
        // GitHub's documented example: secret "It's a Secret to Everybody",
        // body "Hello, World!".
        let secret = b"It's a Secret to Everybody";
        let body = b"Hello, World!";
        let good = "sha256=757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17";
        assert_eq!(sign(secret, body), good.trim_start_matches("sha256="));
        assert_eq!(
            verify(secret, body, headers(&[("x-hub-signature-256", good)])),
            Some(Forge::GitHub)
        );
        assert_eq!(
            verify(
                secret,
                b"Hello, World?",
                headers(&[("x-hub-signature-256", good)])
            ),
            None
        );
        assert_eq!(
            verify(b"other", body, headers(&[("x-hub-signature-256", good)])),
            None
        );
        let bare = good.trim_start_matches("sha256=");
        assert_eq!(
            verify(secret, body, headers(&[("x-hub-signature-256", bare)])),
            None
        );
    }

    #[test]
    fn gitea_and_gitlab_deliveries_are_recognised() {
        let s = b"hook-secret";
        let body = br#"{"ref":"refs/heads/main"}"#;
        let sig = sign(s, body);
        assert_eq!(
            verify(s, body, headers(&[("x-gitea-signature", &sig)])),
            Some(Forge::Gitea)
        );
        assert_eq!(
            verify(s, body, headers(&[("x-forgejo-signature", &sig)])),
            Some(Forge::Gitea)
        );
        assert_eq!(
            verify(s, body, headers(&[("x-gitlab-token", "hook-secret")])),
            Some(Forge::GitLab)
        );
        assert_eq!(
            verify(s, body, headers(&[("x-gitlab-token", "hook-secreT")])),
            None
        );
        assert_eq!(verify(s, body, headers(&[])), None);
        assert_eq!(verify(b"", body, headers(&[("x-gitlab-token", "")])), None);
    }
}
