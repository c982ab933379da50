//! The helper image: the running drover binary (with the libraries it
//! needs, when it is not static), the certificate authorities drover's
//! machine trusts, and an empty `/tmp`, imported on each host that takes
//! part in a move, snapshot or backup.

use super::*;

/// The image helpers and markers run from: the running drover binary (with
/// the libraries it needs, when it is not static) and an empty `/tmp`.
/// Its files stay open and are read again for each import, so that neither
/// the tag nor an import holds the image in memory (the binary alone is
/// tens of megabytes), and the image is always the binary the tag was made
/// from, even once a newer one replaced it on disk.
#[derive(Clone)]
pub struct HelperImage {
    pub tag: String,
    parts: Arc<Vec<Part>>,
}

enum Part {
    Dir(&'static str, u32),
    File(String, Arc<std::fs::File>),
    Data(String, Vec<u8>),
}

static IMAGE: OnceLock<Result<HelperImage, String>> = OnceLock::new();

/// The helper image for this binary, made once per process. The binary is
/// `$DROVER_HELPER_BINARY` when set, else the running one.
pub fn helper_image() -> Result<HelperImage, String> {
    IMAGE.get_or_init(build_helper_image).clone()
}

impl HelperImage {
    /// The image as a `docker import` tar, made as it is sent, 1 MiB at a
    /// time; a file that cannot be read fails the stream (and so the
    /// import), never ends it short.
    pub fn rootfs(&self) -> crate::docker::RootFs {
        let (tx, rx) = tokio::sync::mpsc::channel::<std::io::Result<Bytes>>(4);
        let parts = Arc::clone(&self.parts);
        tokio::task::spawn_blocking(move || {
            let mut w = std::io::BufWriter::with_capacity(1 << 20, Chunks(tx.clone()));
            let r = write_tar(&parts, &mut w).and_then(|()| std::io::Write::flush(&mut w));
            if let Err(e) = r {
                let _ = tx.blocking_send(Err(e));
            }
        });
        Box::pin(futures_util::stream::unfold(rx, |mut rx| async move {
            rx.recv().await.map(|item| (item, rx))
        }))
    }
}

/// Sends what is written as chunks of the stream.
struct Chunks(tokio::sync::mpsc::Sender<std::io::Result<Bytes>>);

impl std::io::Write for Chunks {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0
            .blocking_send(Ok(Bytes::copy_from_slice(buf)))
            .map_err(|_| std::io::Error::other("the import stopped reading"))?;
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// A file read from its start by position: several imports read it at once.
struct At<'a>(&'a std::fs::File, u64);

impl std::io::Read for At<'_> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        use std::os::unix::fs::FileExt;
        let n = self.0.read_at(buf, self.1)?;
        self.1 += n as u64;
        Ok(n)
    }
}

fn write_tar(parts: &[Part], w: impl std::io::Write) -> std::io::Result<()> {
    let mut tar = tar::Builder::new(w);
    for part in parts {
        let mut h = tar::Header::new_gnu();
        let (name, mode, size, data): (&str, u32, u64, Box<dyn std::io::Read + '_>) = match part {
            Part::Dir(name, mode) => {
                h.set_entry_type(tar::EntryType::Directory);
                (name, *mode, 0, Box::new(std::io::empty()))
            }
            Part::File(name, file) => (name, 0o755, file.metadata()?.len(), Box::new(At(file, 0))),
            Part::Data(name, data) => (name, 0o755, data.len() as u64, Box::new(data.as_slice())),
        };
        h.set_mode(mode);
        h.set_size(size);
        h.set_cksum();
        tar.append_data(&mut h, name, data)?;
    }
    tar.into_inner()?.flush()
}

fn build_helper_image() -> Result<HelperImage, String> {
    let named = std::env::var_os("DROVER_HELPER_BINARY").map(std::path::PathBuf::from);
    let shown = match &named {
        Some(p) => p.clone(),
        None => std::env::current_exe()
            .map_err(|e| format!("cannot find the running binary for the helper image: {e}"))?,
    };
    // The running binary is read through its own link: it stays the one
    // that runs even if a newer one took its name.
    let path = named.unwrap_or_else(|| "/proc/self/exe".into());
    let unreadable =
        |e: std::io::Error| format!("cannot read the helper binary {}: {e}", shown.display());
    let bin = Arc::new(std::fs::File::open(&path).map_err(unreadable)?);
    let mut head = [0u8; 4096];
    let n = std::os::unix::fs::FileExt::read_at(&*bin, &mut head, 0).map_err(unreadable)?;
    let libs = if has_interpreter(&head[..n]) {
        shared_libraries(&shown)?
    } else {
        Vec::new()
    };
    let mut parts = vec![
        Part::Dir("tmp/", 0o1777),
        Part::Dir("data/", 0o755),
        // Mount points of its own, so that the engine adds none to it.
        Part::Dir("source/", 0o755),
        Part::Dir("records/", 0o700),
        Part::File("drover".into(), bin),
    ];
    // The certificate authorities drover's machine trusts: a helper that
    // reaches a repository's store itself checks it as drover would.
    if let Some(certs) = ca_bundle() {
        parts.push(Part::Data(CA_BUNDLE.trim_start_matches('/').into(), certs));
    }
    for lib in libs {
        let f = std::fs::File::open(&lib).map_err(|e| format!("cannot read {lib}: {e}"))?;
        parts.push(Part::File(lib.trim_start_matches('/').into(), Arc::new(f)));
    }
    let mut digest = blake3::Hasher::new();
    write_tar(&parts, &mut digest).map_err(|e| e.to_string())?;
    Ok(HelperImage {
        tag: crate::contract::names::helper_image(&digest.finalize().to_hex().as_str()[..16]),
        parts: Arc::new(parts),
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
        let linked_statically = cfg!(target_feature = "crt-static");
        assert_eq!(has_interpreter(&me), !linked_statically);
        assert!(has_interpreter(&std::fs::read("/bin/sh").unwrap()));
        assert!(!has_interpreter(b"#!/bin/sh\n"));
    }
}
