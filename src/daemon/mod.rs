//! The one path every kubelet mount takes through the node daemon: policy, routing,
//! execution, proof from mountinfo in every namespace, record; and the undo that
//! leaves nothing behind when any step fails.

pub mod config;
pub mod health;
pub mod metrics;
pub mod provider;
pub mod record;
pub mod routes;
pub mod state_file;
pub mod verify;

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tracing::{info, warn};

use crate::api::wire::{
    self, ApiError, ErrorCode, Executed, MountRecord, MountRequest, MountResponse, Peer,
    RunRequest, Status, UnmountRequest, UnmountResponse, UpgradeRequest, UpgradeResponse,
    VcsStatus,
};
use crate::daemon::config::Config;
use crate::daemon::provider::Handle;
use crate::daemon::record::{Record, RecordError};
use crate::daemon::verify::{VerifyError, Views};
use crate::executor::{ExecError, Executor, UnmountFlags};
use crate::mount::syscall::{MntFlags, Syscall};
use crate::ns::mountinfo::{MountTable, MountinfoError, ProcRoot};
use crate::ns::namespace::Namespace;
use crate::policy::{redacted_options, scrub, Policy};

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

    /// Mounts, counted in the metrics (see [`metrics`]).
    pub async fn mount(&self, peer: Peer, req: MountRequest) -> Result<MountResponse, ApiError> {
        let executor = self.route(&req.fstype).name().to_owned();
        let fstype = req.fstype.clone();
        self.observed("mount", &executor, &fstype, self.mount_verified(peer, req))
            .await
    }

    async fn mount_verified(
        &self,
        peer: Peer,
        req: MountRequest,
    ) -> Result<MountResponse, ApiError> {
        // 1. Who may ask, and for what.
        self.policy.check_peer(peer.uid)?;
        let target = self.policy.check_mount(&req)?;
        let req = MountRequest { target, ..req };
        let target = req.target.as_path();
        // 2. One operation at a time on a target.
        let _claim = self.claim(target)?;
        // 3. The executor for this type, and the namespaces that must see the mount.
        let exec = self.route(&req.fstype);
        exec.ready()
            .await
            .map_err(|e| exec_error(&req, &e, ErrorCode::MountFailed))?;
        let views = self
            .views(exec.as_ref(), req.caller_pid.or(peer.pid))
            .await
            .map_err(|e| exec_error(&req, &e, ErrorCode::MountFailed))?;
        let before = self.before(&views.executor, target).map_err(internal)?;
        let deadline = wire::deadline(req.timeout_seconds, self.timeout);
        // 4. Execute; on failure undo whatever it left.
        let output = match exec.mount(&req, deadline).await {
            Ok(output) => output,
            Err(e) => {
                self.undo(exec.as_ref(), target, &before, &req.fstype).await;
                return Err(exec_error(&req, &e, ErrorCode::MountFailed));
            }
        };
        // 5. Prove it in every namespace; undo when it did not arrive everywhere.
        let (mount, seen) = match verify::mounted(target, before.executor, &views) {
            Ok(found) => found,
            Err(e) => {
                self.undo(exec.as_ref(), target, &before, &req.fstype).await;
                return Err(verify_error(&req, &e).with_output(scrub(&req, &output)));
            }
        };
        // 6. Record it; a mount that cannot be recorded is undone.
        let record = MountRecord {
            target: target.to_owned(),
            executor: exec.name().to_owned(),
            source: scrub(&req, &req.source),
            fstype: mount.fstype.clone(),
            options: redacted_options(&req),
            mount_id: mount.id,
        };
        let recorded = self.record.lock().unwrap().insert(record.clone());
        if let Err(e) = recorded {
            self.undo(exec.as_ref(), target, &before, &req.fstype).await;
            return Err(internal(e));
        }
        self.changed.notify_one();
        info!(target = %target.display(), executor = exec.name(), fstype = %record.fstype,
            source = %record.source, options = ?record.options, mount_id = mount.id, "mounted and verified");
        Ok(MountResponse {
            record,
            seen,
            output: scrub(&req, &output),
        })
    }

    /// Unmounts, counted in the metrics under the recorded executor and type.
    pub async fn unmount(
        &self,
        peer: Peer,
        req: UnmountRequest,
    ) -> Result<UnmountResponse, ApiError> {
        let recorded = self.record.lock().unwrap().find(&req.target).cloned();
        let (executor, fstype) = recorded.map_or_else(
            || (self.executors[0].name().to_owned(), String::new()),
            |r| (r.executor, r.fstype),
        );
        self.observed(
            "unmount",
            &executor,
            &fstype,
            self.unmount_verified(peer, req),
        )
        .await
    }

    async fn unmount_verified(
        &self,
        peer: Peer,
        req: UnmountRequest,
    ) -> Result<UnmountResponse, ApiError> {
        // 1. Who may ask, and for what.
        self.policy.check_peer(peer.uid)?;
        let target = self.policy.check_unmount(&req)?;
        let target = target.as_path();
        // 2. One operation at a time on a target.
        let _claim = self.claim(target)?;
        // 3. The executor that made it (by the record, else by its type).
        let recorded = self.record.lock().unwrap().find(target).cloned();
        let exec = match &recorded {
            Some(r) => self.named(&r.executor)?,
            // Not made by the daemon: route it by the type mounted there now.
            None => {
                let here = self.own_namespace().mount_at(target).map_err(internal)?;
                self.route(here.as_ref().map_or("", |m| m.fstype.as_str()))
            }
        };
        let unmount_error =
            |e: ExecError| exec_error(&MountRequest::default(), &e, ErrorCode::UnmountFailed);
        exec.ready().await.map_err(unmount_error)?;
        let views = self
            .views(exec.as_ref(), req.caller_pid.or(peer.pid))
            .await
            .map_err(unmount_error)?;
        let mount = views.executor.mount_at(target).map_err(internal)?;
        let mount = mount.ok_or_else(|| {
            ApiError::new(
                ErrorCode::NotMounted,
                // umount(8)'s words: callers (mount-utils) match "not mounted".
                format!(
                    "{}: not mounted (no mount point there in the {} namespace)",
                    target.display(),
                    views.executor.name
                ),
            )
        })?;
        // 4. Execute.
        let flags = UnmountFlags {
            lazy: req.lazy,
            force: req.force,
        };
        let output = exec
            .unmount(
                target,
                &mount.fstype,
                flags,
                wire::deadline(req.timeout_seconds, self.timeout),
            )
            .await
            .map_err(unmount_error)?;
        // 5. Prove it is gone everywhere; forget it once the executor's copy is gone.
        let proof = verify::unmounted(target, &mount, &views);
        let executor_gone = !matches!(&proof, Err(VerifyError::StillMounted { namespace, .. })
            if *namespace == views.executor.name);
        if executor_gone && recorded.is_some() {
            self.record
                .lock()
                .unwrap()
                .remove(target)
                .map_err(internal)?;
            self.changed.notify_one();
        }
        let seen = proof.map_err(|e| {
            let code = if executor_gone {
                ErrorCode::PropagationBroken
            } else {
                ErrorCode::UnmountFailed
            };
            ApiError::new(code, e.to_string()).with_output(output.clone())
        })?;
        info!(target = %target.display(), executor = exec.name(), "unmounted and verified");
        Ok(UnmountResponse {
            target: target.to_owned(),
            seen,
            output,
        })
    }

    pub fn mounts(&self) -> Vec<MountRecord> {
        self.record.lock().unwrap().mounts().to_vec()
    }

    pub async fn status(&self) -> Status {
        self.status_with(self.vcs_status().await)
    }

    /// Asks each VCS how it is (its container, its agent).
    async fn vcs_status(&self) -> Vec<VcsStatus> {
        futures_util::future::join_all(self.vcs.iter().map(|h| h.status())).await
    }

    fn status_with(&self, vcs: Vec<VcsStatus>) -> Status {
        Status {
            version: env!("CARGO_PKG_VERSION").into(),
            kubelet_root: self.kubelet_root.clone(),
            executors: self.executors.iter().map(|e| e.name().to_owned()).collect(),
            vcs,
            mounts: self.mounts(),
            reconciled_away: self.reconciled_away.clone(),
            health: self.mount_health(),
        }
    }

    /// Keeps the status file equal to what /v1/status answers: rewritten (whole, see
    /// [`state_file::replace`]) within `settle` of every change the daemon makes, once
    /// for a burst of them (a node starting its pods), with the VCS health found at
    /// most `every` ago (asking Docker and the agents on every mount would cost each
    /// mount their time), and after every such check. Runs until dropped.
    pub async fn publish_status(&self, every: Duration, settle: Duration) {
        let mut last = Vec::new();
        let mut vcs = self.vcs_status().await;
        let mut checked = tokio::time::Instant::now();
        loop {
            let mut bytes = serde_json::to_vec_pretty(&self.status_with(vcs.clone()))
                .expect("status serializes");
            bytes.push(b'\n');
            if bytes != last {
                match state_file::replace(&self.status_file, &bytes) {
                    Ok(()) => last = bytes,
                    Err(e) => {
                        warn!(path = %self.status_file.display(), error = %e, "cannot write the status file")
                    }
                }
            }
            let next = checked + every;
            if tokio::time::timeout_at(next, self.changed.notified())
                .await
                .is_err()
            {
                vcs = self.vcs_status().await;
                checked = tokio::time::Instant::now();
            } else {
                tokio::time::sleep(settle).await;
            }
        }
    }

    /// Runs an allowed VCS command (`sidemount run`): the seed's
    /// RunContainerInSidecarContainer.
    pub async fn run(&self, peer: Peer, req: RunRequest) -> Result<Executed, ApiError> {
        self.policy.check_peer(peer.uid)?;
        let program = req.command.first().map(String::as_str).unwrap_or("");
        let handle = match req.vcs.as_str() {
            "" => self.handle_allowing(program)?,
            name => self.handle(name)?,
        };
        if !handle.vcs.allows(program) {
            return Err(ApiError::new(
                ErrorCode::NotAllowed,
                format!(
                    "vcs {:?} does not allow running {program:?}; its `run` list is {:?}",
                    handle.vcs.name, handle.vcs.run
                ),
            ));
        }
        let done = handle
            .executor
            .run(
                &req.command,
                req.stdin.as_deref(),
                wire::deadline(req.timeout_seconds, self.timeout),
            )
            .await
            .map_err(|e| {
                ApiError::new(e.code(ErrorCode::Internal), e.to_string()).with_output(e.output())
            })?;
        info!(vcs = %handle.vcs.name, command = %done.command, exit_code = done.exit_code, "ran");
        Ok(done)
    }

    /// Replaces a docker-provided VCS container by one made from the current
    /// configuration; refused while long-running mounts depend on it, unless forced.
    pub async fn upgrade(
        &self,
        peer: Peer,
        req: UpgradeRequest,
    ) -> Result<UpgradeResponse, ApiError> {
        self.policy.check_peer(peer.uid)?;
        let handle = self.handle(&req.vcs)?;
        let Some((docker, spec)) = &handle.docker else {
            return Err(ApiError::new(
                ErrorCode::BadRequest,
                format!(
                    "vcs {:?} is run by someone else (provider external): upgrade it there",
                    req.vcs
                ),
            ));
        };
        let unavailable = |e: crate::vcs::docker::DockerError| {
            ApiError::new(ErrorCode::ExecutorUnavailable, e.to_string())
        };
        let name = handle.vcs.executor_name();
        let mounts: Vec<PathBuf> = self
            .mounts()
            .into_iter()
            .filter(|m| m.executor == name)
            .map(|m| m.target)
            .collect();
        if handle.vcs.long_running && !mounts.is_empty() && !req.force {
            return Err(ApiError::new(
                ErrorCode::InUse,
                format!(
                    "{} long-running mount(s) of vcs {:?} depend on its container ({}); unmount them first, or pass --force to replace it anyway (they will break)",
                    mounts.len(),
                    req.vcs,
                    mounts.iter().map(|m| m.display().to_string()).collect::<Vec<_>>().join(", ")
                ),
            ));
        }
        let current = docker.find(spec).await.map_err(unavailable)?;
        let up_to_date = current.as_ref().is_some_and(|c| c.running && !c.outdated);
        if up_to_date && !req.force {
            return Ok(UpgradeResponse {
                vcs: req.vcs,
                container: spec.container_name(),
                replaced: false,
                mounts,
            });
        }
        docker.replace(spec).await.map_err(unavailable)?;
        if let Some(agent) = &handle.agent {
            agent
                .wait(Duration::from_secs(30))
                .await
                .map_err(|e| ApiError::new(ErrorCode::ExecutorUnavailable, e.to_string()))?;
        }
        self.changed.notify_one();
        self.wake_health();
        warn!(vcs = %req.vcs, container = %spec.container_name(), mounts = mounts.len(), "volume-client container replaced");
        Ok(UpgradeResponse {
            vcs: req.vcs,
            container: spec.container_name(),
            replaced: true,
            mounts,
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

    /// The VCS whose `run` list allows `program`: a command shim names no VCS.
    fn handle_allowing(&self, program: &str) -> Result<&Handle, ApiError> {
        self.vcs
            .iter()
            .find(|h| h.vcs.allows(program))
            .ok_or_else(|| {
                ApiError::new(
                    ErrorCode::NotAllowed,
                    format!(
                        "no vcs allows running {program:?}: add it to the `run` list of the vcs whose image has it"
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

    /// The mounts on `target` now, in the executor's namespace and the daemon's.
    fn before(&self, executor: &Namespace, target: &Path) -> Result<Before, MountinfoError> {
        let on_target = |ns: &Namespace| Ok(ns.mount_at(target)?.map(|m| m.id));
        Ok(Before {
            executor: on_target(executor)?,
            daemon: on_target(&self.own_namespace())?,
        })
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

    /// Unmounts whatever a failed attempt left on `target`: first through the
    /// executor, then, for copies that outlived it (its container died), by a lazy
    /// unmount in the daemon's own namespace, which reaches its peers. Each side
    /// unmounts the mount on top until the one that was there before shows.
    async fn undo(&self, exec: &dyn Executor, target: &Path, before: &Before, fstype: &str) {
        let lazy = UnmountFlags {
            lazy: true,
            force: false,
        };
        for _ in 0..UNDO_LIMIT {
            let Ok(ns) = exec.namespace().await else {
                warn!(target = %target.display(), executor = exec.name(), "cannot reach the executor's namespace to undo a failed mount");
                break;
            };
            let Some(id) = self.left_on(&ns, target, before.executor) else {
                break;
            };
            match exec.unmount(target, fstype, lazy, self.timeout).await {
                Ok(_) => info!(target = %target.display(), mount_id = id, "undid a failed mount"),
                Err(e) => {
                    warn!(target = %target.display(), mount_id = id, error = %e, "cannot undo a failed mount");
                    break;
                }
            }
        }
        let own = self.own_namespace();
        for _ in 0..UNDO_LIMIT {
            let Some(id) = self.left_on(&own, target, before.daemon) else {
                break;
            };
            match crate::mount::syscall::Linux.umount2(target, MntFlags::MNT_DETACH) {
                Ok(()) => {
                    info!(target = %target.display(), mount_id = id, "detached what a failed mount left behind")
                }
                Err(e) => {
                    warn!(target = %target.display(), mount_id = id, error = %e, "cannot undo a failed mount");
                    break;
                }
            }
        }
    }

    /// The id of a mount on `target` in `ns` that was not there `before`.
    fn left_on(&self, ns: &Namespace, target: &Path, before: Option<u32>) -> Option<u32> {
        match ns.mount_at(target) {
            Ok(found) => found.map(|m| m.id).filter(|&id| Some(id) != before),
            Err(e) => {
                warn!(target = %target.display(), namespace = %ns.name, error = %e, "cannot look up what a failed mount left");
                None
            }
        }
    }
}

/// The mount on a target before an attempt, in the executor's namespace and in
/// the daemon's own.
struct Before {
    executor: Option<u32>,
    daemon: Option<u32>,
}

/// At most this many mounts a failed attempt left on one target are undone: a
/// mount helper may stack a few, never more.
const UNDO_LIMIT: usize = 8;

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

fn internal(e: impl std::fmt::Display) -> ApiError {
    ApiError::new(ErrorCode::Internal, e.to_string())
}

/// An executor failure, with secrets scrubbed from message and output.
fn exec_error(req: &MountRequest, e: &ExecError, failed: ErrorCode) -> ApiError {
    ApiError::new(e.code(failed), scrub(req, &e.to_string())).with_output(scrub(req, e.output()))
}

fn verify_error(req: &MountRequest, e: &VerifyError) -> ApiError {
    let code = match e {
        VerifyError::Missing { .. } => ErrorCode::PropagationBroken,
        VerifyError::NotMounted { .. } => ErrorCode::MountFailed,
        _ => ErrorCode::Internal,
    };
    let mut message = format!("{}; the mount was undone", scrub(req, &e.to_string()));
    if let Some(remedy) = e.remedy() {
        message.push_str(&format!("; fix: {remedy}"));
    }
    ApiError::new(code, message)
}
