//! Each host's key for the digests of secret values.
//!
//! A container's `drover.spec-hash` covers everything but its secret
//! values; each secret field's digest in `drover.spec-fields` is an HMAC
//! under a random key kept on the host. A label, an exported label set or a
//! `drover observe` snapshot therefore holds no unkeyed function of a
//! secret that a guess could be checked against offline.
//!
//! The key is a label-only volume `drover-secret-key`, made by the first
//! container with a secret drover creates on the host. Whoever can read it
//! (the Docker API) can read the containers' environment as well; it is
//! never printed or written to a snapshot (which says only `withheld`).

use std::collections::HashMap;

use hmac::{Hmac, Mac};
use serde::{Deserialize, Serialize};
use sha2::Sha256;

use crate::contract::labels;

/// The volume that holds a host's key.
pub const VOLUME: &str = "drover-secret-key";
/// The label holding the key, in hex.
pub const LABEL: &str = "drover.secret-key";
/// Every keyed digest starts with this, so an unkeyed one is told apart.
pub const KEYED: &str = "k";

/// A host's key: 256 random bits.
#[derive(Clone, PartialEq, Eq)]
pub struct HostKey([u8; 32]);

impl std::fmt::Debug for HostKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("HostKey(withheld)")
    }
}

impl HostKey {
    /// A new key from the operating system's random source.
    pub fn random() -> Result<HostKey, String> {
        random_bytes().map(HostKey)
    }

    /// A fixed key, for tests and simulations.
    pub fn fixed(byte: u8) -> HostKey {
        HostKey([byte; 32])
    }

    /// The key as it is stored in its label.
    pub fn to_hex(&self) -> String {
        hex(&self.0)
    }

    /// The key from its label's hex.
    pub fn from_hex(s: &str) -> Option<HostKey> {
        if s.len() != 64 || !s.is_ascii() {
            return None;
        }
        let mut out = [0u8; 32];
        for (i, b) in out.iter_mut().enumerate() {
            *b = u8::from_str_radix(&s[2 * i..2 * i + 2], 16).ok()?;
        }
        Some(HostKey(out))
    }

    /// The digest of one secret field: `k` and 16 hex digits of
    /// HMAC-SHA-256 over its length-prefixed name and value.
    pub fn digest(&self, name: &str, value: &str) -> String {
        let mut mac = Hmac::<Sha256>::new_from_slice(&self.0).expect("HMAC takes any key length");
        for part in [name, value] {
            mac.update(&(part.len() as u64).to_le_bytes());
            mac.update(part.as_bytes());
        }
        let full = mac.finalize().into_bytes();
        format!("{KEYED}{}", hex(&full[..8]))
    }

    /// The labels of the volume that holds the key.
    pub fn volume_labels(&self) -> std::collections::BTreeMap<String, String> {
        super::internal_labels([(LABEL, self.to_hex())])
    }
}

/// The key of a host among its volumes: only the volume of that exact
/// name, internal, with a well-formed key.
pub fn from_volumes<'a>(
    volumes: impl IntoIterator<Item = (&'a str, &'a HashMap<String, String>)>,
) -> Option<HostKey> {
    volumes
        .into_iter()
        .find(|(name, _)| *name == VOLUME)
        .and_then(|(_, l)| from_labels(l))
}

/// The key in a volume's labels, if it is the key volume's.
pub fn from_labels(l: &HashMap<String, String>) -> Option<HostKey> {
    if l.get(labels::INTERNAL).map(String::as_str) != Some("true") {
        return None;
    }
    HostKey::from_hex(l.get(LABEL)?)
}

/// Whether a volume's labels make it a key volume.
pub fn is_key(l: &HashMap<String, String>) -> bool {
    l.contains_key(LABEL)
}

/// What drover knows of a host's key.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum SecretKey {
    /// The host has none (no container with a secret was made there yet,
    /// or the key volume was removed).
    #[default]
    Absent,
    /// Read from a snapshot, which never holds the key: secret values
    /// cannot be compared.
    Withheld,
    Known(HostKey),
}

impl SecretKey {
    pub fn is_absent(&self) -> bool {
        *self == SecretKey::Absent
    }

    pub fn known(&self) -> Option<&HostKey> {
        match self {
            SecretKey::Known(k) => Some(k),
            _ => None,
        }
    }
}

/// A snapshot says only whether there was a key.
impl Serialize for SecretKey {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            SecretKey::Absent => s.serialize_none(),
            SecretKey::Withheld | SecretKey::Known(_) => s.serialize_str("withheld"),
        }
    }
}

impl<'de> Deserialize<'de> for SecretKey {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        match Option::<String>::deserialize(d)?.as_deref() {
            None => Ok(SecretKey::Absent),
            Some("withheld") => Ok(SecretKey::Withheld),
            Some(other) => Err(serde::de::Error::custom(format!(
                "`secret_key` is `withheld` or absent, not `{other}`"
            ))),
        }
    }
}

/// 32 bytes from `/dev/urandom`.
pub fn random_bytes() -> Result<[u8; 32], String> {
    let mut b = [0u8; 32];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| std::io::Read::read_exact(&mut f, &mut b))
        .map_err(|e| format!("cannot read /dev/urandom: {e}"))?;
    Ok(b)
}

pub fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn digests_depend_on_the_key_the_name_and_the_value() {
        let (a, b) = (HostKey::fixed(1), HostKey::fixed(2));
        let d = a.digest("env.PASSWORD", "hunter2");
        assert!(d.starts_with(KEYED) && d.len() == 17, "{d}");
        assert_eq!(d, a.digest("env.PASSWORD", "hunter2"));
        assert_ne!(d, b.digest("env.PASSWORD", "hunter2"));
        assert_ne!(d, a.digest("env.PASSWORD", "hunter3"));
        assert_ne!(d, a.digest("env.PASSWORDh", "unter2"));
    }

    #[test]
    fn the_key_round_trips_through_its_label_and_never_through_a_snapshot() {
        let k = HostKey::random().unwrap();
        let l: HashMap<String, String> = k.volume_labels().into_iter().collect();
        assert_eq!(from_volumes([(VOLUME, &l)]), Some(k.clone()));
        assert_eq!(from_volumes([("drover-secret-key-2", &l)]), None);
        let json = serde_json::to_string(&SecretKey::Known(k.clone())).unwrap();
        assert_eq!(json, "\"withheld\"");
        assert!(!format!("{:?}", SecretKey::Known(k.clone())).contains(&k.to_hex()));
        let back: SecretKey = serde_json::from_str(&json).unwrap();
        assert_eq!(back, SecretKey::Withheld);
    }
}
