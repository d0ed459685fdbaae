//! HTTP/1.1 + JSON on a unix socket, curl-able like the Docker Engine API, shared by
//! the daemon and the agent: binding (in a directory only its owner may enter),
//! peer credentials (SO_PEERCRED), bounded connections (see [`Limits`]), and JSON
//! answers, errors included (404, 405, 408 and 413 too).

use std::collections::HashMap;
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::{Body, Bytes};
use axum::extract::{ConnectInfo, Request, State};
use axum::http::{Method, StatusCode, Uri};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::{Json, Router};
use http_body_util::BodyExt;
use serde::de::DeserializeOwned;
use serde::Serialize;
use tokio::io::AsyncWriteExt;
use tokio::net::{UnixListener, UnixStream};
use tracing::warn;

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
    #[error("the socket directory {path} is a symbolic link: refusing it; remove the link, or pass a socket path in a real directory")]
    DirSymlink { path: PathBuf },
    #[error("the socket directory {path} is owned by uid {owner}, not by uid {expected} that serves on it: whoever owns it can replace the socket; fix: chown {expected}:{expected} {path} (or remove it and let the server create it)")]
    DirOwner {
        path: PathBuf,
        owner: u32,
        expected: u32,
    },
    #[error("the socket directory {path} is shared by everyone: the socket needs a directory of its own (e.g. /run/sidemount)")]
    DirShared { path: PathBuf },
}

/// How much a connection may take: a bound on connections open at once, and on
/// the time a request's head and body may take to arrive.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Connections served at once. Beyond it the oldest idle connection (between
    /// requests, or still sending a head) is closed to make room; when every one
    /// is in a request, the new connection is refused with `overloaded`.
    pub max_connections: usize,
    /// A request's head must arrive within this of the connection opening or of
    /// the previous answer: it bounds slow heads and idle keep-alive connections.
    pub header_timeout: Duration,
    /// A request's body must arrive within this of its head.
    pub body_timeout: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_connections: 1024,
            header_timeout: Duration::from_secs(10),
            body_timeout: Duration::from_secs(10),
        }
    }
}

/// The peer of one connection. Credentials are always there on a unix socket; the
/// `Option` only covers a failed getsockopt, which is refused.
#[derive(Debug, Clone, Copy)]
pub struct PeerInfo(Option<Peer>);

