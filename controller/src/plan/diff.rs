//! Why a container is made again: which fields changed, never a secret
//! value.

use super::*;

/// Why a managed container must be made again, if it must: "image `a` →
/// `b`; environment `X` changed", never a secret value. The spec hash
/// covers all but the secret values; those are compared through their
/// digests under the host's `key`, and not at all when it is withheld.
pub fn config_change(c: &ContainerSpec, o: &ObservedContainer, key: &SecretKey) -> Option<String> {
    let unkeyed = |d: &String| d == SECRET_DIGEST;
    if o.spec_hash.as_deref() == Some(c.spec_hash.as_str()) && !c.has_secrets() {
        return None;
    }
    if o.spec_fields.values().any(unkeyed) {
        // Made when secret values went into the spec hash unkeyed.
        return Some(
            "its secret values are recorded under the host's key from now on (once per container)"
                .into(),
        );
    }
    let wanted = match key {
        SecretKey::Known(k) => c.keyed_digests(Some(k)),
        SecretKey::Absent if c.has_secrets() => {
            return Some(format!(
                "secret values cannot be compared: the host's key (volume `{}`) is gone, and a new one is made",
                crate::contract::hostkey::VOLUME
            ))
        }
        SecretKey::Absent | SecretKey::Withheld => c.field_digests.clone(),
    };
    let same_hash = o.spec_hash.as_deref() == Some(c.spec_hash.as_str());
    if same_hash && (key == &SecretKey::Withheld || wanted == o.spec_fields) {
        return None;
    }
    if o.spec_fields.is_empty() {
        return Some("configuration changed".into());
    }
    let mut changes = Vec::new();
    let mut secrets = Vec::new();
    let keys: BTreeSet<&String> = wanted.keys().chain(o.spec_fields.keys()).collect();
    for k in keys {
        let secret = c.field_digests.get(k).is_some_and(unkeyed);
        let what = describe_field(k);
        match (wanted.get(k), o.spec_fields.get(k)) {
            (Some(d), Some(old)) if d == old => {}
            (Some(_), Some(_)) if secret && key == &SecretKey::Withheld => {}
            (Some(_), Some(_)) if secret => secrets.push(what),
            (Some(_), Some(old))
                if k == "image"
                    && !old.starts_with(crate::contract::hostkey::KEYED)
                    && !unkeyed(old) =>
            {
                changes.push(format!("image `{}` → `{}`", o.image, c.image));
            }
            (Some(_), Some(_)) => changes.push(format!("{what} changed")),
            (Some(_), None) => changes.push(format!("{what} added")),
            (None, Some(_)) => changes.push(format!("{what} removed")),
            (None, None) => {}
        }
    }
    if !secrets.is_empty() {
        changes.push(format!("a secret value changed ({})", secrets.join(", ")));
    }
    if changes.is_empty() {
        // The hash differs, and no field digest says where.
        return (!same_hash).then(|| "configuration changed".into());
    }
    Some(changes.join("; "))
}

/// A field of a container's spec as the plan names it: "environment `X`".
pub fn describe_field(k: &str) -> String {
    if k == format!("label.{}", crate::contract::labels::NETWORK_OF) {
        "the app whose network it shares is made again".into()
    } else if k == format!("label.{}", crate::contract::labels::RESTARTS_WITH) {
        "an app it restarts with (`restart: true`) is made again".into()
    } else if let Some(e) = k.strip_prefix("env.") {
        format!("environment `{e}`")
    } else if let Some(l) = k.strip_prefix("label.") {
        format!("label `{l}`")
    } else {
        format!("`{k}`")
    }
}
