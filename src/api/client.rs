//! The daemon's client: one HTTP/1.1 request over the unix socket, with a deadline,
//! for the mount helpers and the command line.

use std::path::PathBuf;
use std::time::Duration;

use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper::{Method, Request};
use hyper_util::rt::TokioIo;
use serde::de::DeserializeOwned;
use serde::Serialize;
use tokio::net::UnixStream;

use crate::api::wire::ApiError;

/// Where the daemon listens unless told otherwise (`SIDEMOUNT_SOCKET`, `--socket`).
pub const DEFAULT_SOCKET: &str = "/run/sidemount/sidemount.sock";

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The io error is in the message, not a source: a chain would print it twice.
    #[error("cannot reach the {peer} at {socket}: {error}{hint}")]
    Connect {
        peer: String,
        socket: PathBuf,
        error: std::io::Error,
        hint: &'static str,
    },
    #[error("the {peer} at {socket} did not answer within {after:?}")]
    Timeout {
        peer: String,
        socket: PathBuf,
        after: Duration,
    },
    #[error("talking to the {peer} at {socket}: {reason}")]
    Protocol {
        peer: String,
        socket: PathBuf,
        reason: String,
    },
    #[error(transparent)]
    Api(#[from] ApiError),
}

pub struct Client {
    socket: PathBuf,
    timeout: Duration,
    /// Who answers on the socket, for messages.
    peer: String,
    /// What to check when it cannot be reached.
    hint: &'static str,
}

impl Client {
    /// A client of the node daemon, or of an agent when `socket` is one
    /// (`<dir>/agents/NAME.sock`), named so in errors.
    pub fn new(socket: impl Into<PathBuf>, timeout: Duration) -> Self {
        let socket: PathBuf = socket.into();
        let agent = socket.parent().and_then(|d| d.file_name()) == Some("agents".as_ref());
        let (peer, hint) = match agent {
            true => (
                "sidemount agent",
                " (is the VCS container that runs it up?)",
            ),
            false => (
                "sidemount daemon",
                " (is `sidemount serve` running, and is its socket shared with this container?)",
            ),
        };
        Client {
            socket,
            timeout,
            peer: peer.into(),
            hint,
        }
    }

    /// A client of another server that speaks the same API (an agent).
    pub fn of(peer: impl Into<String>, socket: impl Into<PathBuf>, timeout: Duration) -> Self {
        Client {
            peer: peer.into(),
            hint: "",
            ..Client::new(socket, timeout)
        }
    }

    pub fn socket(&self) -> &std::path::Path {
        &self.socket
    }

    /// The socket from `SIDEMOUNT_SOCKET`, else the default.
    pub fn socket_from_env() -> PathBuf {
        std::env::var_os("SIDEMOUNT_SOCKET")
            .map(PathBuf::from)
            .unwrap_or_else(|| PathBuf::from(DEFAULT_SOCKET))
    }

    pub async fn get<T: DeserializeOwned>(&self, path: &str) -> Result<T, ClientError> {
        self.call(Method::GET, path, Bytes::new()).await
    }

    pub async fn post<B: Serialize, T: DeserializeOwned>(
        &self,
        path: &str,
        body: &B,
    ) -> Result<T, ClientError> {
        let bytes = serde_json::to_vec(body).map_err(|e| self.protocol(e))?;
        self.call(Method::POST, path, Bytes::from(bytes)).await
    }

    async fn call<T: DeserializeOwned>(
        &self,
        method: Method,
        path: &str,
        body: Bytes,
    ) -> Result<T, ClientError> {
        tokio::time::timeout(self.timeout, self.exchange(method, path, body))
            .await
            .map_err(|_| ClientError::Timeout {
                peer: self.peer.clone(),
                socket: self.socket.clone(),
                after: self.timeout,
            })?
    }

    async fn exchange<T: DeserializeOwned>(
        &self,
        method: Method,
        path: &str,
        body: Bytes,
    ) -> Result<T, ClientError> {
        let stream =
            UnixStream::connect(&self.socket)
                .await
                .map_err(|error| ClientError::Connect {
                    peer: self.peer.clone(),
                    socket: self.socket.clone(),
                    error,
                    hint: self.hint,
                })?;
        let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .map_err(|e| self.protocol(e))?;
        tokio::spawn(conn);
        let request = Request::builder()
            .method(method)
            .uri(path)
            .header("host", "sidemount")
            .header("content-type", "application/json")
            .body(Full::new(body))
            .map_err(|e| self.protocol(e))?;
        let response = sender
            .send_request(request)
            .await
            .map_err(|e| self.protocol(e))?;
        let status = response.status();
        let bytes = response
            .into_body()
            .collect()
            .await
            .map_err(|e| self.protocol(e))?
            .to_bytes();
        if status.is_success() {
            return serde_json::from_slice(&bytes).map_err(|e| self.protocol(e));
        }
        Err(match serde_json::from_slice::<ApiError>(&bytes) {
            Ok(api) => ClientError::Api(api),
            Err(_) => self.protocol(format!("{status}: {}", String::from_utf8_lossy(&bytes))),
        })
    }

    fn protocol(&self, reason: impl std::fmt::Display) -> ClientError {
        ClientError::Protocol {
            peer: self.peer.clone(),
            socket: self.socket.clone(),
            reason: reason.to_string(),
        }
    }
}
