//! The unmount pipeline: policy, the executor that made the mount, execution,
//! proof that it is gone everywhere, and the record forgotten.

use std::path::Path;

use tracing::info;

use crate::api::wire::{self, ApiError, Peer, UnmountRequest, UnmountResponse};
use crate::daemon::error::{Operation, PipelineError};
use crate::daemon::mount::lookup_error;
use crate::daemon::turn::Turn;
use crate::daemon::verify::{self, VerifyError};
use crate::daemon::Daemon;
use crate::executor::{Expected, UnmountFlags};
use crate::mount::options::MountOptions;
use crate::ns::namespace::Namespace;

impl Daemon {
    /// Unmounts, counted in the metrics under the recorded executor and type.
    pub async fn unmount(
        &self,
        peer: Peer,
        req: UnmountRequest,
    ) -> Result<UnmountResponse, ApiError> {
        let recorded = self.record.on_target(&req.target).pop();
        let (executor, fstype) = recorded.map_or_else(
            || (self.executors[0].name().to_owned(), String::new()),
            |r| (r.record.executor, r.record.fstype),
        );
        let run = async {
            self.unmount_verified(peer, &req)
                .await
                .map_err(|e| e.to_api(Operation::Unmount, &MountOptions::default()))
        };
        self.observed("unmount", &executor, &fstype, run).await
    }

    async fn unmount_verified(
        &self,
        peer: Peer,
        req: &UnmountRequest,
    ) -> Result<UnmountResponse, PipelineError> {
        // 1. Who may ask, and for what.
        self.policy.check_peer(peer.uid)?;
        let checked = self.policy.check_unmount(req)?;
        let path = checked.path.clone();
        let target = path.as_path();
        let deadline = wire::deadline(req.timeout_seconds, self.timeout);
        // 2. The target's turn (one operation at a time on it), and the executor
        //    that made its mount: by the record, else by the type mounted there.
        let caller = req.caller_pid.or(peer.pid);
        let turn = self.turn(target, deadline, caller, |recorded| match recorded {
            Some(made) => self.made_by(made),
            // Not made by the daemon: route it by the type mounted there now.
            None => {
                let own = self.own_namespace();
                let here = own
                    .mount_at(target)
                    .map_err(|source| lookup_error(target, &own, source))?;
                Ok(self.route(here.as_ref().map_or("", |m| m.fstype.as_str())))
            }
        });
        let Turn {
            claim: _claim,
            recorded,
            exec,
            views,
        } = turn.await?;
        let mount = views
            .executor
            .mount_at(target)
            .map_err(|source| lookup_error(target, &views.executor, source))?
            .ok_or_else(|| PipelineError::NotMounted {
                target: target.to_owned(),
                namespace: views.executor.name.clone(),
            })?;
        // 3. Execute, on the mount just seen there, and the recorded one: a
        //    record's unique id names a mount of the namespace it was made in,
        //    which a restarted container has replaced with copies of its own.
        let unique = views
            .executor
            .recorded_unique(recorded.and_then(|r| r.unique));
        let expected = Expected {
            id: mount.id,
            unique,
        };
        let flags = UnmountFlags {
            lazy: req.lazy,
            force: req.force,
        };
        let output = exec
            .unmount(checked, Some(expected), &mount.fstype, flags, deadline)
            .await
            .map_err(PipelineError::Execute)?;
        // 4. Prove it is gone everywhere; forget the record of that mount (by its
        //    id: a mount it covered keeps its own) once the executor's copy is gone.
        let proof = verify::unmounted(target, &mount, &views);
        let executor_gone = match &proof {
            Ok(_) => true,
            Err(VerifyError::StillMounted { namespace, .. }) => *namespace != views.executor.name,
            Err(_) => false,
        };
        if executor_gone {
            self.forget(target, mount.id, &views.executor)?;
        }
        let seen = proof.map_err(|source| PipelineError::StillMounted {
            source,
            output: output.clone(),
            executor_gone,
        })?;
        info!(target = %target.display(), executor = exec.name(), "unmounted and verified");
        Ok(UnmountResponse {
            target: target.to_owned(),
            seen,
            output,
        })
    }

    /// Forgets the record of the mount `id` just unmounted from `target`. When
    /// the record holds another id (the mount was made in a namespace that has
    /// since been replaced, as an agent's is when it restarts), the records on
    /// `target` whose mount is no longer on it in the executor's namespace go (an
    /// id there may name another mount now: ids are reused).
    fn forget(&self, target: &Path, id: u32, ns: &Namespace) -> Result<(), PipelineError> {
        let forget_err = |source| PipelineError::Forget {
            target: target.to_owned(),
            source,
        };
        let recorded_here = self.record.get(target, id).is_some();
        let gone: Vec<u32> = if recorded_here {
            vec![id]
        } else {
            let recorded = self.record.on_target(target);
            if recorded.is_empty() {
                return Ok(());
            }
            let table = ns
                .table()
                .map_err(|source| lookup_error(target, ns, source))?;
            recorded
                .iter()
                .map(|e| e.record.mount_id)
                .filter(|&id| table.by_id(id).is_none_or(|m| m.target != target))
                .collect()
        };
        for &id in &gone {
            self.record.remove(target, id).map_err(forget_err)?;
        }
        if !gone.is_empty() {
            self.healer.forget(target);
        }
        self.changed.notify_one();
        Ok(())
    }
}
