//! Heals a corrupted mount of a long-running VCS: its client died (the container
//! restarted or was replaced, the server dropped it), so the mount is made afresh
//! through the VCS with the same request, on a staging point under the kubelet
//! root that no pod reaches; a copy of it replaces the stale mount on the target
//! (propagation carries that to the host, the VCS and the kubelet), the record
//! takes the new mount id, and then every other mount namespace that still holds
//! a bind of the stale superblock (pod containers, found by its device id in every
//! process's mountinfo) gets a copy of the same directory of the fresh mount in
//! its place. A stale FUSE connection is aborted, so a client that still hangs on
//! it exits and its VCS reaps it.

use std::fs::File;
use std::os::fd::AsFd;
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};
use std::time::Instant;

use nix::fcntl::OFlag;
use nix::sys::stat::Mode;
use tracing::{info, warn};

use crate::api::wire::{ApiError, ErrorCode, HealReport, Health, MountRecord, MountRequest};
use crate::daemon::error::{exec_error, internal, verify_error};
use crate::daemon::mount::Before;
use crate::daemon::{verify, Daemon};
use crate::executor::Executor;
use crate::mount::rebind::{self, Swap};
use crate::mount::syscall::{Linux, MntFlags, Syscall};
use crate::ns::holders::{holders, Holder};
use crate::ns::mountinfo::Mount;

/// Where fresh mounts are staged, under the kubelet root: beneath `plugins`, which
/// only the kubelet and its plugins reach.
const STAGING: &str = "plugins/sidemount~heal";

/// The stale mount, if still on the target (its client may have unmounted it).
struct Stale {
    mount: Option<Mount>,
    /// A handle on its root.
    pin: Option<std::os::fd::OwnedFd>,
    /// Its device id: its own, or the one the daemon remembers for the target.
    device: Option<(u32, u32)>,
}

