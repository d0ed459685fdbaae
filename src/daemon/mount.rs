//! The mount pipeline: policy, the target's turn, routing, an intent recorded,
//! execution, proof in every namespace, record; a failed step undoes what the
//! attempt left. A retry of a mount the daemon made answers it again.

use std::path::Path;
use std::sync::Arc;

use tracing::info;

use crate::api::wire::{self, ApiError, MountRecord, MountRequest, MountResponse, Peer};
use crate::daemon::copies;
use crate::daemon::error::{Operation, PipelineError};
use crate::daemon::record::Entry;
use crate::daemon::turn::Turn;
use crate::daemon::verify::{self, Views, Wanted};
use crate::daemon::Daemon;
use crate::executor::{self, Executor, Made};
use crate::mount::options::MountOptions;
use crate::mount::probe;
use crate::ns::namespace::Namespace;
use crate::policy::{fd_source, is_bind, CheckedMount, CheckedTarget};

impl Daemon {
    /// Mounts, counted in the metrics (see [`metrics`](super::metrics)).
    pub async fn mount(&self, peer: Peer, req: MountRequest) -> Result<MountResponse, ApiError> {
        let fstype = req.fstype.clone();
        // What a peer other than root always gets is part of its request.
        let req = self.policy.enforced(req, peer.uid);
        let options = self.policy.options(&req);
        let recorded = self.record.on_target(&req.target).pop().map(|e| e.record);
        let executor = match self.route_request(&req, &options, recorded.as_ref()) {
            Ok(exec) => exec.name().to_owned(),
            Err(_) => self.executors[0].name().to_owned(),
        };
        let run = async {
            self.mount_verified(peer, &req, &options)
                .await
                .map_err(|e| e.to_api(Operation::Mount, &options))
        };
        self.observed("mount", &executor, &fstype, run).await
    }

    async fn mount_verified(
        &self,
        peer: Peer,
        req: &MountRequest,
        options: &MountOptions,
    ) -> Result<MountResponse, PipelineError> {
        // 1. Who may ask, and for what.
        self.policy.check_peer(peer.uid)?;
        // A source named by the caller's fd (a kubelet subPath): that fd, taken
        // from the peer, never the name.
        let caller_source = match req.source_fd {
            Some(fd) => Some(fd_source::take(peer.pid, fd)?),
            None => None,
        };
        let checked = self
            .policy
            .check_mount(req, options, peer.uid, caller_source.as_ref())?;
        let deadline = wire::deadline(req.timeout_seconds, self.timeout);
        let source = match (&caller_source, &checked.source) {
            // The path it was found at, for the record; one that is not UTF-8
            // is not converted: the name given stays.
            (Some(_), Some(located)) => located.path.to_str().unwrap_or(&req.source).to_owned(),
            _ => req.source.clone(),
        };
        let req = &MountRequest {
            target: checked.target.path.clone(),
            fstype: self.probed(req, options, &checked, deadline).await?,
            source,
            source_fd: None,
            ..req.clone()
        };
        let target = req.target.as_path();
        // 2. One operation at a time on a target; the others wait their turn.
        // 3. The executor for this type (a change's: the one that made the
        //    mount), and the namespaces that must see the mount.
        let caller = req.caller_pid.or(peer.pid);
        let turn = self.turn(target, deadline, caller, |recorded| {
            self.route_request(req, options, recorded)
        });
        let Turn {
            claim: _claim,
            exec,
            views,
            ..
        } = turn.await?;
        let before = self.before(&views.executor, target)?;
        // A remount or a propagation change acts on the mount already there.
        if executor::changes(req, options) {
            let change = self.change(
                req,
                options,
                exec.as_ref(),
                &checked,
                &views,
                &before,
                deadline,
            );
            return change.await;
        }
        // 4. A mount the daemon made there already: a retry of the same request
        //    is answered again, another request refused.
        if let Some(done) = self.made_before(req, options, exec.as_ref(), &views, &before)? {
            return Ok(done);
        }
        // 5. Announce it durably, then execute; on failure undo whatever it left.
        let entry = Entry {
            record: MountRecord {
                target: target.to_owned(),
                executor: exec.name().to_owned(),
                source: options.scrub(&req.source),
                fstype: req.fstype.clone(),
                options: options.shown(),
                mount_id: 0,
                unique: None,
            },
            asked_fstype: req.fstype.clone(),
            before: before.executor,
        };
        let intent = self
            .record
            .intend(&entry)
            .map_err(|source| PipelineError::Intent {
                target: target.to_owned(),
                source,
            })?;
        let undo = Undo {
            target: &checked.target,
            before: &before,
            fstype: &req.fstype,
        };
        let made = match exec.mount(req, options, &checked, deadline).await {
            Ok(made) => made,
            Err(e) => {
                self.undo_and_forget(exec.as_ref(), &undo, None, intent)
                    .await;
                return Err(PipelineError::Execute(e));
            }
        };
        let output = made.output.clone();
        // 6. Prove it in every namespace (the executor's by the mount it made, when
        //    it holds it); undo when it did not arrive everywhere.
        let wanted = Wanted::of_mount(options);
        let root = &checked.target.root;
        let proved = match verify::mounted(target, before.executor, &made, &wanted, &views) {
            Ok(mount) => copies::given(target, root, &mount, &wanted, &views, deadline)
                .await
                .map(|seen| (mount, seen)),
            Err(e) => Err(e),
        };
        let (mount, seen) = match proved {
            Ok(found) => found,
            Err(source) => {
                self.undo_and_forget(exec.as_ref(), &undo, Some(&made), intent)
                    .await;
                let output = options.scrub(&output);
                return Err(PipelineError::Verify { source, output });
            }
        };
        // 7. Record it by its mount id (and its unique id, which an unmount
        //    checks); a mount that cannot be recorded is undone.
        let record = MountRecord {
            fstype: mount.fstype.clone(),
            mount_id: mount.id,
            unique: views.executor.unique_mount_at(target, mount.id),
            ..entry.record
        };
        let committed = self.record.commit(
            intent,
            Entry {
                record: record.clone(),
                before: None,
                ..entry
            },
        );
        if let Err((source, intent)) = committed {
            self.undo_and_forget(exec.as_ref(), &undo, Some(&made), intent)
                .await;
            return Err(PipelineError::Record {
                target: target.to_owned(),
                source,
            });
        }
        self.healer.remember(req);
        self.healer.set_device(target, (mount.major, mount.minor));
        self.changed.notify_one();
        info!(target = %target.display(), executor = exec.name(), fstype = %record.fstype,
            source = %record.source, options = ?record.options, mount_id = mount.id, "mounted and verified");
        Ok(MountResponse {
            record,
            seen,
            output: options.scrub(&output),
        })
    }

