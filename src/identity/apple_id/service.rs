//! HTTPS to Apple's certificate service: one POST, one answer.
//!
//! The service speaks plain HTTP/1.1 over TLS; one request every few
//! months does not justify an HTTP client crate. The request carries the
//! headers macOS Server sent (protocols.md section 4), `Connection: close`,
//! and the answer is read up to a size bound within a time bound.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use futures_lite::{AsyncReadExt, AsyncWriteExt};
use rustls::pki_types::ServerName;
use rustls::{ClientConfig, RootCertStore};

use crate::clock::within;
use crate::config::HttpsUrl;
use crate::net::TcpConnectError;

/// `User-Agent` of macOS Server's servermgrd, which the service expects.
pub const USER_AGENT: &str = "Servermgrd%20Plugin/6.0 CFNetwork/811.11 Darwin/16.7.0 (x86_64)";

/// First certificates, or the renewal of stored ones.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Endpoint {
    New,
    Renew,
}

impl Endpoint {
    pub fn path(self) -> &'static str {
        match self {
            Endpoint::New => "/new",
            Endpoint::Renew => "/renew",
        }
    }
}

/// The HTTP answer.
#[derive(Debug)]
pub struct Answer {
    pub status: u16,
    pub body: Vec<u8>,
}

/// Why no answer was read.
#[derive(Debug)]
pub enum ServiceError {
    Connect(TcpConnectError),
    Tls(std::io::Error),
    Io(std::io::Error),
    Timeout(Duration),
    TooLarge(usize),
    BadResponse(String),
}

impl fmt::Display for ServiceError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ServiceError::Connect(e) => e.fmt(f),
            ServiceError::Tls(e) => write!(f, "TLS: {e}"),
            ServiceError::Io(e) => write!(f, "connection failed: {e}"),
            ServiceError::Timeout(t) => write!(f, "no complete answer within {t:?}"),
            ServiceError::TooLarge(max) => write!(f, "answer larger than {max} bytes"),
            ServiceError::BadResponse(why) => write!(f, "malformed HTTP answer: {why}"),
        }
    }
}

impl std::error::Error for ServiceError {}

/// TLS settings for the service: ring, the web PKI (plus `apns_ca_file`).
pub fn tls_config(roots: RootCertStore) -> Result<Arc<ClientConfig>, rustls::Error> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// The request bytes: head and body.
pub fn request_bytes(url: &HttpsUrl, endpoint: Endpoint, body: &[u8]) -> Vec<u8> {
    let host = if url.port == 443 {
        url.host.clone()
    } else {
        format!("{}:{}", url.host, url.port)
    };
    let mut out = format!(
        "POST {}{} HTTP/1.1\r\nHost: {host}\r\nContent-Type: text/x-xml-plist\r\n\
         User-Agent: {USER_AGENT}\r\nAccept: */*\r\nAccept-Language: en-us\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n",
        url.path.trim_end_matches('/'),
        endpoint.path(),
        body.len()
    )
    .into_bytes();
    out.extend_from_slice(body);
    out
}

/// POSTs `body` and reads the answer, all within `timeout`.
pub async fn post(
    url: &HttpsUrl,
    endpoint: Endpoint,
    body: &[u8],
    tls: Arc<ClientConfig>,
    timeout: Duration,
    max_answer: usize,
) -> Result<Answer, ServiceError> {
    within(timeout, exchange(url, endpoint, body, tls, max_answer))
        .await
        .unwrap_or(Err(ServiceError::Timeout(timeout)))
}

async fn exchange(
    url: &HttpsUrl,
    endpoint: Endpoint,
    body: &[u8],
    tls: Arc<ClientConfig>,
    max_answer: usize,
) -> Result<Answer, ServiceError> {
    let tcp = crate::net::connect(&url.host, url.port)
        .await
        .map_err(ServiceError::Connect)?;
    let name = ServerName::try_from(url.host.clone())
        .map_err(|_| ServiceError::BadResponse(format!("`{}` is not a server name", url.host)))?;
    let mut stream = futures_rustls::TlsConnector::from(tls)
        .connect(name, tcp)
        .await
        .map_err(ServiceError::Tls)?;
    stream
        .write_all(&request_bytes(url, endpoint, body))
        .await
        .map_err(ServiceError::Io)?;
    stream.flush().await.map_err(ServiceError::Io)?;
    let mut received = Vec::new();
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        let n = match stream.read(&mut buf).await {
            Ok(n) => n,
            // A server that closes without TLS close_notify: what arrived counts.
            Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => 0,
            Err(e) => return Err(ServiceError::Io(e)),
        };
        if n == 0 {
            break;
        }
        received.extend_from_slice(&buf[..n]);
        if received.len() > max_answer {
            return Err(ServiceError::TooLarge(max_answer));
        }
        if let Ok(Some(answer)) = parse_answer(&received, false) {
            return Ok(answer);
        }
    }
    match parse_answer(&received, true)? {
        Some(answer) => Ok(answer),
        None => Err(ServiceError::BadResponse(
            "connection closed mid-answer".into(),
        )),
    }
}