impl PeerInfo {
    fn of(stream: &UnixStream) -> Self {
        PeerInfo(stream.peer_cred().ok().map(|c| {
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

    /// The peer's uid and pid, for logs.
    pub fn ids(&self) -> (Option<u32>, Option<u32>) {
        (self.0.map(|p| p.uid), self.0.and_then(|p| p.pid))
    }
}

/// Directories the socket must never be put in directly: the server would
/// otherwise make them its own (0700).
const SHARED_DIRS: &[&str] = &["/", "/run", "/var/run", "/tmp", "/var/tmp", "/dev/shm"];

/// Binds the socket (0600) in a directory only its owner may enter: created 0700,
/// or, when it exists, not a symbolic link, owned by this process's user, and
/// given mode 0700. Refuses to take over a socket another server still answers on.
pub fn bind(path: &Path) -> Result<UnixListener, ServerError> {
    let io_err = |source| ServerError::Socket {
        path: path.to_owned(),
        source,
    };
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        own_dir(dir)?;
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

/// Makes `dir` the server's own: see [`bind`].
fn own_dir(dir: &Path) -> Result<(), ServerError> {
    use rustix::fs::{Mode, OFlags};
    let io_err = |source| ServerError::Socket {
        path: dir.to_owned(),
        source,
    };
    if SHARED_DIRS.iter().any(|d| Path::new(d) == dir) {
        return Err(ServerError::DirShared {
            path: dir.to_owned(),
        });
    }
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(io_err)?;
    let fd = rustix::fs::open(
        dir,
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
        Mode::empty(),
    )
    .map_err(|e| match e {
        rustix::io::Errno::LOOP | rustix::io::Errno::NOTDIR => ServerError::DirSymlink {
            path: dir.to_owned(),
        },
        e => io_err(e.into()),
    })?;
    let stat = rustix::fs::fstat(&fd).map_err(|e| io_err(e.into()))?;
    let expected = nix::unistd::geteuid().as_raw();
    if stat.st_uid != expected {
        return Err(ServerError::DirOwner {
            path: dir.to_owned(),
            owner: stat.st_uid,
            expected,
        });
    }
    let mode = stat.st_mode & 0o7777;
    if mode != 0o700 {
        rustix::fs::fchmod(&fd, Mode::from_raw_mode(0o700)).map_err(|e| io_err(e.into()))?;
        warn!(path = %dir.display(), was = %format!("{mode:04o}"), "socket directory mode set to 0700");
    }
    Ok(())
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

fn error(code: ErrorCode, message: String) -> Response {
    Answer::from(Err::<(), _>(ApiError::new(code, message))).into_response()
}

pub fn peer(info: PeerInfo) -> Result<Peer, ApiError> {
    info.0.ok_or_else(|| {
        ApiError::new(
            ErrorCode::Forbidden,
            "the peer's credentials cannot be read",
        )
    })
}

/// Parses a body, naming the field that is wrong but not echoing the values
/// sent (an option in the wrong place may be a secret).
pub fn body<T: DeserializeOwned>(bytes: &Bytes) -> Result<T, ApiError> {
    serde_json::from_slice(bytes).map_err(|e| {
        ApiError::new(
            ErrorCode::BadRequest,
            format!("invalid request body: {}", without_values(&e.to_string())),
        )
    })
}

/// `text` with every double-quoted value replaced by `"…"`.
fn without_values(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut quoted = false;
    for c in text.chars() {
        if c == '"' {
            if !quoted {
                out.push_str("\"…\"");
            }
            quoted = !quoted;
        } else if !quoted {
            out.push(c);
        }
    }
    out
}

/// Reads a request's body whole, within [`wire::MAX_BODY`] and the body timeout,
/// before any handler sees it; answers 413 or 408 in JSON otherwise.
async fn read_body(State(limits): State<Limits>, req: Request, next: Next) -> Response {
    let (parts, body) = req.into_parts();
    let limited = http_body_util::Limited::new(body, wire::MAX_BODY);
    match tokio::time::timeout(limits.body_timeout, limited.collect()).await {
        Err(_) => error(
            ErrorCode::RequestTimeout,
            format!(
                "the request body did not arrive within {:?}",
                limits.body_timeout
            ),
        ),
        Ok(Err(e)) if e.is::<http_body_util::LengthLimitError>() => error(
            ErrorCode::TooLarge,
            format!("the request body is larger than {} bytes", wire::MAX_BODY),
        ),
        Ok(Err(e)) => error(
            ErrorCode::BadRequest,
            format!("cannot read the request body: {e}"),
        ),
        Ok(Ok(collected)) => {
            let req = Request::from_parts(parts, Body::from(collected.to_bytes()));
            next.run(req).await
        }
    }
}

async fn not_found(method: Method, uri: Uri) -> Response {
    error(
        ErrorCode::NotFound,
        format!("no such endpoint: {method} {}", uri.path()),
    )
}

async fn method_not_allowed(method: Method, uri: Uri) -> Response {
    error(
        ErrorCode::MethodNotAllowed,
        format!("{} does not take {method}", uri.path()),
    )
}

/// The connections open now, to find an idle one to close when full.
#[derive(Default)]
struct Open {
    conns: Mutex<HashMap<u64, Arc<Conn>>>,
    next: AtomicU64,
}

struct Conn {
    id: u64,
    opened: Instant,
    /// Requests in progress on it.
    busy: AtomicUsize,
    /// Told when it must close to make room.
    evict: tokio::sync::Notify,
}

impl Open {
    /// Admits a new connection, closing the oldest idle one when `max` are open;
    /// `None` when every open one is in a request.
    fn admit(&self, max: usize) -> Option<Arc<Conn>> {
        let mut conns = self.conns.lock().unwrap();
        if conns.len() >= max {
            let idle = conns
                .values()
                .filter(|c| c.busy.load(Ordering::Acquire) == 0)
                .min_by_key(|c| c.opened)?
                .clone();
            idle.evict.notify_one();
            conns.remove(&idle.id);
        }
        let conn = Arc::new(Conn {
            id: self.next.fetch_add(1, Ordering::Relaxed),
            opened: Instant::now(),
            busy: AtomicUsize::new(0),
            evict: tokio::sync::Notify::new(),
        });
        conns.insert(conn.id, conn.clone());
        Some(conn)
    }

    fn leave(&self, id: u64) {
        self.conns.lock().unwrap().remove(&id);
    }
}

/// Counts a request in progress on a connection while it lives.
struct InRequest(Arc<Conn>);

impl InRequest {
    fn new(conn: &Arc<Conn>) -> Self {
        conn.busy.fetch_add(1, Ordering::AcqRel);
        InRequest(conn.clone())
    }
}

impl Drop for InRequest {
    fn drop(&mut self) {
        self.0.busy.fetch_sub(1, Ordering::AcqRel);
    }
}

/// Serves `app` within `limits` until `shutdown` resolves, then finishes the
/// requests in flight.
pub async fn serve(
    listener: UnixListener,
    app: Router,
    limits: Limits,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let app = app
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(axum::middleware::from_fn_with_state(limits, read_body));
    let open = Arc::new(Open::default());
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let mut tasks = tokio::task::JoinSet::new();
    tokio::pin!(shutdown);
    loop {
        let stream = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(e) => {
                    // Out of descriptors, most likely: let connections close.
                    warn!(error = %e, "cannot accept a connection");
                    tokio::time::sleep(Duration::from_millis(10)).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        while tasks.try_join_next().is_some() {}
        let info = PeerInfo::of(&stream);
        match open.admit(limits.max_connections) {
            Some(conn) => {
                let (app, open, stopped) = (app.clone(), open.clone(), stopped.clone());
                tasks.spawn(async move {
                    let id = conn.id;
                    connection(stream, info, app, conn, limits, stopped).await;
                    open.leave(id);
                });
            }
            None => {
                tasks.spawn(refuse(stream, info, limits.max_connections));
            }
        }
    }
    drop(listener);
    let _ = stop.send(true);
    while tasks.join_next().await.is_some() {}
    Ok(())
}

/// Serves one connection until it ends, it is evicted, or the server stops (the
/// request in progress, if any, is answered first).
async fn connection(
    stream: UnixStream,
    info: PeerInfo,
    app: Router,
    conn: Arc<Conn>,
    limits: Limits,
    mut stopped: tokio::sync::watch::Receiver<bool>,
) {
    use hyper::service::Service as _;
    let tower = hyper_util::service::TowerToHyperService::new(app);
    let counted = conn.clone();
    let service = hyper::service::service_fn(move |mut req: Request<hyper::body::Incoming>| {
        req.extensions_mut().insert(ConnectInfo(info));
        let busy = InRequest::new(&counted);
        let answer = tower.call(req);
        async move {
            let answer = answer.await;
            drop(busy);
            answer
        }
    });
    let http = hyper::server::conn::http1::Builder::new()
        .timer(hyper_util::rt::TokioTimer::new())
        .header_read_timeout(limits.header_timeout)
        .keep_alive(true)
        // A client that hangs up after sending a whole request still has it
        // carried out (and its answer dropped).
        .half_close(true)
        .serve_connection(hyper_util::rt::TokioIo::new(stream), service);
    tokio::pin!(http);
    let mut closing = false;
    loop {
        tokio::select! {
            _ = http.as_mut() => return,
            () = conn.evict.notified(), if !closing => {
                closing = true;
                http.as_mut().graceful_shutdown();
            }
            _ = stopped.changed(), if !closing => {
                closing = true;
                http.as_mut().graceful_shutdown();
            }
        }
    }
}

/// Answers a connection beyond the limit with `overloaded`, and closes it.
async fn refuse(mut stream: UnixStream, info: PeerInfo, max: usize) {
    let (uid, pid) = info.ids();
    let e = ApiError::new(
        ErrorCode::Overloaded,
        format!("the server has {max} connections open, each in a request: retry later"),
    );
    warn!(peer_uid = ?uid, peer_pid = ?pid, code = %e.code, reason = %e.message, "connection refused");
    let body = serde_json::to_vec(&e).expect("errors serialize");
    let head = format!(
        "HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
        body.len()
    );
    let _ = tokio::time::timeout(Duration::from_secs(1), async {
        stream.write_all(head.as_bytes()).await?;
        stream.write_all(&body).await?;
        stream.shutdown().await
    })
    .await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn body_errors_name_the_field_not_the_value() {
        let bytes =
            Bytes::from_static(br#"{"source":"s","target":"/t","options":"password=hunter2"}"#);
        let err = body::<wire::MountRequest>(&bytes).unwrap_err();
        assert!(!err.message.contains("hunter2"), "{}", err.message);
        assert!(err.message.contains("invalid type"), "{}", err.message);
        let bytes = Bytes::from_static(br#"{"source":"s","target":"/t","bogus":1}"#);
        let err = body::<wire::MountRequest>(&bytes).unwrap_err();
        assert!(err.message.contains("unknown field"), "{}", err.message);
    }

    #[test]
    fn a_full_server_closes_the_oldest_idle_connection_or_refuses() {
        let open = Open::default();
        let a = open.admit(2).unwrap();
        let b = open.admit(2).unwrap();
        let _busy_b = InRequest::new(&b);
        // Full: the idle `a` makes room.
        let c = open.admit(2).unwrap();
        assert!(!open.conns.lock().unwrap().contains_key(&a.id));
        let _busy_c = InRequest::new(&c);
        // Full, and every one in a request: refused.
        assert!(open.admit(2).is_none());
        open.leave(b.id);
        assert!(open.admit(2).is_some());
    }
}
