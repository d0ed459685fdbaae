//! Heals a corrupted mount of a long-running VCS: its client died (the container
//! restarted or was replaced, the server dropped it), so the mount is made afresh
//! through the VCS with the same request, on a staging point under the kubelet
//! root (the VCS sees it, and propagation carries what is mounted there to the
//! daemon) in a directory only root can write; a copy of it replaces the stale
//! mount on the target (propagation carries that to the host, the VCS and the
//! kubelet), the record takes the new mount id, and then every other mount
//! namespace that still holds a bind of the stale superblock (pod containers,
//! found by its device id in every process's mountinfo) gets a copy of the same
//! directory of the fresh mount in its place. A stale FUSE connection is aborted,
//! so a client that still hangs on it exits and its VCS reaps it.

use std::os::fd::{AsFd, OwnedFd};
use std::path::Path;
use std::time::{Duration, Instant};

use tracing::{info, warn};

use crate::api::wire::{HealReport, Health, MountRecord, MountRequest, UnmountRequest};
use crate::daemon::error::{HealError, PipelineError};
use crate::daemon::heal_binds::{abort_fuse, as_they_were, rebind_all};
use crate::daemon::mount::{lookup_error, Before, Undo};
use crate::daemon::verify::{self, Wanted};
use crate::daemon::Daemon;
use crate::executor::{Executor, Made};
use crate::mount::by_handle;
use crate::mount::options::MountOptions;
use crate::mount::rebind::{self, Swap};
use crate::mount::syscall::MntFlags;
use crate::ns::holders::holders;
use crate::ns::mountinfo::Mount;
use crate::ns::namespace::Namespace;
use crate::policy::{CheckedTarget, Policy};

/// The stale mount, if still on the target (its client may have unmounted it).
struct Stale {
    mount: Option<Mount>,
    /// A handle on its root (the target resolved beneath the target roots): it
    /// keeps its superblock, and device id, until the heal ends.
    pin: Option<OwnedFd>,
    /// Its device id: its own, or the one the daemon remembers for the target.
    device: Option<(u32, u32)>,
}

/// Where the copy of the fresh mount goes on the target.
enum Onto {
    /// In place of the stale mount of this id.
    Stale(u32),
    /// Onto the target directory (its handle): the stale mount is gone.
    Empty(OwnedFd),
}

/// Where a heal stands once the fresh mount is made on the staging point.
struct Step<'a> {
    stale: Stale,
    /// The staging point, resolved beneath the staging directory.
    staging: &'a CheckedTarget,
    /// What the staging point held before.
    before: &'a Before,
}

/// What a heal did.
struct Healed {
    mount_id: u32,
    /// The namespaces whose stale mount was replaced, and where.
    touched: Vec<String>,
    /// The ones that could not be.
    missed: Vec<String>,
}

impl Daemon {
    /// Heals each mount the last check found corrupted, as its backoff and the
    /// rate limit allow; reports once each one that cannot be healed.
    pub(super) async fn heal_corrupted(&self) {
        let corrupted: Vec<MountRecord> = {
            let health = self.mount_health();
            self.mounts()
                .into_iter()
                .filter(|m| {
                    health.iter().any(|h| {
                        h.mount_id == m.mount_id
                            && h.target == m.target
                            && matches!(h.health, Health::Corrupted | Health::Vanished)
                    })
                })
                .collect()
        };
        for record in corrupted {
            self.heal_one(record).await;
        }
    }

    async fn heal_one(&self, record: MountRecord) {
        let target = record.target.clone();
        let vcs = record
            .executor
            .strip_prefix("vcs/")
            .unwrap_or(&record.executor)
            .to_owned();
        let report = |result: &str, mount_id, touched, error| HealReport {
            at: crate::daemon::health::now(),
            result: result.to_owned(),
            stale_mount_id: record.mount_id,
            mount_id,
            touched,
            error,
        };
        let Some(req) = self.healer.request(&record) else {
            if self.healer.first_report(&target) {
                let why = "it needs secrets that were kept in memory only and lost when the daemon restarted; unmount and mount it again (delete the pod)";
                warn!(target = %target.display(), mount_id = record.mount_id, vcs = %vcs,
                    "corrupted mount cannot be healed: {why}");
                self.metrics.heal(&vcs, "not_healable");
                self.healer
                    .set_last(&target, report("not_healable", None, vec![], why.into()));
                self.changed.notify_one();
            }
            return;
        };
        // One operation at a time on a target: a request in progress goes first.
        let Ok(_claim) = self.claim(&target, Duration::ZERO).await else {
            return;
        };
        // What the check found is still what is recorded: not unmounted meanwhile,
        // and its id not given to the record of another mount.
        if !self.still_recorded(&record) {
            return;
        }
        if !self
            .healer
            .schedule
            .lock()
            .unwrap()
            .may_start(&target, Instant::now())
        {
            return;
        }
        let start = Instant::now();
        let options = self.policy.options(&req);
        let run = async {
            self.heal(&record, &req, &options)
                .await
                .map_err(|e| e.to_api(&options))
        };
        let outcome = self
            .observed("heal", &record.executor, &record.fstype, run)
            .await;
        let last = match outcome {
            Ok(healed) => {
                self.healer.schedule.lock().unwrap().forget(&target);
                self.metrics.heal(&vcs, "healed");
                info!(target = %target.display(), stale_mount_id = record.mount_id,
                    mount_id = healed.mount_id, vcs = %vcs, touched = ?healed.touched,
                    missed = ?healed.missed, elapsed = ?start.elapsed(), "corrupted mount healed");
                report(
                    "healed",
                    Some(healed.mount_id),
                    healed.touched,
                    healed.missed.join("; "),
                )
            }
            Err(e) => {
                self.healer
                    .schedule
                    .lock()
                    .unwrap()
                    .failed(&target, Instant::now());
                self.metrics.heal(&vcs, "failed");
                warn!(target = %target.display(), mount_id = record.mount_id, vcs = %vcs,
                    error = %e, "cannot heal a corrupted mount; will try again");
                report("failed", None, vec![], e.to_string())
            }
        };
        self.healer.set_last(&target, last);
        self.changed.notify_one();
        self.wake_health();
    }

