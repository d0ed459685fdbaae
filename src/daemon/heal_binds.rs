//! The binds of a healed mount in other mount namespaces (pod containers): each
//! bind of the stale superblock is replaced by a copy of the same directory of the
//! healed mount, with the part the stale bind played in propagation, and the
//! stale FUSE connection is aborted so that a client still hanging on it exits.

use std::fs::File;
use std::os::fd::{AsFd, OwnedFd};
use std::path::Path;

use tracing::{info, warn};

use crate::mount::rebind::{self, RebindError, Swap};
use crate::mount::syscall::Syscall;
use crate::ns::holders::Holder;
use crate::ns::mountinfo::ProcRoot;

/// Replaces each stale mount in `found` by a copy of the same directory of the
/// healed mount (`healed`, its root); what was replaced, and what could not be,
/// with why.
pub(super) fn rebind_all(
    sys: &dyn Syscall,
    proc: &File,
    host_proc: &ProcRoot,
    healed: &OwnedFd,
    found: &[Holder],
) -> (Vec<String>, Vec<String>) {
    let (mut done, mut missed) = (Vec::new(), Vec::new());
    for h in found {
        let name = format!("pid {}", h.pid);
        let at = format!("{name}: {}", h.mount.target.display());
        let result = (|| {
            let ns = File::open(host_proc.mount_namespace(Some(h.pid))).map_err(|e| {
                RebindError::Enter {
                    namespace: name.clone(),
                    errno: nix::errno::Errno::from_raw(e.raw_os_error().unwrap_or(0)),
                }
            })?;
            let fresh = rebind::clone_subtree(sys, healed.as_fd(), &h.mount.root)?;
            rebind::swap(
                sys,
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

/// The binds found `now`, each with the propagation it had `before` the stale
/// mount was replaced in the daemon's namespace: a slave of its peer group has
/// turned private since, and its copy must be a slave again.
pub(super) fn as_they_were(now: Vec<Holder>, before: &[Holder]) -> Vec<Holder> {
    now.into_iter()
        .map(|mut h| {
            let was = before
                .iter()
                .find(|b| b.namespace == h.namespace && b.mount.id == h.mount.id);
            if let Some(was) = was {
                h.mount.propagation = was.mount.propagation;
            }
            h
        })
        .collect()
}

/// Aborts the FUSE connection of the stale superblock (fusectl, when mounted), so
/// a client still attached to it exits.
pub(super) fn abort_fuse(fstype: &str, (major, minor): (u32, u32)) {
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
