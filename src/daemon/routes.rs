//! The daemon's API: the routes of `/v1/*` on its socket, each handed to the
//! daemon with the caller's credentials.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{ConnectInfo, State};
use axum::routing::{get, post};
use axum::Router;
use tokio::net::UnixListener;

use crate::api::http::{self, body, peer, Answer, PeerInfo};
use crate::api::wire::{self, ApiError};
use crate::daemon::{metrics, Daemon};

pub use crate::api::http::bind;

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
        .route(wire::UPGRADE, post(upgrade))
        .route(metrics::PATH, get(scrape))
        .with_state(daemon);
    http::serve(listener, app, shutdown).await
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

async fn run(
    State(d): State<Arc<Daemon>>,
    ConnectInfo(info): ConnectInfo<PeerInfo>,
    bytes: Bytes,
) -> Answer {
    let r = async { d.run(peer(info)?, body(&bytes)?).await };
    r.await.into()
}

async fn upgrade(
    State(d): State<Arc<Daemon>>,
    ConnectInfo(info): ConnectInfo<PeerInfo>,
    bytes: Bytes,
) -> Answer {
    let r = async { d.upgrade(peer(info)?, body(&bytes)?).await };
    r.await.into()
}

async fn mounts(State(d): State<Arc<Daemon>>) -> Answer {
    Ok::<_, ApiError>(d.mounts()).into()
}

async fn status(State(d): State<Arc<Daemon>>) -> Answer {
    Ok::<_, ApiError>(d.status().await).into()
}

async fn scrape(
    State(d): State<Arc<Daemon>>,
    ConnectInfo(info): ConnectInfo<PeerInfo>,
) -> axum::response::Response {
    use axum::response::IntoResponse;
    match peer(info).and_then(|p| Ok(d.policy.check_peer(p.uid)?)) {
        Ok(()) => metrics::scrape(&d).await.into_response(),
        Err(e) => Answer::from(Err::<(), _>(e)).into_response(),
    }
}
