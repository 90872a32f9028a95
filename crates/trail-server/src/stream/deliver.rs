//! Sending to a destination: the TLS configuration (system roots plus an optional private CA), webhook
//! signing, and the three transports. A send either is acknowledged by the receiver (HTTP 2xx; for
//! syslog, written and found still connected before the next send, see [`Syslog`]) or fails with a
//! reason that names the receiver's answer, never a secret.

use std::io::BufReader;
use std::sync::Arc;
use std::time::Duration;

use futures_util::FutureExt;
use hmac::{Hmac, Mac};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, ServerName};
use sha2::Sha256;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use super::config::{DestinationConfig, Kind};

/// How long a receiver may take to connect and answer one batch.
pub const SEND_TIMEOUT: Duration = Duration::from_secs(30);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// The certificates of a PEM CA bundle; an error when there are none or one is malformed.
pub fn parse_ca(pem: &str) -> Result<Vec<CertificateDer<'static>>, String> {
    let certs: Vec<_> = CertificateDer::pem_reader_iter(&mut BufReader::new(pem.as_bytes()))
        .collect::<Result<_, _>>()
        .map_err(|e| format!("ca_pem is not PEM certificates: {e}"))?;
    if certs.is_empty() {
        return Err("ca_pem holds no certificate (-----BEGIN CERTIFICATE-----)".into());
    }
    Ok(certs)
}

/// The TLS client configuration for a destination: the system's roots and the destination's own CA,
/// certificates verified, TLS 1.2 or 1.3, ring as the crypto provider.
pub fn tls_config(ca_pem: Option<&str>) -> Result<Arc<rustls::ClientConfig>, String> {
    let mut roots = rustls::RootCertStore::empty();
    let native = rustls_native_certs::load_native_certs();
    roots.add_parsable_certificates(native.certs);
    if let Some(pem) = ca_pem {
        for cert in parse_ca(pem)? {
            roots.add(cert).map_err(|e| format!("ca_pem: {e}"))?;
        }
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(Arc::new(config))
}

/// `v1=` and the hex HMAC-SHA256 of `"{timestamp}.{body}"` under the destination's secret: the
/// `Trail-Signature` header (README shows the receiver's check).
pub fn sign(secret: &str, timestamp: u64, body: &[u8]) -> String {
    // HMAC takes a key of any length.
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).unwrap_or_else(|_| unreachable!());
    mac.update(timestamp.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    format!("v1={}", hex::encode(mac.finalize().into_bytes()))
}

/// An open way to a destination.
pub enum Transport {
    Http { client: reqwest::Client, url: String, kind: Kind, secret: String },
    Syslog(Syslog),
}

impl std::fmt::Debug for Transport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Transport::Http { url, kind, .. } => write!(f, "{} {url}", kind.as_str()),
            Transport::Syslog(s) => write!(f, "syslog {}", s.address),
        }
    }
}

impl Transport {
    /// `secret` is the webhook's signing secret or the HEC token (empty for syslog).
    pub fn new(cfg: &DestinationConfig, secret: String) -> Result<Self, String> {
        let tls = tls_config(cfg.ca_pem.as_deref())?;
        match cfg.kind {
            Kind::Webhook | Kind::SplunkHec => {
                let client = reqwest::Client::builder()
                    .use_preconfigured_tls(Arc::unwrap_or_clone(tls))
                    .connect_timeout(CONNECT_TIMEOUT)
                    .timeout(SEND_TIMEOUT)
                    .redirect(reqwest::redirect::Policy::none())
                    .user_agent(concat!("trail/", env!("CARGO_PKG_VERSION")))
                    .build()
                    .map_err(|e| format!("cannot build the HTTP client: {e}"))?;
                Ok(Transport::Http {
                    client,
                    url: cfg.url.clone().unwrap_or_default(),
                    kind: cfg.kind,
                    secret,
                })
            }
            Kind::Syslog => Ok(Transport::Syslog(Syslog {
                address: cfg.address.clone().unwrap_or_default(),
                tls: cfg.tls.then_some(tls),
                conn: None,
            })),
        }
    }

    /// POSTs a webhook batch or HEC events; `body` is the whole request body.
    pub async fn post(&mut self, body: Vec<u8>, batch_label: &str) -> Result<(), String> {
        let Transport::Http { client, url, kind, secret } = self else {
            return Err("not an HTTP destination".into());
        };
        let mut req = client.post(url.as_str()).header("content-type", "application/json");
        match kind {
            Kind::Webhook => {
                let ts = std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map_or(0, |d| d.as_secs());
                req = req
                    .header("trail-timestamp", ts.to_string())
                    .header("trail-signature", sign(secret, ts, &body))
                    .header("trail-batch", batch_label);
            }
            _ => req = req.header("authorization", format!("Splunk {secret}")),
        }
        let resp = req.body(body).send().await.map_err(|e| describe_reqwest(&e))?;
        let status = resp.status();
        if status.is_success() {
            return Ok(());
        }
        let text = resp.text().await.unwrap_or_default();
        let text: String = text.chars().filter(|c| !c.is_control()).take(200).collect();
        Err(format!(
            "the receiver answered HTTP {}{}",
            status.as_u16(),
            if text.is_empty() { String::new() } else { format!(": {text}") }
        ))
    }
}