    /// Mounts `req` afresh on a staging point and puts it in place of the stale
    /// mount of `record`; the staging point is cleared however it ends.
    async fn heal(
        &self,
        record: &MountRecord,
        req: &MountRequest,
        options: &MountOptions,
    ) -> Result<Healed, HealError> {
        let exec = self.made_by(record)?;
        exec.ready().await.map_err(PipelineError::NotReady)?;
        let ns = exec.namespace().await.map_err(PipelineError::Namespaces)?;
        // 1. The stale mount as the daemon sees it, if its client did not unmount it.
        let stale = self.stale(record, &ns)?;
        // 2. The same request, on a staging point of its own, checked to a handle.
        let (dir, point) = self.staging_point(record.mount_id)?;
        let staged = MountRequest {
            target: point.clone(),
            caller_pid: None,
            ..req.clone()
        };
        let checked = self
            .policy
            .check_staged(&staged, options, &dir)
            .map_err(PipelineError::Policy)?;
        let before = self.before(&ns, &point)?;
        let (result, made) = match exec.mount(&staged, options, &checked, self.timeout).await {
            Ok(made) => {
                let step = Step {
                    stale,
                    staging: &checked.target,
                    before: &before,
                };
                (
                    self.put_in_place(exec.as_ref(), record, req, step).await,
                    Some(made),
                )
            }
            Err(e) => (Err(PipelineError::Execute(e).into()), None),
        };
        // 3. The staging point cleared: its mount detached here (which reaches the
        //    VCS), what remains undone through the executor, the directory removed.
        let own = self.own_namespace();
        if let Ok(Some(m)) = own.mount_at(&point) {
            if Some(m.id) != before.daemon {
                let place = checked.target.place();
                let detached = by_handle::unmount(
                    &*self.syscall,
                    place.parent,
                    place.name,
                    MntFlags::MNT_DETACH,
                );
                if let Err(e) = detached {
                    warn!(path = %point.display(), error = %e, "cannot detach a staged mount");
                }
            }
        }
        let undo = Undo {
            target: &checked.target,
            before: &before,
            fstype: &req.fstype,
        };
        self.undo(exec.as_ref(), &undo, made.as_ref()).await;
        drop(checked);
        let _ = std::fs::remove_dir(&point);
        result
    }

    /// The stale mount on the target of `record`, resolved as an unmount's target
    /// is, checked by its id, and known for the recorded one (see
    /// [`Daemon::is_recorded_mount`]) in the executor's namespace `ns`.
    fn stale(&self, record: &MountRecord, ns: &Namespace) -> Result<Stale, HealError> {
        let target = record.target.as_path();
        let own = self.own_namespace();
        let mount = own
            .mount_at(target)
            .map_err(|source| lookup_error(target, &own, source))?
            .filter(|m| m.fstype == record.fstype);
        let checked = self.resolved(target)?;
        if let Some(m) = &mount {
            if rebind::mount_id(&checked.fd) != Some(m.id.into()) {
                return Err(HealError::Changed {
                    target: target.to_owned(),
                });
            }
            self.is_recorded_mount(record, ns, m)?;
        }
        let device = mount
            .as_ref()
            .map(|m| (m.major, m.minor))
            .or_else(|| self.healer.device(target));
        Ok(Stale {
            pin: mount.is_some().then_some(checked.fd),
            mount,
            device,
        })
    }

