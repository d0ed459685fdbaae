//! The undo of a failed mount: removes whatever the attempt left on the target,
//! through the executor and then in the daemon's own namespace.

use std::path::Path;

use tracing::{info, warn};

use crate::daemon::mount::Before;
use crate::daemon::Daemon;
use crate::executor::{Executor, UnmountFlags};
use crate::mount::syscall::{MntFlags, Syscall};
use crate::ns::namespace::Namespace;

impl Daemon {
    /// Unmounts whatever a failed attempt left on `target`: first through the
    /// executor, then, for copies that outlived it (its container died), by a lazy
    /// unmount in the daemon's own namespace, which reaches its peers. Each side
    /// unmounts the mount on top until the one that was there before shows.
    pub(super) async fn undo(
        &self,
        exec: &dyn Executor,
        target: &Path,
        before: &Before,
        fstype: &str,
    ) {
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

/// At most this many mounts a failed attempt left on one target are undone: a
/// mount helper may stack a few, never more.
const UNDO_LIMIT: usize = 8;
