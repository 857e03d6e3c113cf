//! One connection to APNs: TCP, TLS (rustls, ring) with ALPN `h2`, HTTP/2.
//!
//! h2 speaks tokio's IO traits; tokio-util's `compat` adapts the
//! smol/futures-io TLS stream to them, so no tokio runtime is involved.

use std::fmt;
use std::net::TcpStream;
use std::sync::Arc;

use async_io::Async;
use bytes::Bytes;
use futures_rustls::client::TlsStream;
use rustls::client::ResolvesClientCert;
use rustls::pki_types::{CertificateDer, ServerName};
use rustls::sign::CertifiedKey;
use rustls::{ClientConfig, RootCertStore, SignatureScheme};
use tokio_util::compat::{Compat, FuturesAsyncReadCompatExt};

use crate::net::TcpConnectError;

/// The HTTP/2 connection future; it must be polled for the connection to work.
pub type Driver = h2::client::Connection<Compat<TlsStream<Async<TcpStream>>>, Bytes>;

/// Why connecting failed.
#[derive(Debug)]
pub enum ConnectError {
    Tcp(TcpConnectError),
    Tls(std::io::Error),
    NoH2,
    Http2(h2::Error),
    BadServerName(String),
    TlsConfig(rustls::Error),
}

impl fmt::Display for ConnectError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ConnectError::Tcp(e) => e.fmt(f),
            ConnectError::Tls(e) => write!(f, "TLS handshake: {e}"),
            ConnectError::NoH2 => f.write_str("server did not agree to HTTP/2 (ALPN h2)"),
            ConnectError::Http2(e) => write!(f, "HTTP/2 handshake: {e}"),
            ConnectError::BadServerName(host) => write!(f, "`{host}` is not a valid server name"),
            ConnectError::TlsConfig(e) => write!(f, "TLS configuration: {e}"),
        }
    }
}

impl std::error::Error for ConnectError {}

/// Presents the identity's certificate whatever the server hints.
#[derive(Debug)]
struct ClientCertificate(Arc<CertifiedKey>);

impl ResolvesClientCert for ClientCertificate {
    fn resolve(&self, _hints: &[&[u8]], _schemes: &[SignatureScheme]) -> Option<Arc<CertifiedKey>> {
        Some(Arc::clone(&self.0))
    }

    fn has_certs(&self) -> bool {
        true
    }
}

/// The public web PKI plus an optional extra anchor (a test or proxy CA).
pub fn root_store(extra: &[CertificateDer<'static>]) -> RootCertStore {
    let mut roots = RootCertStore {
        roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
    };
    let (_added, _ignored) = roots.add_parsable_certificates(extra.iter().cloned());
    roots
}

/// TLS settings for one identity: ring only, ALPN h2, client cert if any.
pub fn tls_config(
    roots: Arc<RootCertStore>,
    client_cert: Option<Arc<CertifiedKey>>,
) -> Result<Arc<ClientConfig>, ConnectError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(ConnectError::TlsConfig)?
        .with_root_certificates(roots);
    let mut config = match client_cert {
        Some(key) => builder.with_client_cert_resolver(Arc::new(ClientCertificate(key))),
        None => builder.with_no_client_auth(),
    };
    config.alpn_protocols = vec![b"h2".to_vec()];
    Ok(Arc::new(config))
}

/// Resolves `host`, connects, and completes TLS and the HTTP/2 handshake.
pub async fn connect(
    host: &str,
    port: u16,
    tls: Arc<ClientConfig>,
) -> Result<(h2::client::SendRequest<Bytes>, Driver), ConnectError> {
    let server_name = ServerName::try_from(host.to_owned())
        .map_err(|_| ConnectError::BadServerName(host.to_owned()))?;
    let tcp = crate::net::connect(host, port)
        .await
        .map_err(ConnectError::Tcp)?;
    let _ = tcp.get_ref().set_nodelay(true);
    let tls_stream = futures_rustls::TlsConnector::from(tls)
        .connect(server_name, tcp)
        .await
        .map_err(ConnectError::Tls)?;
    if tls_stream.get_ref().1.alpn_protocol() != Some(b"h2") {
        return Err(ConnectError::NoH2);
    }
    let (send, driver) = h2::client::Builder::new()
        .enable_push(false)
        .handshake(tls_stream.compat())
        .await
        .map_err(ConnectError::Http2)?;
    Ok((send, driver))
}