/// Where a heal stands once the fresh mount is made on the staging point.
struct Step<'a> {
    stale: Stale,
    staging: &'a Path,
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
        let Ok(_claim) = self.claim(&target) else {
            return;
        };
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
        let outcome = self
            .observed(
                "heal",
                &record.executor,
                &record.fstype,
                self.heal(&record, &req),
            )
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
    async fn heal(&self, record: &MountRecord, req: &MountRequest) -> Result<Healed, ApiError> {
        let target = record.target.as_path();
        let exec = self.named(&record.executor)?;
        let failed = |e| exec_error(req, &e, ErrorCode::MountFailed);
        exec.ready().await.map_err(failed)?;
        // 1. The stale mount as the daemon sees it, if its client did not unmount
        //    it; a handle on it keeps its superblock (and device id) until the
        //    heal ends.
        let own = self.own_namespace();
        let mount = own
            .mount_at(target)
            .map_err(internal)?
            .filter(|m| m.fstype == record.fstype);
        let pin = match &mount {
            Some(m) => {
                let pin = open_dir(target).map_err(internal)?;
                if rebind::mount_id(&pin) != Some(m.id.into()) {
                    return Err(ApiError::new(
                        ErrorCode::Busy,
                        format!(
                            "the mount on {} changed while it was looked up",
                            target.display()
                        ),
                    ));
                }
                Some(pin)
            }
            None => None,
        };
        let device = mount
            .as_ref()
            .map(|m| (m.major, m.minor))
            .or_else(|| self.healer.device(target));
        let stale = Stale { mount, pin, device };
        // 2. The same request, on a staging point of its own.
        let staging = self.staging_point(record.mount_id).map_err(internal)?;
        let staged = MountRequest {
            target: staging.clone(),
            caller_pid: None,
            ..req.clone()
        };
        let ns = exec.namespace().await.map_err(failed)?;
        let before = self.before(&ns, &staging).map_err(internal)?;
        let result = match exec.mount(&staged, self.timeout).await {
            Ok(_) => {
                let step = Step {
                    stale,
                    staging: &staging,
                    before: &before,
                };
                self.put_in_place(exec.as_ref(), record, req, step).await
            }
            Err(e) => Err(failed(e)),
        };
        // 3. The staging point cleared: its mount detached here (which reaches the
        //    VCS), what remains undone through the executor, the directory removed.
        if let Ok(Some(m)) = own.mount_at(&staging) {
            if Some(m.id) != before.daemon {
                let _ = Linux.umount2(&staging, MntFlags::MNT_DETACH);
            }
        }
        self.undo(exec.as_ref(), &staging, &before, &req.fstype)
            .await;
        let _ = std::fs::remove_dir(&staging);
        result
    }

    /// Steps after the fresh mount is made on `staging`.
    async fn put_in_place(
        &self,
        exec: &dyn Executor,
        record: &MountRecord,
        req: &MountRequest,
        step: Step<'_>,
    ) -> Result<Healed, ApiError> {
        let Step {
            stale,
            staging,
            before,
        } = step;
        let target = record.target.as_path();
        let own = self.own_namespace();
        own.mount_at(staging)
            .map_err(internal)?
            .filter(|m| Some(m.id) != before.daemon)
            .ok_or_else(|| {
                ApiError::new(
                    ErrorCode::PropagationBroken,
                    format!(
                        "the fresh mount on {} did not reach the daemon's namespace",
                        staging.display()
                    ),
                )
            })?;
        // 4. A copy of the fresh mount in place of the stale one here, or on the
        //    empty target.
        let proc = File::open(self.proc.path()).map_err(internal)?;
        let (staging_owned, target_owned, stale_id) = (
            staging.to_owned(),
            target.to_owned(),
            stale.mount.as_ref().map(|m| m.id),
        );
        let proc_for_swap = proc.try_clone().map_err(internal)?;
        tokio::task::spawn_blocking(move || {
            let staged = open_dir(&staging_owned)?;
            let fresh = rebind::clone_subtree(&Linux, staged.as_fd(), Path::new("/"))?;
            match stale_id {
                Some(id) => rebind::swap(
                    &Linux,
                    &proc_for_swap,
                    Swap {
                        namespace: None,
                        name: "the daemon's namespace",
                        mount_point: &target_owned,
                        stale: id.into(),
                        fresh,
                        propagation: None,
                    },
                ),
                None => rebind::place(&Linux, fresh, open_dir(&target_owned)?),
            }
        })
        .await
        .map_err(internal)?
        .map_err(internal)?;
        let mut touched = vec![format!("daemon: {}", target.display())];
        // 5. Verified in the executor's, the host's and the kubelet's namespaces.
        let views = self
            .views(exec, req.caller_pid)
            .await
            .map_err(|e| exec_error(req, &e, ErrorCode::MountFailed))?;
        let (mount, _seen) =
            verify::mounted(target, None, &views).map_err(|e| verify_error(req, &e))?;
        if Some((mount.major, mount.minor)) == stale.device {
            return Err(ApiError::new(
                ErrorCode::MountFailed,
                format!("{} still holds the stale mount", target.display()),
            ));
        }
        // 6. The record takes the new mount id.
        self.record
            .lock()
            .unwrap()
            .replace_mount_id(record.mount_id, mount.id)
            .map_err(internal)?;
        self.healer.set_device(target, (mount.major, mount.minor));
        // 7. Every other namespace that still holds the stale superblock.
        let Some(device) = stale.device else {
            return Ok(Healed {
                mount_id: mount.id,
                touched,
                missed: vec!["the stale mount's device is not known: binds of it elsewhere are left as they are".into()],
            });
        };
        let host_proc = self.host_proc.clone();
        let target_owned = target.to_owned();
        let fstype = record.fstype.clone();
        let (rebound, missed) = tokio::task::spawn_blocking(move || {
            let found = holders(&host_proc, device, &[]);
            let result = rebind_all(&proc, &host_proc, &target_owned, &found);
            // A pinned superblock's device id cannot name another connection yet.
            if stale.pin.is_some() {
                abort_fuse(&fstype, device);
            }
            drop(stale);
            result
        })
        .await
        .map_err(internal)?;
        touched.extend(rebound);
        Ok(Healed {
            mount_id: mount.id,
            touched,
            missed,
        })
    }

    /// Detaches and removes what heals interrupted by a stop of the daemon left on
    /// their staging points.
    pub(super) fn sweep_staging(&self) {
        let dir = self.kubelet_root.join(STAGING);
        let Ok(entries) = std::fs::read_dir(&dir) else {
            return;
        };
        let own = self.own_namespace();
        for point in entries.flatten().map(|e| e.path()) {
            while let Ok(Some(m)) = own.mount_at(&point) {
                if let Err(e) = Linux.umount2(&point, MntFlags::MNT_DETACH) {
                    warn!(path = %point.display(), error = %e, "cannot detach a staged mount");
                    break;
                }
                info!(path = %point.display(), mount_id = m.id, "detached a mount an interrupted heal left");
            }
            let _ = std::fs::remove_dir(&point);
        }
    }

    /// A fresh directory for staging the heal of mount `id`, under the kubelet root.
    fn staging_point(&self, id: u32) -> std::io::Result<PathBuf> {
        let dir = self.kubelet_root.join(STAGING);
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&dir)?;
        if !std::fs::symlink_metadata(&dir)?.is_dir() {
            return Err(std::io::Error::other(format!(
                "{} is not a directory",
                dir.display()
            )));
        }
        let point = dir.join(id.to_string());
        match std::fs::create_dir(&point) {
            Err(e) if e.kind() != std::io::ErrorKind::AlreadyExists => return Err(e),
            _ => {}
        }
        Ok(point)
    }
}

