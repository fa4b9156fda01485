//! Binding a server's port: the first thing `tractor serve` and
//! `tractor route` do, so that a taken port stops them with its address.

use std::net::SocketAddr;

use tokio::net::TcpListener;

/// A port that could not be bound.
#[derive(Debug, thiserror::Error)]
#[error("cannot listen on {addr}: {source}")]
pub struct BindError {
    pub addr: SocketAddr,
    #[source]
    pub source: std::io::Error,
}

/// Binds `addr` for an HTTP server.
///
/// # Errors
/// The operating system refusing the address (taken, not ours, no permission).
pub async fn bind(addr: SocketAddr) -> Result<TcpListener, BindError> {
    TcpListener::bind(addr).await.map_err(|source| BindError { addr, source })
}