    /// Steps after the fresh mount is made on the staging point.
    async fn put_in_place(
        &self,
        exec: &dyn Executor,
        record: &MountRecord,
        req: &MountRequest,
        step: Step<'_>,
    ) -> Result<Healed, HealError> {
        let Step {
            stale,
            staging,
            before,
        } = step;
        let target = record.target.as_path();
        let own = self.own_namespace();
        let point = staging.path();
        own.mount_at(point)
            .map_err(|source| lookup_error(point, &own, source))?
            .filter(|m| Some(m.id) != before.daemon)
            .ok_or_else(|| HealError::NotPropagated {
                staging: point.to_owned(),
            })?;
        // 4. The binds of the stale mount elsewhere as they are now: once it is
        //    replaced here its peer group is gone, and a slave of it turns private.
        let binds = match stale.device {
            Some(device) => {
                let host_proc = self.host_proc.clone();
                let scan = tokio::task::spawn_blocking(move || holders(&host_proc, device, &[]));
                self.joined("scan", target, scan).await?
            }
            None => Vec::new(),
        };
        // 5. A copy of the fresh mount in place of the stale one here, or on the
        //    empty target. The staging point is opened again: its handle from
        //    before the mount is on the directory beneath it.
        let fresh_root = Policy::resolve_target(point, std::slice::from_ref(&staging.root))
            .map_err(PipelineError::Policy)?;
        let sys = self.syscall.clone();
        let target_owned = target.to_owned();
        let onto = match &stale.mount {
            Some(m) => Onto::Stale(m.id),
            None => Onto::Empty(self.resolved(target)?.fd),
        };
        let swapped = tokio::task::spawn_blocking(move || {
            let fresh = rebind::clone_subtree(&*sys, fresh_root.fd.as_fd(), Path::new("/"))?;
            match onto {
                Onto::Stale(id) => rebind::swap(
                    &*sys,
                    Swap {
                        namespace: None,
                        name: "the daemon's namespace",
                        mount_point: &target_owned,
                        stale: id.into(),
                        fresh,
                        propagation: None,
                    },
                ),
                Onto::Empty(fd) => rebind::place(&*sys, fresh, fd),
            }
        });
        self.joined("swap", target, swapped)
            .await?
            .map_err(|source| HealError::Swap {
                target: target.to_owned(),
                source,
            })?;
        let mut touched = vec![format!("daemon: {}", target.display())];
        // 6. Verified in the executor's, the host's and the kubelet's namespaces.
        let views = self
            .views(exec, req.caller_pid)
            .await
            .map_err(PipelineError::Namespaces)?;
        let nothing = Wanted::default();
        let mount = verify::mounted(target, None, &Made::default(), &nothing, &views)
            .and_then(|mount| verify::reached(target, &mount, &nothing, &views).map(|_| mount))
            .map_err(HealError::Verify)?;
        if Some((mount.major, mount.minor)) == stale.device {
            return Err(HealError::StillStale {
                target: target.to_owned(),
            });
        }
        // 7. The record takes the new mount's ids.
        self.rerecord(
            record,
            mount.id,
            views.executor.unique_mount_at(target, mount.id),
        )?;
        self.healer.set_device(target, (mount.major, mount.minor));
        // 8. Every other namespace that still holds the stale superblock, each
        //    given a copy of the healed mount, opened as the target was.
        let Some(device) = stale.device else {
            return Ok(Healed {
                mount_id: mount.id,
                touched,
                missed: vec!["the stale mount's device is not known: binds of it elsewhere are left as they are".into()],
            });
        };
        let healed = self.resolved(target)?;
        let (sys, host_proc) = (self.syscall.clone(), self.host_proc.clone());
        let fstype = record.fstype.clone();
        let rebound = tokio::task::spawn_blocking(move || {
            let found = as_they_were(holders(&host_proc, device, &[]), &binds);
            let result = rebind_all(&*sys, &host_proc, &healed.fd, &found);
            // A pinned superblock's device id cannot name another connection yet.
            if stale.pin.is_some() {
                abort_fuse(&fstype, device);
            }
            drop(stale);
            result
        });
        let (rebound, missed) = self.joined("rebind", target, rebound).await?;
        touched.extend(rebound);
        Ok(Healed {
            mount_id: mount.id,
            touched,
            missed,
        })
    }

    /// `target` resolved as an unmount's target is: beneath the target roots, no
    /// symlink followed.
    fn resolved(&self, target: &Path) -> Result<CheckedTarget, HealError> {
        let req = UnmountRequest {
            target: target.to_owned(),
            ..UnmountRequest::default()
        };
        let checked = self
            .policy
            .check_unmount(&req)
            .map_err(PipelineError::Policy)?;
        Ok(checked)
    }

    /// The result of a blocking `step` of the heal of `target`.
    async fn joined<T>(
        &self,
        step: &'static str,
        target: &Path,
        task: tokio::task::JoinHandle<T>,
    ) -> Result<T, HealError> {
        task.await.map_err(|source| HealError::Task {
            step,
            target: target.to_owned(),
            source,
        })
    }
}