/// `path` opened `O_PATH`, not through a symlink at its end.
fn open_dir(path: &Path) -> Result<std::os::fd::OwnedFd, rebind::RebindError> {
    nix::fcntl::open(
        path,
        OFlag::O_PATH | OFlag::O_CLOEXEC | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW,
        Mode::empty(),
    )
    .map_err(|errno| rebind::RebindError::Open {
        path: path.to_owned(),
        namespace: "the daemon's namespace".into(),
        errno,
    })
}

/// Replaces each stale mount in `found` by a copy of the same directory of the
/// healed mount on `target`; what was replaced, and what could not be, with why.
fn rebind_all(
    proc: &File,
    host_proc: &crate::ns::mountinfo::ProcRoot,
    target: &Path,
    found: &[Holder],
) -> (Vec<String>, Vec<String>) {
    let (mut done, mut missed) = (Vec::new(), Vec::new());
    for h in found {
        let name = format!("pid {}", h.pid);
        let at = format!("{name}: {}", h.mount.target.display());
        let result = (|| {
            let ns = File::open(host_proc.mount_namespace(Some(h.pid))).map_err(|e| {
                rebind::RebindError::Enter {
                    namespace: name.clone(),
                    errno: nix::errno::Errno::from_raw(e.raw_os_error().unwrap_or(0)),
                }
            })?;
            let healed = open_dir(target)?;
            let fresh = rebind::clone_subtree(&Linux, healed.as_fd(), &h.mount.root)?;
            rebind::swap(
                &Linux,
                proc,
                Swap {
                    namespace: Some(&ns),
                    name: &name,
                    mount_point: &h.mount.target,
                    stale: h.mount.id.into(),
                    fresh,
                    propagation: rebind::propagation_like(&h.mount.propagation),
                },
            )
        })();
        match result {
            Ok(()) => {
                info!(pid = h.pid, mount_point = %h.mount.target.display(), root = %h.mount.root.display(),
                    "replaced a stale bind of a healed mount");
                done.push(at);
            }
            Err(e) => {
                warn!(pid = h.pid, mount_point = %h.mount.target.display(), error = %e,
                    "cannot replace a stale bind of a healed mount");
                missed.push(format!("{at}: {e}"));
            }
        }
    }
    (done, missed)
}

/// Aborts the FUSE connection of the stale superblock (fusectl, when mounted), so
/// a client still attached to it exits.
fn abort_fuse(fstype: &str, (major, minor): (u32, u32)) {
    if major != 0 || !(fstype == "fuse" || fstype.starts_with("fuse.")) {
        return;
    }
    let abort = format!("/sys/fs/fuse/connections/{minor}/abort");
    if Path::new(&abort).exists() {
        if let Err(e) = std::fs::write(&abort, "1") {
            warn!(path = %abort, error = %e, "cannot abort a stale FUSE connection");
        }
    }
}
