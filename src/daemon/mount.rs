//! The mount pipeline: policy, routing, execution, proof in every namespace,
//! record; a failed step undoes what the attempt left.

use std::path::Path;

use tracing::info;

use crate::api::wire::{self, ApiError, ErrorCode, MountRecord, MountRequest, MountResponse, Peer};
use crate::daemon::error::{exec_error, internal, verify_error};
use crate::daemon::verify;
use crate::daemon::Daemon;
use crate::ns::mountinfo::MountinfoError;
use crate::ns::namespace::Namespace;
use crate::policy::{redacted_options, scrub};

impl Daemon {
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

    /// The mounts on `target` now, in the executor's namespace and the daemon's.
    fn before(&self, executor: &Namespace, target: &Path) -> Result<Before, MountinfoError> {
        let on_target = |ns: &Namespace| Ok(ns.mount_at(target)?.map(|m| m.id));
        Ok(Before {
            executor: on_target(executor)?,
            daemon: on_target(&self.own_namespace())?,
        })
    }
}

/// The mount on a target before an attempt, in the executor's namespace and in
/// the daemon's own.
pub(super) struct Before {
    pub(super) executor: Option<u32>,
    pub(super) daemon: Option<u32>,
}
