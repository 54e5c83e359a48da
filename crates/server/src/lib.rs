//! Cairn's control plane: the store, the engine's loop, the agent and load balancer wiring,
//! and the native and Stratos-compatible REST APIs.
//!
//! The engine decides; this crate persists its state, carries out its actions and serves what
//! it shows. Nothing here decides what runs where.

pub mod api;
mod events;
pub mod platform;
mod routes;
mod tls;

use std::net::SocketAddr;
use std::sync::Arc;

use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;

pub use platform::{Platform, PlatformConfig, PlatformError, Registration};

#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    #[error("{0}")]
    Io(String),
    #[error("store: {0}")]
    Store(String),
    #[error("tls: {0}")]
    Tls(String),
    #[error("cannot listen on {addr}: {reason}")]
    Listen { addr: SocketAddr, reason: String },
}

#[derive(Debug, Clone)]
pub struct ServerConfig {
    pub platform: PlatformConfig,
    /// Where the native API listens (plain HTTP).
    pub api: SocketAddr,
    /// Where the Stratos-compatible API listens (HTTPS with basic auth), if at all.
    pub stratos_api: Option<SocketAddr>,
    pub stratos_user: String,
    pub stratos_password: String,
}

/// A running control plane and the addresses it listens on.
pub struct Server {
    pub platform: Arc<Platform>,
    pub api: SocketAddr,
    pub stratos_api: Option<SocketAddr>,
}

/// Starts everything and returns once every listener is bound.
pub async fn start(config: ServerConfig) -> Result<Server, ServerError> {
    let platform = Platform::start(config.platform.clone()).await?;
    // Everything is bound before anything is served, so a client that reaches one API reaches all.
    let stratos = match config.stratos_api {
        Some(addr) => Some((
            bind(addr).await?,
            tls::server_config(&config.platform.data_dir)?,
        )),
        None => None,
    };
    let api_listener = bind(config.api).await?;
    let api = api_listener.local_addr().unwrap_or(config.api);
    let mut stratos_api = None;
    if let Some((listener, tls)) = stratos {
        stratos_api = listener.local_addr().ok();
        let router = api::stratos::router(
            platform.clone(),
            &config.stratos_user,
            &config.stratos_password,
        );
        tokio::spawn(serve_tls(listener, router, tls));
    }
    let native = api::native::router(platform.clone());
    tokio::spawn(async move {
        if let Err(e) = axum::serve(api_listener, native).await {
            tracing::error!("native API stopped: {e}");
        }
    });
    Ok(Server {
        platform,
        api,
        stratos_api,
    })
}

async fn bind(addr: SocketAddr) -> Result<TcpListener, ServerError> {
    TcpListener::bind(addr)
        .await
        .map_err(|e| ServerError::Listen {
            addr,
            reason: e.to_string(),
        })
}

async fn serve_tls(listener: TcpListener, router: axum::Router, tls: Arc<rustls::ServerConfig>) {
    let acceptor = tokio_rustls::TlsAcceptor::from(tls);
    loop {
        let (stream, peer) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(e) => {
                tracing::warn!("stratos API accept: {e}");
                continue;
            }
        };
        let acceptor = acceptor.clone();
        let service = TowerToHyperService::new(router.clone());
        tokio::spawn(async move {
            let stream = match acceptor.accept(stream).await {
                Ok(stream) => stream,
                Err(e) => {
                    tracing::debug!(%peer, "tls handshake: {e}");
                    return;
                }
            };
            let builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
            if let Err(e) = builder
                .serve_connection(TokioIo::new(stream), service)
                .await
            {
                tracing::debug!(%peer, "stratos API connection: {e}");
            }
        });
    }
}