    /// The executor of a request: for a change of the mount on its target, the
    /// one that made that mount (`recorded`, the newest record there); else the
    /// VCS that claims its type (a bind given none has mount(8)'s `none`), else
    /// the host executor.
    fn route_request(
        &self,
        req: &MountRequest,
        options: &MountOptions,
        recorded: Option<&MountRecord>,
    ) -> Result<Arc<dyn Executor>, PipelineError> {
        if executor::changes(req, options) {
            if let Some(made) = recorded {
                return self.made_by(made);
            }
        }
        Ok(match req.fstype.as_str() {
            "" if is_bind(req, options) => self.route("none"),
            fstype => self.route(fstype),
        })
    }

    /// The request's type, or, when it leaves the type to be probed (none,
    /// `auto`, a list) and its source is a device or a checked file, the type
    /// libblkid finds there, which must be one of a list given; with no type
    /// and another source, the type mount(8) guesses from it (`nfs`, `cifs`).
    async fn probed(
        &self,
        req: &MountRequest,
        options: &MountOptions,
        checked: &CheckedMount,
        deadline: std::time::Duration,
    ) -> Result<String, PipelineError> {
        let Some(allowed) = probe::allowed(&req.fstype) else {
            return Ok(req.fstype.clone());
        };
        if is_bind(req, options) || executor::changes(req, options) {
            return Ok(req.fstype.clone());
        }
        let device = match &checked.source {
            // A file, through the daemon's handle on it: never by its name again.
            Some(file) => std::path::PathBuf::from(format!(
                "/proc/{}/fd/{}",
                std::process::id(),
                std::os::fd::AsRawFd::as_raw_fd(&file.fd)
            )),
            None if is_block_device(&req.source) => std::path::PathBuf::from(&req.source),
            // No type named, nothing to probe: the type mount(8) would guess.
            _ if allowed.is_empty() => {
                return Ok(probe::guess(&req.source).map_or_else(|| req.fstype.clone(), Into::into))
            }
            _ => return Ok(req.fstype.clone()),
        };
        let found =
            probe::probe(&device, deadline)
                .await
                .map_err(|error| PipelineError::Probe {
                    source_path: req.source.clone(),
                    error: Box::new(error),
                })?;
        if !allowed.is_empty() && !allowed.contains(&found.as_str()) {
            return Err(PipelineError::NotListed {
                source_path: req.source.clone(),
                found,
                listed: req.fstype.clone(),
            });
        }
        Ok(found)
    }

