//! Volume sizes from the engine's disk-usage report (`GET /system/df`),
//! read as raw JSON: its shape changed across API versions (a top-level
//! `Volumes` list up to 1.51, `VolumeUsage.Items` since), and the client
//! library parses only the newest. The engine walks every volume's files
//! to answer, so this is asked only for a plan that moves a volume. It
//! changes nothing on the host.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

/// How an engine is reached.
#[derive(Clone)]
pub enum Route {
    Unix(PathBuf),
    /// `host:port`, plain.
    Tcp(String),
    /// `host:port` with the client configuration of the Cluster's TLS.
    Tls {
        addr: String,
        config: Arc<rustls::ClientConfig>,
    },
}

/// The largest report read.
const REPORT_MAX: u64 = 64 << 20;

/// Each volume's size in bytes, as the engine counts it.
pub async fn volume_sizes(route: &Route, api: &str) -> Result<BTreeMap<String, u64>, String> {
    let request = format!(
        "GET /v{api}/system/df?type=volume HTTP/1.0\r\nHost: docker\r\nConnection: close\r\n\r\n"
    );
    let raw = match route {
        Route::Unix(path) => exchange(tokio::net::UnixStream::connect(path).await, &request).await,
        Route::Tcp(addr) => exchange(tokio::net::TcpStream::connect(addr).await, &request).await,
        Route::Tls { addr, config } => {
            let host = addr.rsplit_once(':').map_or(addr.as_str(), |(h, _)| h);
            let name =
                rustls_pki_types::ServerName::try_from(host.trim_matches(['[', ']']).to_string())
                    .map_err(|e| format!("`{host}` is not a server name: {e}"))?;
            let tcp = tokio::net::TcpStream::connect(addr)
                .await
                .map_err(|e| e.to_string())?;
            let tls = tokio_rustls::TlsConnector::from(Arc::clone(config))
                .connect(name, tcp)
                .await;
            exchange(tls, &request).await
        }
    }?;
    parse(&raw)
}

async fn exchange<S: AsyncRead + AsyncWrite + Unpin>(
    stream: std::io::Result<S>,
    request: &str,
) -> Result<Vec<u8>, String> {
    let mut s = stream.map_err(|e| e.to_string())?;
    s.write_all(request.as_bytes())
        .await
        .map_err(|e| e.to_string())?;
    let mut raw = Vec::new();
    s.take(REPORT_MAX + 1)
        .read_to_end(&mut raw)
        .await
        .map_err(|e| e.to_string())?;
    if raw.len() as u64 > REPORT_MAX {
        return Err("the disk-usage report is larger than 64 MiB".into());
    }
    Ok(raw)
}

/// Reads an HTTP/1.0 response holding the report.
fn parse(raw: &[u8]) -> Result<BTreeMap<String, u64>, String> {
    let split = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .ok_or("the engine's answer has no body")?;
    let head = String::from_utf8_lossy(&raw[..split]);
    let status = head.split_whitespace().nth(1).unwrap_or("");
    if status != "200" {
        return Err(format!(
            "the engine answered `{}`",
            head.lines().next().unwrap_or("")
        ));
    }
    let v: serde_json::Value = serde_json::from_slice(&raw[split + 4..])
        .map_err(|e| format!("the disk-usage report is not JSON: {e}"))?;
    let items = v["Volumes"]
        .as_array()
        .or_else(|| v["VolumeUsage"]["Items"].as_array());
    Ok(items
        .into_iter()
        .flatten()
        .filter_map(|i| {
            let size = i["UsageData"]["Size"].as_i64()?;
            Some((i["Name"].as_str()?.to_string(), u64::try_from(size).ok()?))
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn both_shapes_of_the_report_are_read_and_unknown_sizes_left_out() {
        let old = b"HTTP/1.0 200 OK\r\nContent-Type: application/json\r\n\r\n{\"Volumes\":[{\"Name\":\"a\",\"UsageData\":{\"Size\":42,\"RefCount\":1}},{\"Name\":\"b\",\"UsageData\":{\"Size\":-1}}]}";
        assert_eq!(parse(old).unwrap(), BTreeMap::from([("a".to_string(), 42)]));
        let new = b"HTTP/1.1 200 OK\r\n\r\n{\"VolumeUsage\":{\"Items\":[{\"Name\":\"c\",\"UsageData\":{\"Size\":7}}]}}";
        assert_eq!(parse(new).unwrap(), BTreeMap::from([("c".to_string(), 7)]));
        let refused = b"HTTP/1.0 500 Internal Server Error\r\n\r\n{}";
        assert!(parse(refused).unwrap_err().contains("500"));
    }
}
