//! The daemon's HTTP/1.1 + JSON API on a unix socket, curl-able like the Docker
//! Engine API; each connection carries its peer's credentials (SO_PEERCRED).

use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::connect_info::{ConnectInfo, Connected};
use axum::extract::{DefaultBodyLimit, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::serve::IncomingStream;
use axum::{Json, Router};
use serde::de::DeserializeOwned;
use serde::Serialize;
use tokio::net::UnixListener;

use crate::daemon::{Daemon, Peer};
use crate::wire::{self, ApiError, ErrorCode};

#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    #[error("{path}: {source}")]
    Socket {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("another daemon is already serving {0}")]
    InUse(PathBuf),
}

/// The peer of one connection. Credentials are always there on a unix socket; the
/// `Option` only covers a failed getsockopt, which is refused.
#[derive(Debug, Clone, Copy)]
struct PeerInfo(Option<Peer>);

impl Connected<IncomingStream<'_, UnixListener>> for PeerInfo {
    fn connect_info(stream: IncomingStream<'_, UnixListener>) -> Self {
        PeerInfo(stream.io().peer_cred().ok().map(|c| {
            Peer {
                uid: c.uid(),
                // 0 or absent: the peer's pid is not visible in our pid namespace.
                pid: c
                    .pid()
                    .and_then(|p| u32::try_from(p).ok())
                    .filter(|&p| p > 0),
            }
        }))
    }
}

/// Binds the socket (0600, parent directory created 0700), refusing to take over
/// one another daemon still answers on.
pub fn bind(path: &Path) -> Result<UnixListener, ServerError> {
    let io_err = |source| ServerError::Socket {
        path: path.to_owned(),
        source,
    };
    if let Some(dir) = path.parent() {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .map_err(io_err)?;
    }
    if std::os::unix::net::UnixStream::connect(path).is_ok() {
        return Err(ServerError::InUse(path.to_owned()));
    }
    match std::fs::remove_file(path) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(io_err(e)),
        _ => {}
    }
    let listener = UnixListener::bind(path).map_err(io_err)?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).map_err(io_err)?;
    Ok(listener)
}

/// Serves until `shutdown` resolves, then finishes the requests in flight.
pub async fn serve(
    listener: UnixListener,
    daemon: Arc<Daemon>,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let app = Router::new()
        .route(wire::MOUNTS, post(mount).get(mounts))
        .route(wire::UNMOUNTS, post(unmount))
        .route(wire::STATUS, get(status))
        .route(wire::RUN, post(run))
        .layer(DefaultBodyLimit::max(wire::MAX_BODY))
        .with_state(daemon);
    axum::serve(
        listener,
        app.into_make_service_with_connect_info::<PeerInfo>(),
    )
    .with_graceful_shutdown(shutdown)
    .await
}

/// A JSON answer, or an `ApiError` with its HTTP status.
struct Answer(Result<serde_json::Value, ApiError>);

impl<T: Serialize> From<Result<T, ApiError>> for Answer {
    fn from(r: Result<T, ApiError>) -> Self {
        Answer(r.and_then(|v| {
            serde_json::to_value(v).map_err(|e| ApiError::new(ErrorCode::Internal, e.to_string()))
        }))
    }
}

impl IntoResponse for Answer {
    fn into_response(self) -> Response {
        match self.0 {
            Ok(value) => Json(value).into_response(),
            Err(e) => {
                let status = StatusCode::from_u16(e.code.http_status())
                    .unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
                (status, Json(e)).into_response()
            }
        }
    }
}

fn peer(info: PeerInfo) -> Result<Peer, ApiError> {
    info.0.ok_or_else(|| {
        ApiError::new(
            ErrorCode::Forbidden,
            "the peer's credentials cannot be read",
        )
    })
}

/// Parses a body, naming the field that is wrong.
fn body<T: DeserializeOwned>(bytes: &Bytes) -> Result<T, ApiError> {
    serde_json::from_slice(bytes)
        .map_err(|e| ApiError::new(ErrorCode::BadRequest, format!("invalid request body: {e}")))
}

async fn mount(
    State(d): State<Arc<Daemon>>,
    ConnectInfo(info): ConnectInfo<PeerInfo>,
    bytes: Bytes,
) -> Answer {
    let r = async { d.mount(peer(info)?, body(&bytes)?).await };
    r.await.into()
}

async fn unmount(
    State(d): State<Arc<Daemon>>,
    ConnectInfo(info): ConnectInfo<PeerInfo>,
    bytes: Bytes,
) -> Answer {
    let r = async { d.unmount(peer(info)?, body(&bytes)?).await };
    r.await.into()
}

async fn mounts(State(d): State<Arc<Daemon>>) -> Answer {
    Ok::<_, ApiError>(d.mounts()).into()
}

async fn status(State(d): State<Arc<Daemon>>) -> Answer {
    Ok::<_, ApiError>(d.status()).into()
}

async fn run() -> Answer {
    Err::<(), _>(ApiError::new(
        ErrorCode::NotImplemented,
        "/v1/run needs volume-client containers, which this daemon has none of",
    ))
    .into()
}
