//! The unmount pipeline: policy, the executor that made the mount, execution,
//! proof that it is gone everywhere, and the record forgotten.

use tracing::info;

use crate::api::wire::{
    self, ApiError, ErrorCode, MountRequest, Peer, UnmountRequest, UnmountResponse,
};
use crate::daemon::error::{exec_error, internal};
use crate::daemon::verify::{self, VerifyError};
use crate::daemon::Daemon;
use crate::executor::{ExecError, UnmountFlags};

impl Daemon {
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
}
