//! The daemon's metrics for a node's Prometheus, in the kubelet's terms: how long
//! each operation took (the buckets of the kubelet's
//! `storage_operation_duration_seconds`), how many mounts there are and how healthy,
//! how heals went and whether each volume client is up. Exposed as OpenMetrics text
//! by `prometheus-client` on `GET /metrics` of the socket, and on TCP when asked.

use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::http::header::CONTENT_TYPE;
use axum::response::IntoResponse;
use axum::routing::get;
use axum::Router;
use prometheus_client::encoding::text::encode;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::{Registry, Unit};
use tokio::net::TcpListener;

use crate::api::wire::ApiError;
use crate::daemon::Daemon;

/// The path metrics are served on, on the socket and on TCP.
pub const PATH: &str = "/metrics";

/// What an OpenMetrics scrape answers with.
pub const CONTENT: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// The kubelet's `storage_operation_duration_seconds` buckets, so dashboards for
/// one read the other.
pub const BUCKETS: [f64; 13] = [
    0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 15.0, 25.0, 50.0, 120.0, 300.0, 600.0,
];

/// The status label of an operation that succeeded; a failed one carries its
/// error code (`mount_failed`, `propagation_broken`, ...).
pub const SUCCESS: &str = "success";

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OperationLabels {
    operation: String,
    executor: String,
    fstype: String,
    status: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct MountLabels {
    executor: String,
    fstype: String,
    health: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct HealLabels {
    vcs: String,
    result: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct VcsLabels {
    vcs: String,
}

type Histograms = Family<OperationLabels, Histogram, fn() -> Histogram>;

pub struct Metrics {
    registry: Registry,
    operations: Histograms,
    mounts: Family<MountLabels, Gauge>,
    heals: Family<HealLabels, Counter>,
    vcs_up: Family<VcsLabels, Gauge>,
    /// Scrapes set the gauges and then encode them: one at a time.
    scrape: Mutex<()>,
}

/// One mount as the `sidemount_mounts` gauge counts it.
pub struct MountSample<'a> {
    pub executor: &'a str,
    pub fstype: &'a str,
    pub health: &'a str,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("sidemount");
        let operations: Histograms =
            Family::new_with_constructor(|| Histogram::new(BUCKETS.iter().copied()));
        registry.register_with_unit(
            "operation_duration",
            "How long each mount, unmount and heal took, by executor, filesystem type and outcome",
            Unit::Seconds,
            operations.clone(),
        );
        let mounts = Family::<MountLabels, Gauge>::default();
        registry.register(
            "mounts",
            "Recorded mounts, by executor, filesystem type and health",
            mounts.clone(),
        );
        let heals = Family::<HealLabels, Counter>::default();
        registry.register(
            "heals",
            "Corrupted mounts mounted afresh, by volume client and result",
            heals.clone(),
        );
        let vcs_up = Family::<VcsLabels, Gauge>::default();
        registry.register(
            "vcs_up",
            "1 when the volume client's container and agent answer, else 0",
            vcs_up.clone(),
        );
        Metrics {
            registry,
            operations,
            mounts,
            heals,
            vcs_up,
            scrape: Mutex::new(()),
        }
    }

    /// Counts one operation that took `elapsed` and ended with `status`.
    pub fn operation(
        &self,
        operation: &str,
        executor: &str,
        fstype: &str,
        status: &str,
        elapsed: Duration,
    ) {
        let labels = OperationLabels {
            operation: operation.to_owned(),
            executor: executor.to_owned(),
            fstype: fstype.to_owned(),
            status: status.to_owned(),
        };
        self.operations
            .get_or_create(&labels)
            .observe(elapsed.as_secs_f64());
    }

    /// Counts one heal of a mount of `vcs`.
    pub fn heal(&self, vcs: &str, result: &str) {
        let labels = HealLabels {
            vcs: vcs.to_owned(),
            result: result.to_owned(),
        };
        self.heals.get_or_create(&labels).inc();
    }

    /// The exposition with the gauges set from `mounts` and `vcs` (name, up) as
    /// they are now; series of mounts that are gone disappear.
    pub fn render<'a>(
        &self,
        mounts: impl IntoIterator<Item = MountSample<'a>>,
        vcs: impl IntoIterator<Item = (&'a str, bool)>,
    ) -> String {
        let _one = self.scrape.lock().unwrap();
        self.mounts.clear();
        for m in mounts {
            let labels = MountLabels {
                executor: m.executor.to_owned(),
                fstype: m.fstype.to_owned(),
                health: m.health.to_owned(),
            };
            self.mounts.get_or_create(&labels).inc();
        }
        self.vcs_up.clear();
        for (name, up) in vcs {
            let labels = VcsLabels {
                vcs: name.to_owned(),
            };
            self.vcs_up.get_or_create(&labels).set(i64::from(up));
        }
        let mut text = String::new();
        encode(&mut text, &self.registry).expect("writing to a String cannot fail");
        text
    }
}

impl Daemon {
    /// Runs `operation` and counts it under `executor` and `fstype`, with its
    /// outcome: `success` or the error code.
    pub(super) async fn observed<T>(
        &self,
        operation: &str,
        executor: &str,
        fstype: &str,
        run: impl Future<Output = Result<T, ApiError>>,
    ) -> Result<T, ApiError> {
        let started = Instant::now();
        let result = run.await;
        let status = match &result {
            Ok(_) => SUCCESS.to_owned(),
            Err(e) => e.code.to_string(),
        };
        // A refused request may name any type; the label keeps to valid ones.
        let fstype = match crate::policy::check_fstype(fstype) {
            Ok(()) => fstype,
            Err(_) => "invalid",
        };
        self.metrics
            .operation(operation, executor, fstype, &status, started.elapsed());
        result
    }

    /// What `GET /metrics` answers: the counters so far, and the mounts and VCS
    /// health as they are now.
    pub async fn metrics_text(&self) -> String {
        let vcs = self.vcs_status().await;
        let mounts = self.mounts();
        let health = self.mount_health();
        let samples = mounts.iter().map(|m| MountSample {
            executor: &m.executor,
            fstype: &m.fstype,
            health: health
                .iter()
                .find(|h| h.mount_id == m.mount_id && h.target == m.target)
                .map_or(crate::daemon::health::UNWATCHED, |h| h.health.as_str()),
        });
        self.metrics
            .render(samples, vcs.iter().map(|v| (v.name.as_str(), v.healthy)))
    }
}

/// The answer to a scrape.
pub async fn scrape(daemon: &Daemon) -> impl IntoResponse {
    ([(CONTENT_TYPE, CONTENT)], daemon.metrics_text().await)
}

/// Serves `GET /metrics` alone on TCP (`--metrics-address`) for a node's
/// Prometheus, until `shutdown` resolves. Nothing else is reachable there, and the
/// metrics name no secret.
pub async fn serve_tcp(
    listener: TcpListener,
    daemon: Arc<Daemon>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let app = Router::new()
        .route(
            PATH,
            get(
                |axum::extract::State(d): axum::extract::State<Arc<Daemon>>| async move {
                    scrape(&d).await.into_response()
                },
            ),
        )
        .with_state(daemon);
    axum::serve(listener, app)
        .with_graceful_shutdown(shutdown)
        .await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exposes_operations_mounts_heals_and_vcs_in_openmetrics_text() {
        let m = Metrics::new();
        m.operation("mount", "host", "tmpfs", SUCCESS, Duration::from_millis(30));
        m.operation(
            "mount",
            "host",
            "tmpfs",
            SUCCESS,
            Duration::from_millis(300),
        );
        m.operation(
            "unmount",
            "vcs-sshfs",
            "fuse.sshfs",
            "unmount_failed",
            Duration::from_secs(700),
        );
        m.heal("sshfs", "healed");
        let mounts = [
            MountSample {
                executor: "host",
                fstype: "tmpfs",
                health: "unwatched",
            },
            MountSample {
                executor: "host",
                fstype: "tmpfs",
                health: "unwatched",
            },
        ];
        let text = m.render(mounts, [("sshfs", true), ("nfs", false)]);
        let has = |line: &str| assert!(text.lines().any(|l| l == line), "{line}\n{text}");
        has("# TYPE sidemount_operation_duration_seconds histogram");
        has("# UNIT sidemount_operation_duration_seconds seconds");
        let op = r#"operation="mount",executor="host",fstype="tmpfs",status="success""#;
        has(&format!(
            "sidemount_operation_duration_seconds_count{{{op}}} 2"
        ));
        has(&format!(
            "sidemount_operation_duration_seconds_bucket{{le=\"0.1\",{op}}} 1"
        ));
        has(&format!(
            "sidemount_operation_duration_seconds_bucket{{le=\"0.5\",{op}}} 2"
        ));
        // Every kubelet bucket is there, and 700 s lands only in +Inf.
        for le in ["0.25", "1.0", "15.0", "120.0", "600.0"] {
            assert!(text.contains(&format!("le=\"{le}\"")), "{le}\n{text}");
        }
        let failed = r#"operation="unmount",executor="vcs-sshfs",fstype="fuse.sshfs",status="unmount_failed""#;
        has(&format!(
            "sidemount_operation_duration_seconds_bucket{{le=\"600.0\",{failed}}} 0"
        ));
        has(&format!(
            "sidemount_operation_duration_seconds_bucket{{le=\"+Inf\",{failed}}} 1"
        ));
        has(r#"sidemount_mounts{executor="host",fstype="tmpfs",health="unwatched"} 2"#);
        has(r#"sidemount_heals_total{vcs="sshfs",result="healed"} 1"#);
        has(r#"sidemount_vcs_up{vcs="sshfs"} 1"#);
        has(r#"sidemount_vcs_up{vcs="nfs"} 0"#);
        assert!(text.ends_with("# EOF\n"), "{text}");

        // Gauges follow what exists now: a mount gone is a series gone.
        let text = m.render([], [("sshfs", false)]);
        assert!(!text.contains("sidemount_mounts{"), "{text}");
        assert!(
            text.contains(r#"sidemount_vcs_up{vcs="sshfs"} 0"#),
            "{text}"
        );
        assert!(!text.contains(r#"vcs="nfs""#), "{text}");
    }
}