/// Parses an HTTP/1.1 answer once it is complete; `Ok(None)` while more is
/// needed. At `eof` a body without length runs to the end.
pub fn parse_answer(bytes: &[u8], eof: bool) -> Result<Option<Answer>, ServiceError> {
    let mut headers = [httparse::EMPTY_HEADER; 32];
    let mut response = httparse::Response::new(&mut headers);
    let head_len = match response.parse(bytes) {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(e) => return Err(ServiceError::BadResponse(e.to_string())),
    };
    let status = response.code.unwrap_or(0);
    let header = |name: &str| {
        response
            .headers
            .iter()
            .find(|h| h.name.eq_ignore_ascii_case(name))
            .map(|h| String::from_utf8_lossy(h.value).trim().to_ascii_lowercase())
    };
    let rest = &bytes[head_len..];
    if header("transfer-encoding").is_some_and(|v| v.contains("chunked")) {
        return Ok(dechunk(rest)?.map(|body| Answer { status, body }));
    }
    if let Some(length) = header("content-length") {
        let length: usize = length
            .parse()
            .map_err(|_| ServiceError::BadResponse(format!("Content-Length `{length}`")))?;
        if rest.len() < length {
            return if eof {
                Err(ServiceError::BadResponse(
                    "body shorter than Content-Length".into(),
                ))
            } else {
                Ok(None)
            };
        }
        return Ok(Some(Answer {
            status,
            body: rest[..length].to_vec(),
        }));
    }
    Ok(eof.then(|| Answer {
        status,
        body: rest.to_vec(),
    }))
}

/// Decodes a chunked body; `Ok(None)` until the last chunk has arrived.
fn dechunk(mut rest: &[u8]) -> Result<Option<Vec<u8>>, ServiceError> {
    let bad = |why: &str| ServiceError::BadResponse(format!("chunked body: {why}"));
    let mut body = Vec::new();
    loop {
        let Some(line_end) = rest.windows(2).position(|w| w == b"\r\n") else {
            return Ok(None);
        };
        let line = std::str::from_utf8(&rest[..line_end]).map_err(|_| bad("size line"))?;
        let size_text = line.split(';').next().unwrap_or("").trim();
        let size = usize::from_str_radix(size_text, 16).map_err(|_| bad("size"))?;
        rest = &rest[line_end + 2..];
        if size == 0 {
            return Ok(Some(body));
        }
        if rest.len() < size.saturating_add(2) {
            return Ok(None);
        }
        body.extend_from_slice(&rest[..size]);
        if &rest[size..size + 2] != b"\r\n" {
            return Err(bad("chunk not followed by CRLF"));
        }
        rest = &rest[size + 2..];
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_has_the_headers_macos_server_sent() {
        let url = HttpsUrl::parse("https://identity.apple.com/pushcert/caservice").unwrap();
        let bytes = request_bytes(&url, Endpoint::Renew, b"<plist/>");
        let text = String::from_utf8(bytes).unwrap();
        assert!(text.starts_with(
            "POST /pushcert/caservice/renew HTTP/1.1\r\nHost: identity.apple.com\r\n"
        ));
        for header in [
            "Content-Type: text/x-xml-plist\r\n",
            "User-Agent: Servermgrd%20Plugin/6.0 CFNetwork/811.11 Darwin/16.7.0 (x86_64)\r\n",
            "Accept: */*\r\n",
            "Accept-Language: en-us\r\n",
            "Content-Length: 8\r\n",
        ] {
            assert!(text.contains(header), "{header}");
        }
        assert!(text.ends_with("\r\n\r\n<plist/>"));
    }

    #[test]
    fn answers_by_length_chunks_or_close() {
        let a = parse_answer(b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\nabc", false)
            .unwrap()
            .unwrap();
        assert_eq!((a.status, &a.body[..]), (200, &b"abc"[..]));
        assert!(
            parse_answer(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nabc", false)
                .unwrap()
                .is_none()
        );
        assert!(parse_answer(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nabc", true).is_err());
        let chunked = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n2;x\r\nde\r\n0\r\n\r\n";
        assert_eq!(
            parse_answer(chunked, false).unwrap().unwrap().body,
            b"abcde"
        );
        assert!(parse_answer(&chunked[..50], false).unwrap().is_none());
        let closed = parse_answer(b"HTTP/1.1 500 Oops\r\n\r\nbody", true)
            .unwrap()
            .unwrap();
        assert_eq!((closed.status, &closed.body[..]), (500, &b"body"[..]));
        for bad in [
            &b"garbage\r\n\r\n"[..],
            b"HTTP/1.1 200 OK\r\nContent-Length: x\r\n\r\n",
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n1\r\nabc",
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nffffffffffffffffff\r\n",
        ] {
            assert!(parse_answer(bad, true).is_err() || parse_answer(bad, true).unwrap().is_none());
        }
    }
}