    /// When the mount on top of the target is one the daemon recorded: the answer
    /// for a retry of the request that made it (proved again), `AlreadyMounted`
    /// for another. A recorded mount that vanished is forgotten.
    fn made_before(
        &self,
        req: &MountRequest,
        options: &MountOptions,
        exec: &dyn Executor,
        views: &Views,
        before: &Before,
    ) -> Result<Option<MountResponse>, PipelineError> {
        let target = req.target.as_path();
        for entry in self.record.on_target(target) {
            let id = entry.record.mount_id;
            if before.executor == Some(id) && entry.record.executor == exec.name() {
                let same = entry.record.source == options.scrub(&req.source)
                    && entry.record.options == options.shown()
                    && entry.asked_fstype == req.fstype;
                if !same {
                    return Err(already_mounted(entry));
                }
                let wanted = Wanted::of_mount(options);
                let seen = verify::mounted(target, None, &Made::default(), &wanted, views)
                    .and_then(|mount| verify::reached(target, &mount, &wanted, views))
                    .map_err(|source| PipelineError::Verify {
                        source,
                        output: String::new(),
                    })?;
                info!(target = %target.display(), mount_id = id, "already mounted by the same request");
                return Ok(Some(MountResponse {
                    record: entry.record,
                    seen,
                    output: String::new(),
                }));
            }
            // Not on top: still there under another mount, or gone. An id names
            // a mount of the executor's namespace, which a restarted container
            // has made anew: there it is the recorded mount only on its target.
            let table = views
                .executor
                .table()
                .map_err(|source| lookup_error(target, &views.executor, source))?;
            if table.by_id(id).is_some_and(|m| m.target == target) {
                return Err(already_mounted(entry));
            }
            self.record
                .remove(target, id)
                .map_err(|source| PipelineError::Forget {
                    target: target.to_owned(),
                    source,
                })?;
        }
        Ok(None)
    }

    /// The mounts on `target` now, in the executor's namespace and the daemon's.
    pub(super) fn before(
        &self,
        executor: &Namespace,
        target: &Path,
    ) -> Result<Before, PipelineError> {
        let on_target = |ns: &Namespace| {
            ns.mount_at(target)
                .map(|m| m.map(|m| m.id))
                .map_err(|source| lookup_error(target, ns, source))
        };
        Ok(Before {
            executor: on_target(executor)?,
            daemon: on_target(&self.own_namespace())?,
        })
    }

    /// Undoes a failed attempt, and forgets its intent when nothing is left: what
    /// could not be undone stays announced, for the next start to find.
    async fn undo_and_forget(
        &self,
        exec: &dyn Executor,
        undo: &Undo<'_>,
        made: Option<&Made>,
        intent: crate::daemon::record::Intent,
    ) {
        if self.undo(exec, undo, made).await {
            if let Err(e) = self.record.abandon(intent) {
                tracing::warn!(target = %undo.target.path().display(), error = %e, "cannot forget the intent of an undone mount");
            }
        }
    }
}

fn already_mounted(entry: Entry) -> PipelineError {
    PipelineError::AlreadyMounted {
        target: entry.record.target,
        mount_id: entry.record.mount_id,
        from: entry.record.source,
        fstype: entry.record.fstype,
        options: entry.record.options,
    }
}

pub(super) fn lookup_error(
    target: &Path,
    ns: &Namespace,
    source: crate::ns::mountinfo::MountinfoError,
) -> PipelineError {
    PipelineError::Lookup {
        target: target.to_owned(),
        namespace: ns.name.clone(),
        source,
    }
}

/// The mount on a target before an attempt, in the executor's namespace and in
/// the daemon's own.
pub(super) struct Before {
    pub(super) executor: Option<u32>,
    pub(super) daemon: Option<u32>,
}

/// What an undo needs: the checked target, what was on it before, its type.
pub(super) struct Undo<'a> {
    pub(super) target: &'a CheckedTarget,
    pub(super) before: &'a Before,
    pub(super) fstype: &'a str,
}

fn is_block_device(source: &str) -> bool {
    use std::os::unix::fs::FileTypeExt;
    source.starts_with('/')
        && std::fs::metadata(source).is_ok_and(|m| m.file_type().is_block_device())
}