/// What went wrong, with the causes reqwest nests (a TLS failure is several levels down).
fn describe_reqwest(e: &reqwest::Error) -> String {
    let what = if e.is_timeout() {
        "timed out"
    } else if e.is_connect() {
        "cannot connect"
    } else {
        "request failed"
    };
    format!("{what}{}", crate::error::causes(std::error::Error::source(e)))
}

/// A syslog collector over TCP, or TCP+TLS. TCP has no acknowledgement of its own: lines count as
/// delivered once written, flushed, and the connection is found still open when the next batch is
/// due (the caller commits one batch behind, [`Syslog::alive`]); a collector that goes away in between
/// gets that batch again on the next connection.
pub struct Syslog {
    pub address: String,
    tls: Option<Arc<rustls::ClientConfig>>,
    conn: Option<Conn>,
}

impl std::fmt::Debug for Syslog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Syslog").field("address", &self.address).field("tls", &self.tls.is_some()).finish()
    }
}

enum Conn {
    Plain(TcpStream),
    Tls(Box<tokio_rustls::client::TlsStream<TcpStream>>),
}

impl Syslog {
    async fn connect(&mut self) -> Result<&mut Conn, String> {
        if self.conn.is_none() {
            let tcp = tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(&self.address))
                .await
                .map_err(|_| format!("cannot connect to {}: timed out", self.address))?
                .map_err(|e| format!("cannot connect to {}: {e}", self.address))?;
            let _ = tcp.set_nodelay(true);
            let conn = match &self.tls {
                None => Conn::Plain(tcp),
                Some(cfg) => {
                    let host = self.address.rsplit_once(':').map_or(self.address.as_str(), |(h, _)| h);
                    let host = host.trim_start_matches('[').trim_end_matches(']');
                    let name = ServerName::try_from(host.to_string())
                        .map_err(|e| format!("{host} is not a TLS server name: {e}"))?;
                    let tls = tokio_rustls::TlsConnector::from(cfg.clone())
                        .connect(name, tcp)
                        .await
                        .map_err(|e| format!("TLS with {} failed: {e}", self.address))?;
                    Conn::Tls(Box::new(tls))
                }
            };
            self.conn = Some(conn);
        }
        self.conn.as_mut().ok_or_else(|| "not connected".to_string())
    }

    /// Writes framed messages and flushes; on failure the connection is dropped.
    pub async fn send(&mut self, bytes: &[u8]) -> Result<(), String> {
        let conn = self.connect().await?;
        let written = tokio::time::timeout(SEND_TIMEOUT, async {
            match conn {
                Conn::Plain(s) => {
                    s.write_all(bytes).await?;
                    s.flush().await
                }
                Conn::Tls(s) => {
                    s.write_all(bytes).await?;
                    s.flush().await
                }
            }
        })
        .await;
        match written {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => {
                self.conn = None;
                Err(format!("writing to {} failed: {e}", self.address))
            }
            Err(_) => {
                self.conn = None;
                Err(format!("writing to {} timed out", self.address))
            }
        }
    }

    /// Whether the collector still holds the connection (nothing to read, no end of stream). A closed
    /// connection is dropped, so the next send reconnects.
    pub fn alive(&mut self) -> bool {
        let mut buf = [0u8; 512];
        let polled = match self.conn.as_mut() {
            None => return false,
            Some(Conn::Plain(s)) => s.read(&mut buf).now_or_never(),
            Some(Conn::Tls(s)) => s.read(&mut buf).now_or_never(),
        };
        let alive = matches!(polled, None | Some(Ok(1..)));
        if !alive {
            self.conn = None;
        }
        alive
    }

    pub fn disconnect(&mut self) {
        self.conn = None;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signature_is_hmac_sha256_of_timestamp_dot_body() {
        // Computed independently: printf '1700000000.{"a":1}' | openssl dgst -sha256 -hmac whsec_test
        assert_eq!(
            sign("whsec_test", 1_700_000_000, br#"{"a":1}"#),
            "v1=38877139021993b830af32feea6e18a8da83eb2f6e49ee50bd9e4cf4ca4d3789"
        );
    }

    #[test]
    fn a_ca_must_hold_a_certificate() {
        assert!(parse_ca("not pem").is_err());
        assert!(parse_ca("").is_err());
    }
}
