//! The one path every kubelet mount takes through the node daemon: policy, routing,
//! execution, proof from mountinfo in every namespace, record; and the undo that
//! leaves nothing behind when any step fails.

pub mod config;
mod error;
pub mod health;
pub mod metrics;
mod mount;
pub mod provider;
pub mod record;
pub mod routes;
mod run;
pub mod state_file;
mod status;
mod undo;
mod unmount;
mod upgrade;
pub mod verify;

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tracing::warn;

use crate::api::wire::{ApiError, ErrorCode, MountRecord};
use crate::daemon::config::Config;
use crate::daemon::provider::Handle;
use crate::daemon::record::{Record, RecordError};
use crate::daemon::verify::Views;
use crate::executor::{ExecError, Executor};
use crate::ns::mountinfo::{MountTable, ProcRoot};
use crate::ns::namespace::Namespace;
use crate::policy::Policy;

pub struct Daemon {
    kubelet_root: PathBuf,
    policy: Policy,
    timeout: Duration,
    proc: ProcRoot,
    host_proc: ProcRoot,
    /// The host executor first, then one per VCS.
    executors: Vec<Arc<dyn Executor>>,
    vcs: Vec<Handle>,
    record: Mutex<Record>,
    reconciled_away: Vec<MountRecord>,
    /// Targets with an operation in progress.
    busy: Mutex<HashSet<PathBuf>>,
    /// `<state_dir>/status.json`, what /v1/status answers, for readers without
    /// access to the socket.
    status_file: PathBuf,
    /// Wakes the status publisher after a change.
    changed: tokio::sync::Notify,
    metrics: metrics::Metrics,
    health: health::Board,
}

/// Where the daemon finds things.
pub struct Paths {
    pub proc: ProcRoot,
    pub host_proc: ProcRoot,
    pub state_dir: PathBuf,
}

impl Daemon {
    /// Opens the record and reconciles it against mountinfo: records whose mount
    /// vanished are dropped and reported; nothing is unmounted. `host` mounts every
    /// type no VCS claims.
    pub async fn new(
        config: &Config,
        paths: Paths,
        host: Arc<dyn Executor>,
        vcs: Vec<Handle>,
    ) -> Result<Self, RecordError> {
        let mut executors = vec![host];
        executors.extend(vcs.iter().map(|h| h.executor.clone()));
        let mut tables: Vec<(String, MountTable)> = Vec::new();
        for e in &executors {
            if let Ok(Ok(table)) = e.namespace().await.map(|ns| ns.table()) {
                tables.push((e.name().to_owned(), table));
            }
        }
        let mut record = Record::open(&paths.state_dir)?;
        let reconciled_away = record.reconcile(|name| {
            tables
                .iter()
                .find(|(n, _)| n == name)
                .map(|(_, t)| t.clone())
        })?;
        for r in &reconciled_away {
            warn!(target = %r.target.display(), mount_id = r.mount_id, executor = %r.executor,
                "recorded mount vanished while the daemon was away; record dropped");
        }
        Ok(Daemon {
            kubelet_root: config.kubelet_root.clone(),
            policy: config.policy(),
            timeout: config.request_timeout(),
            proc: paths.proc,
            host_proc: paths.host_proc,
            executors,
            vcs,
            record: Mutex::new(record),
            reconciled_away,
            busy: Mutex::new(HashSet::new()),
            status_file: paths.state_dir.join("status.json"),
            changed: tokio::sync::Notify::new(),
            metrics: metrics::Metrics::new(),
            health: health::Board::default(),
        })
    }

    fn handle(&self, name: &str) -> Result<&Handle, ApiError> {
        self.vcs.iter().find(|h| h.vcs.name == name).ok_or_else(|| {
            ApiError::new(
                ErrorCode::NotAllowed,
                format!(
                    "no vcs is named {name:?}; configured: {:?}",
                    self.vcs
                        .iter()
                        .map(|h| h.vcs.name.as_str())
                        .collect::<Vec<_>>()
                ),
            )
        })
    }

    /// The VCS that claims `fstype`, else the host executor.
    fn route(&self, fstype: &str) -> Arc<dyn Executor> {
        self.vcs
            .iter()
            .find(|h| h.vcs.types.iter().any(|t| t.as_str() == fstype))
            .map_or_else(|| self.executors[0].clone(), |h| h.executor.clone())
    }

    /// The daemon's own mount namespace.
    fn own_namespace(&self) -> Namespace {
        Namespace::new("daemon", self.proc.clone(), None)
    }

    fn named(&self, name: &str) -> Result<Arc<dyn Executor>, ApiError> {
        self.executors
            .iter()
            .find(|e| e.name() == name)
            .cloned()
            .ok_or_else(|| {
                ApiError::new(
                    ErrorCode::ExecutorUnavailable,
                    format!("the executor {name:?} that made this mount is not configured"),
                )
            })
    }

    /// The executor's namespace, the host's (pid 1 under the host proc), and the
    /// caller's when its pid is visible here.
    async fn views(&self, exec: &dyn Executor, caller: Option<u32>) -> Result<Views, ExecError> {
        let mut others = vec![Namespace::new("host", self.host_proc.clone(), Some(1))];
        if let Some(pid) = caller.filter(|&p| p > 0) {
            if self.proc.mountinfo(Some(pid)).exists() {
                others.push(Namespace::new(
                    format!("caller (pid {pid})"),
                    self.proc.clone(),
                    Some(pid),
                ));
            }
        }
        Ok(Views {
            executor: exec.namespace().await?,
            others,
            shared_root: self.kubelet_root.clone(),
        })
    }

    fn claim(&self, target: &Path) -> Result<Claim<'_>, ApiError> {
        if !self.busy.lock().unwrap().insert(target.to_owned()) {
            return Err(ApiError::new(
                ErrorCode::Busy,
                format!(
                    "{}: target is busy (another operation on it is in progress)",
                    target.display()
                ),
            ));
        }
        Ok(Claim {
            busy: &self.busy,
            target: target.to_owned(),
        })
    }
}

/// Releases a target when its operation ends, however it ends.
struct Claim<'a> {
    busy: &'a Mutex<HashSet<PathBuf>>,
    target: PathBuf,
}

impl Drop for Claim<'_> {
    fn drop(&mut self) {
        self.busy.lock().unwrap().remove(&self.target);
    }
}
