//! The helper image: the running drover binary (with the libraries it
//! needs, when it is not static), the certificate authorities drover's
//! machine trusts, and an empty `/tmp`, imported on each host that takes
//! part in a move, snapshot or backup.

use super::*;

/// The image helpers and markers run from: the running drover binary (with
/// the libraries it needs, when it is not static) and an empty `/tmp`.
#[derive(Clone)]
pub struct HelperImage {
    pub tag: String,
    pub rootfs: Bytes,
}

static IMAGE: OnceLock<Result<HelperImage, String>> = OnceLock::new();

/// The helper image for this binary, built once per process. The binary is
/// `$DROVER_HELPER_BINARY` when set, else the running one.
pub fn helper_image() -> Result<HelperImage, String> {
    IMAGE.get_or_init(build_helper_image).clone()
}

fn build_helper_image() -> Result<HelperImage, String> {
    let path = match std::env::var_os("DROVER_HELPER_BINARY") {
        Some(p) => std::path::PathBuf::from(p),
        None => std::env::current_exe()
            .map_err(|e| format!("cannot find the running binary for the helper image: {e}"))?,
    };
    let bin = std::fs::read(&path)
        .map_err(|e| format!("cannot read the helper binary {}: {e}", path.display()))?;
    let libs = if has_interpreter(&bin) {
        shared_libraries(&path)?
    } else {
        Vec::new()
    };
    let mut tar = tar::Builder::new(Vec::with_capacity(bin.len() + (1 << 20)));
    let mut dir = |name: &str, mode: u32| -> Result<(), String> {
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(tar::EntryType::Directory);
        h.set_mode(mode);
        h.set_size(0);
        h.set_cksum();
        tar.append_data(&mut h, name, std::io::empty())
            .map_err(|e| e.to_string())
    };
    dir("tmp/", 0o1777)?;
    dir("data/", 0o755)?;
    let mut file = |name: &str, data: &[u8]| -> Result<(), String> {
        let mut h = tar::Header::new_gnu();
        h.set_mode(0o755);
        h.set_size(data.len() as u64);
        h.set_cksum();
        tar.append_data(&mut h, name, data)
            .map_err(|e| e.to_string())
    };
    file("drover", &bin)?;
    drop(bin);
    // The certificate authorities drover's machine trusts: a helper that
    // reaches a repository's store itself checks it as drover would.
    if let Some(certs) = ca_bundle() {
        file(CA_BUNDLE.trim_start_matches('/'), &certs)?;
    }
    for lib in libs {
        let data = std::fs::read(&lib).map_err(|e| format!("cannot read {lib}: {e}"))?;
        file(lib.trim_start_matches('/'), &data)?;
    }
    let rootfs = tar.into_inner().map_err(|e| e.to_string())?;
    let digest = blake3::hash(&rootfs).to_hex();
    Ok(HelperImage {
        tag: crate::contract::names::helper_image(&digest.as_str()[..16]),
        rootfs: Bytes::from(rootfs),
    })
}

/// Where the helper finds the certificate authorities it trusts.
const CA_BUNDLE: &str = "/etc/ssl/certs/ca-certificates.crt";

/// The certificate authorities of drover's machine, as one PEM file.
fn ca_bundle() -> Option<Vec<u8>> {
    let named = std::env::var_os("SSL_CERT_FILE").map(std::path::PathBuf::from);
    named
        .into_iter()
        .chain(
            [
                CA_BUNDLE,
                "/etc/pki/tls/certs/ca-bundle.crt",
                "/etc/ssl/cert.pem",
            ]
            .map(std::path::PathBuf::from),
        )
        .find_map(|p| std::fs::read(p).ok())
}

/// Whether an ELF binary names a dynamic loader (is not static).
fn has_interpreter(elf: &[u8]) -> bool {
    let u16_at = |o: usize| elf.get(o..o + 2).map(|b| u16::from_le_bytes([b[0], b[1]]));
    let u64_at = |o: usize| {
        elf.get(o..o + 8)
            .and_then(|b| b.try_into().ok())
            .map(u64::from_le_bytes)
    };
    if elf.get(..4) != Some(b"\x7fELF") || elf.get(4) != Some(&2) {
        return false;
    }
    let (Some(phoff), Some(entsize), Some(count)) = (u64_at(0x20), u16_at(0x36), u16_at(0x38))
    else {
        return false;
    };
    (0..usize::from(count)).any(|i| {
        let at = usize::try_from(phoff).unwrap_or(usize::MAX) + i * usize::from(entsize);
        elf.get(at..at + 4) == Some(&3u32.to_le_bytes()[..]) // PT_INTERP
    })
}

fn shared_libraries(bin: &std::path::Path) -> Result<Vec<String>, String> {
    let out = std::process::Command::new("ldd")
        .arg(bin)
        .output()
        .map_err(|e| format!("this drover is not static and `ldd` cannot be run ({e}); set DROVER_HELPER_BINARY to a static drover"))?;
    let text = String::from_utf8_lossy(&out.stdout);
    Ok(text
        .lines()
        .filter_map(|l| {
            let l = l.trim();
            let path = match l.split_once("=>") {
                Some((_, rest)) => rest.trim().split(' ').next()?,
                None => l.split(' ').next()?,
            };
            path.starts_with('/').then(|| path.to_string())
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_dynamic_binary_is_told_from_a_static_one() {
        let me = std::fs::read("/proc/self/exe").unwrap();
        assert!(has_interpreter(&me), "test binaries are dynamic");
        assert!(!has_interpreter(b"#!/bin/sh\n"));
    }
}
