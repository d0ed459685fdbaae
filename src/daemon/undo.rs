//! The undo of a failed mount: removes whatever the attempt left on the target,
//! through the executor and then in the daemon's own namespace.

use std::path::Path;

use tracing::{info, warn};

use crate::daemon::mount::Undo;
use crate::daemon::Daemon;
use crate::executor::{Executor, Made, UnmountFlags};
use crate::mount::by_handle;
use crate::mount::syscall::MntFlags;
use crate::ns::namespace::Namespace;

impl Daemon {
    /// Unmounts whatever a failed attempt left on the checked target: what was
    /// made, by its own handle, wherever it landed; then through the executor;
    /// then, for copies that outlived it (its container died), by a lazy unmount
    /// beneath the target's parent in the daemon's own namespace (through the
    /// `Syscall` seam), which reaches its peers. Each side unmounts the mount on
    /// top until the one that was there before shows. True when nothing is left.
    pub(super) async fn undo(
        &self,
        exec: &dyn Executor,
        undo: &Undo<'_>,
        made: Option<&Made>,
    ) -> bool {
        let (target, before) = (undo.target.path(), undo.before);
        if let Some(made) = made {
            if exec.undo(made).await {
                info!(target = %target.display(), "undid a failed mount by its handle");
            }
        }
        let lazy = UnmountFlags {
            lazy: true,
            force: false,
        };
        let mut clean = false;
        for _ in 0..UNDO_LIMIT {
            let Ok(ns) = exec.namespace().await else {
                warn!(target = %target.display(), executor = exec.name(), "cannot reach the executor's namespace to undo a failed mount");
                break;
            };
            let id = match self.left_on(&ns, target, before.executor) {
                Ok(Some(id)) => id,
                Ok(None) => {
                    clean = true;
                    break;
                }
                Err(()) => break,
            };
            let Ok(again) = undo.target.try_clone() else {
                break;
            };
            match exec
                .unmount(again, None, undo.fstype, lazy, self.timeout)
                .await
            {
                Ok(_) => info!(target = %target.display(), mount_id = id, "undid a failed mount"),
                Err(e) => {
                    warn!(target = %target.display(), mount_id = id, error = %e, "cannot undo a failed mount");
                    break;
                }
            }
        }
        let own = self.own_namespace();
        for _ in 0..UNDO_LIMIT {
            let id = match self.left_on(&own, target, before.daemon) {
                Ok(Some(id)) => id,
                Ok(None) => return clean,
                Err(()) => return false,
            };
            let place = undo.target.place();
            match by_handle::unmount(
                &*self.syscall,
                place.parent,
                place.name,
                MntFlags::MNT_DETACH,
            ) {
                Ok(()) => {
                    info!(target = %target.display(), mount_id = id, "detached what a failed mount left behind")
                }
                Err(e) => {
                    warn!(target = %target.display(), mount_id = id, error = %e, "cannot undo a failed mount");
                    return false;
                }
            }
        }
        false
    }

    /// The id of a mount on `target` in `ns` that was not there `before`; `Err`
    /// (logged) when it cannot be looked up.
    fn left_on(
        &self,
        ns: &Namespace,
        target: &Path,
        before: Option<u32>,
    ) -> Result<Option<u32>, ()> {
        match ns.mount_at(target) {
            Ok(found) => Ok(found.map(|m| m.id).filter(|&id| Some(id) != before)),
            Err(e) => {
                warn!(target = %target.display(), namespace = %ns.name, error = %e, "cannot look up what a failed mount left");
                Err(())
            }
        }
    }
}

/// At most this many mounts a failed attempt left on one target are undone: a
/// mount helper may stack a few, never more.
const UNDO_LIMIT: usize = 8;
