//! The one path every kubelet mount takes through the node daemon: policy, routing,
//! execution, proof from mountinfo in every namespace, record; and the undo that
//! leaves nothing behind when any step fails.

mod change;
mod claims;
pub mod config;
mod copies;
mod error;
mod heal;
mod heal_binds;
mod heal_record;
mod heal_staging;
mod healer;
pub mod health;
pub mod metrics;
mod mount;
#[cfg(test)]
mod pipeline_tests;
pub mod provider;
pub mod record;
pub mod routes;
mod run;
pub mod state_dir;
mod status;
mod turn;
mod undo;
mod unmount;
mod upgrade;
pub mod verify;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use tracing::warn;

use crate::api::wire::{ApiError, ErrorCode, MountRecord};
use crate::daemon::claims::{Claim, Claims};
use crate::daemon::config::Config;
use crate::daemon::error::PipelineError;
use crate::daemon::provider::Handle;
use crate::daemon::record::{Record, RecordError, Recovery, Seen};
use crate::daemon::state_dir::StateDir;
use crate::daemon::verify::Views;
use crate::executor::{ExecError, Executor};
use crate::mount::syscall::{Linux, Syscall};
use crate::ns::mountinfo::ProcRoot;
use crate::ns::namespace::Namespace;
use crate::policy::Policy;

pub struct Daemon {
    kubelet_root: PathBuf,
    policy: Policy,
    timeout: Duration,
    proc: ProcRoot,
    /// The daemon's pid under `proc`; `None`: `self`, the process itself.
    own_pid: Option<u32>,
    host_proc: ProcRoot,
    /// The host executor first, then one per VCS.
    executors: Vec<Arc<dyn Executor>>,
    vcs: Vec<Handle>,
    record: Record,
    /// What the start found the last daemon left.
    recovery: Recovery,
    /// Targets with an operation in progress, and those waiting for it.
    claims: Claims,
    /// Where `status.json` is kept equal to what /v1/status answers, for readers
    /// without access to the socket.
    state_dir: StateDir,
    /// Every mount-changing call the daemon makes itself (undo).
    syscall: Arc<dyn Syscall>,
    /// Wakes the status publisher after a change.
    changed: tokio::sync::Notify,
    metrics: metrics::Metrics,
    health: health::Board,
    /// What heals remember: requests with their secrets, backoff, last heals.
    healer: healer::Healer,
}

/// Where the daemon finds things.
pub struct Paths {
    pub proc: ProcRoot,
    pub host_proc: ProcRoot,
    pub state_dir: PathBuf,
}

impl Daemon {
    /// Opens the state directory (see [`state_dir`]) and the record, and
    /// resolves what the last daemon left against the mount tables: records whose mount
    /// vanished are dropped, intents whose mount was made are adopted, the others
    /// dropped, each reported; nothing is unmounted. `host` mounts every type no
    /// VCS claims.
    pub async fn new(
        config: &Config,
        paths: Paths,
        host: Arc<dyn Executor>,
        vcs: Vec<Handle>,
    ) -> Result<Self, RecordError> {
        let mut executors = vec![host];
        executors.extend(vcs.iter().map(|h| h.executor.clone()));
        let state_dir = StateDir::open(&paths.state_dir)?;
        let (record, pending) = Record::open(&state_dir)?;
        let mut namespaces = Vec::new();
        for e in &executors {
            if let Ok(ns) = e.namespace().await {
                namespaces.push((e.name().to_owned(), ns));
            }
        }
        let recovery = record.resolve(pending, |name| {
            let (_, ns) = namespaces.iter().find(|(n, _)| n == name)?;
            Some(Seen {
                listed: ns.unique_mount_ids(),
                table: Box::new(|| ns.table().ok()),
            })
        })?;
        for r in &recovery.vanished {
            warn!(target = %r.target.display(), mount_id = r.mount_id, executor = %r.executor,
                "recorded mount vanished while the daemon was away; record dropped");
        }
        for r in &recovery.adopted {
            warn!(target = %r.target.display(), mount_id = r.mount_id, executor = %r.executor,
                "a mount the last daemon made but had not recorded was found; recorded");
        }
        for r in &recovery.abandoned {
            warn!(target = %r.target.display(), executor = %r.executor,
                "a mount the last daemon meant to make is not there; intent dropped");
        }
        Ok(Daemon {
            kubelet_root: config.kubelet_root.clone(),
            policy: config.policy(),
            timeout: config.request_timeout(),
            proc: paths.proc,
            own_pid: None,
            host_proc: paths.host_proc,
            executors,
            vcs,
            record,
            recovery,
            claims: Claims::default(),
            state_dir,
            syscall: Arc::new(Linux),
            changed: tokio::sync::Notify::new(),
            metrics: metrics::Metrics::new(),
            health: health::Board::default(),
            healer: healer::Healer::default(),
        })
    }

    /// Reads the daemon's own namespace through the pid `pid` under its proc (a
    /// fixture's), instead of the process itself.
    #[cfg(test)]
    fn with_own_pid(mut self, pid: u32) -> Self {
        self.own_pid = Some(pid);
        self
    }

    /// For a daemon that stops: what the next start reads first (the record's
    /// cache) is written now.
    pub fn stop(&self) {
        self.record.flush();
    }

    /// Makes the daemon's own mount-changing calls (undo) through `syscall`.
    pub fn with_syscall(mut self, syscall: Arc<dyn Syscall>) -> Self {
        self.syscall = syscall;
        self
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

    /// The executor that made the recorded mount `made`.
    fn made_by(&self, made: &MountRecord) -> Result<Arc<dyn Executor>, PipelineError> {
        self.named(&made.executor)
            .ok_or_else(|| PipelineError::UnknownExecutor {
                target: made.target.clone(),
                executor: made.executor.clone(),
            })
    }

    /// The daemon's own mount namespace.
    fn own_namespace(&self) -> Namespace {
        Namespace::new("daemon", self.proc.clone(), self.own_pid)
    }

    fn named(&self, name: &str) -> Option<Arc<dyn Executor>> {
        self.executors.iter().find(|e| e.name() == name).cloned()
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

    /// Waits for the turn on `target`, at most `wait`.
    async fn claim(&self, target: &Path, wait: Duration) -> Result<Claim<'_>, PipelineError> {
        self.claims
            .claim(target, wait)
            .await
            .ok_or_else(|| PipelineError::Busy {
                target: target.to_owned(),
                waited: wait,
            })
    }
}
