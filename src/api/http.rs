//! HTTP/1.1 + JSON on a unix socket, curl-able like the Docker Engine API, shared by
//! the daemon and the agent: binding, peer credentials (SO_PEERCRED), JSON answers.

use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::path::{Path, PathBuf};

use axum::body::Bytes;
use axum::extract::connect_info::Connected;
use axum::extract::DefaultBodyLimit;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::serve::IncomingStream;
use axum::{Json, Router};
use serde::de::DeserializeOwned;
use serde::Serialize;
use tokio::net::UnixListener;

use crate::api::wire::Peer;
use crate::api::wire::{self, ApiError, ErrorCode};

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
pub struct PeerInfo(Option<Peer>);

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

/// A JSON answer, or an `ApiError` with its HTTP status.
pub struct Answer(Result<serde_json::Value, ApiError>);

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

pub fn peer(info: PeerInfo) -> Result<Peer, ApiError> {
    info.0.ok_or_else(|| {
        ApiError::new(
            ErrorCode::Forbidden,
            "the peer's credentials cannot be read",
        )
    })
}

/// Parses a body, naming the field that is wrong.
pub fn body<T: DeserializeOwned>(bytes: &Bytes) -> Result<T, ApiError> {
    serde_json::from_slice(bytes)
        .map_err(|e| ApiError::new(ErrorCode::BadRequest, format!("invalid request body: {e}")))
}

/// Serves `app` until `shutdown` resolves, then finishes the requests in flight.
pub async fn serve(
    listener: UnixListener,
    app: Router,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let app = app.layer(DefaultBodyLimit::max(wire::MAX_BODY));
    axum::serve(
        listener,
        app.into_make_service_with_connect_info::<PeerInfo>(),
    )
    .with_graceful_shutdown(shutdown)
    .await
}
