//! The daemon's API: the routes of `/v1/*` on its socket. Every route applies the
//! peer rule (GET as POST); each operation runs to its end on a task of its own,
//! even when the client hangs up, so nothing is left half done and unrecorded; and
//! every refused or failed request is logged once, with its peer and reason code.

use std::future::Future;
use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{ConnectInfo, State};
use axum::routing::{get, post};
use axum::Router;
use serde::de::DeserializeOwned;
use serde::Serialize;
use tokio::net::UnixListener;
use tracing::warn;

use crate::api::http::{self, body, peer, Answer, Limits, PeerInfo};
use crate::api::wire::{
    self, ApiError, ErrorCode, MountRequest, Peer, RunRequest, UnmountRequest, UpgradeRequest,
};
use crate::daemon::{metrics, Daemon};

pub use crate::api::http::bind;

/// Serves until `shutdown` resolves, then finishes the requests in flight.
pub async fn serve(
    listener: UnixListener,
    daemon: Arc<Daemon>,
    limits: Limits,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let app = Router::new()
        .route(wire::MOUNTS, post(mount).get(mounts))
        .route(wire::UNMOUNTS, post(unmount))
        .route(wire::STATUS, get(status))
        .route(wire::RUN, post(run))
        .route(wire::UPGRADE, post(upgrade))
        .route(metrics::PATH, get(scrape))
        .with_state(daemon);
    http::serve(listener, app, limits, shutdown).await
}

/// What a request is about, for the log: its target, or its VCS.
trait Subject {
    fn subject(&self) -> String;
}

impl Subject for MountRequest {
    fn subject(&self) -> String {
        self.target.display().to_string()
    }
}

impl Subject for UnmountRequest {
    fn subject(&self) -> String {
        self.target.display().to_string()
    }
}

impl Subject for RunRequest {
    fn subject(&self) -> String {
        format!("vcs {}", self.vcs)
    }
}

impl Subject for UpgradeRequest {
    fn subject(&self) -> String {
        format!("vcs {}", self.vcs)
    }
}

/// Parses the body, then runs `op` on a task of its own (a client that hangs up
/// does not cancel it), and logs a refusal or failure.
async fn handle<Req, Resp, Fut>(
    d: Arc<Daemon>,
    info: PeerInfo,
    bytes: Bytes,
    what: &'static str,
    op: impl FnOnce(Arc<Daemon>, Peer, Req) -> Fut,
) -> Answer
where
    Req: DeserializeOwned + Subject,
    Resp: Serialize + Send + 'static,
    Fut: Future<Output = Result<Resp, ApiError>> + Send + 'static,
{
    let parsed = peer(info).and_then(|p| Ok((p, body::<Req>(&bytes)?)));
    let (subject, result) = match parsed {
        Err(e) => (String::new(), Err(e)),
        Ok((p, req)) => {
            let subject = req.subject();
            let task = tokio::spawn(op(d, p, req));
            let result = task.await.unwrap_or_else(|e| {
                Err(ApiError::new(
                    ErrorCode::Internal,
                    format!("the {what} ended abnormally: {e}"),
                ))
            });
            (subject, result)
        }
    };
    if let Err(e) = &result {
        log_refusal(what, info, &subject, e);
    }
    result.into()
}

/// One line per refused or failed request: peer, target, code and the message
/// (already free of secrets), never the request's options.
fn log_refusal(what: &str, info: PeerInfo, subject: &str, e: &ApiError) {
    let (uid, pid) = info.ids();
    let refused = matches!(
        e.code,
        ErrorCode::BadRequest
            | ErrorCode::Forbidden
            | ErrorCode::TargetNotAllowed
            | ErrorCode::NotAllowed
            | ErrorCode::AlreadyMounted
            | ErrorCode::Busy
            | ErrorCode::InUse
            | ErrorCode::NotMounted
    );
    let verdict = if refused { "refused" } else { "failed" };
    warn!(request = what, peer_uid = ?uid, peer_pid = ?pid, target = subject, code = %e.code,
        reason = %e.message, "request {verdict}");
}

async fn mount(
    State(d): State<Arc<Daemon>>,
    ConnectInfo(info): ConnectInfo<PeerInfo>,
    bytes: Bytes,
) -> Answer {
    handle(
        d,
        info,
        bytes,
        "mount",
        |d, p, r: MountRequest| async move { d.mount(p, r).await },
    )
    .await
}

async fn unmount(
    State(d): State<Arc<Daemon>>,
    ConnectInfo(info): ConnectInfo<PeerInfo>,
    bytes: Bytes,
) -> Answer {
    handle(
        d,
        info,
        bytes,
        "unmount",
        |d, p, r: UnmountRequest| async move { d.unmount(p, r).await },
    )
    .await
}

async fn run(
    State(d): State<Arc<Daemon>>,
    ConnectInfo(info): ConnectInfo<PeerInfo>,
    bytes: Bytes,
) -> Answer {
    handle(d, info, bytes, "run", |d, p, r: RunRequest| async move {
        d.run(p, r).await
    })
    .await
}

async fn upgrade(
    State(d): State<Arc<Daemon>>,
    ConnectInfo(info): ConnectInfo<PeerInfo>,
    bytes: Bytes,
) -> Answer {
    handle(
        d,
        info,
        bytes,
        "upgrade",
        |d, p, r: UpgradeRequest| async move { d.upgrade(p, r).await },
    )
    .await
}

/// The peer rule for a GET: the same as for a POST.
fn allowed(d: &Daemon, info: PeerInfo, what: &str) -> Result<(), ApiError> {
    let checked = peer(info).and_then(|p| Ok(d.policy.check_peer(p.uid)?));
    if let Err(e) = &checked {
        log_refusal(what, info, "", e);
    }
    checked
}

async fn mounts(State(d): State<Arc<Daemon>>, ConnectInfo(info): ConnectInfo<PeerInfo>) -> Answer {
    allowed(&d, info, "list").map(|()| d.mounts()).into()
}

async fn status(State(d): State<Arc<Daemon>>, ConnectInfo(info): ConnectInfo<PeerInfo>) -> Answer {
    match allowed(&d, info, "status") {
        Ok(()) => Ok::<_, ApiError>(d.status().await).into(),
        Err(e) => Err::<(), _>(e).into(),
    }
}

async fn scrape(
    State(d): State<Arc<Daemon>>,
    ConnectInfo(info): ConnectInfo<PeerInfo>,
) -> axum::response::Response {
    use axum::response::IntoResponse;
    match allowed(&d, info, "metrics") {
        Ok(()) => metrics::scrape(&d).await.into_response(),
        Err(e) => Answer::from(Err::<(), _>(e)).into_response(),
    }
}
