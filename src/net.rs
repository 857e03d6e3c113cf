//! Outgoing TCP connections, for APNs and Apple's certificate service.
//!
//! Name lookup (getaddrinfo) blocks, so it runs on the blocking pool rather
//! than stalling the executor; then each address is tried in turn, as a
//! host with an IPv6 address but no IPv6 route still has its IPv4 one.

use std::fmt;
use std::net::{SocketAddr, TcpStream, ToSocketAddrs};

use async_io::Async;

/// Why no TCP connection could be made.
#[derive(Debug)]
pub enum TcpConnectError {
    Resolve(String, std::io::Error),
    NoAddress(String),
    /// The last address tried, and why it failed.
    Connect(SocketAddr, std::io::Error),
}

impl fmt::Display for TcpConnectError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TcpConnectError::Resolve(target, e) => write!(f, "cannot resolve {target}: {e}"),
            TcpConnectError::NoAddress(target) => write!(f, "{target} resolves to no address"),
            TcpConnectError::Connect(addr, e) => write!(f, "TCP connect to {addr}: {e}"),
        }
    }
}

impl std::error::Error for TcpConnectError {}

/// Connects to the first address of `host:port` that accepts.
pub async fn connect(host: &str, port: u16) -> Result<Async<TcpStream>, TcpConnectError> {
    let target = format!("{host}:{port}");
    let addrs: Vec<SocketAddr> = {
        let lookup = target.clone();
        blocking::unblock(move || lookup.to_socket_addrs().map(Iterator::collect))
            .await
            .map_err(|e| TcpConnectError::Resolve(target.clone(), e))?
    };
    let mut last = TcpConnectError::NoAddress(target);
    for addr in addrs {
        match Async::<TcpStream>::connect(addr).await {
            Ok(stream) => return Ok(stream),
            Err(e) => last = TcpConnectError::Connect(addr, e),
        }
    }
    Err(last)
}
