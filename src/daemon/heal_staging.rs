//! The staging points of heals: where a fresh mount is made before a copy of it
//! replaces the stale one. They lie under the kubelet root, so that the VCS sees
//! them and propagation brings what is mounted there to the daemon, in a
//! directory of the daemon's own that only root can write; a daemon stopped in
//! the middle of a heal leaves its point for the next start to sweep.

use std::path::PathBuf;

use tracing::{info, warn};

use crate::daemon::error::HealError;
use crate::daemon::Daemon;
use crate::mount::by_handle;
use crate::mount::staging::root_only_dir;
use crate::mount::syscall::MntFlags;
use crate::policy::Policy;

/// Where fresh mounts are staged, under the kubelet root: beneath `plugins`, which
/// only the kubelet and its plugins reach, in a directory of the daemon's own
/// that only root can write.
const STAGING: &str = "plugins/sidemount~heal";

impl Daemon {
    /// Detaches and removes what heals interrupted by a stop of the daemon left on
    /// their staging points.
    pub(super) fn sweep_staging(&self) {
        let dir = self.kubelet_root.join(STAGING);
        let Ok(entries) = std::fs::read_dir(&dir) else {
            return;
        };
        if let Err(e) = root_only_dir(&dir) {
            warn!(error = %e, "staging points left as they are");
            return;
        }
        let own = self.own_namespace();
        for point in entries.flatten().map(|e| e.path()) {
            let Ok(checked) = Policy::resolve_target(&point, std::slice::from_ref(&dir)) else {
                continue;
            };
            let place = checked.place();
            while let Ok(Some(m)) = own.mount_at(&point) {
                let detached = by_handle::unmount(
                    &*self.syscall,
                    place.parent,
                    place.name,
                    MntFlags::MNT_DETACH,
                );
                if let Err(e) = detached {
                    warn!(path = %point.display(), error = %e, "cannot detach a staged mount");
                    break;
                }
                info!(path = %point.display(), mount_id = m.id, "detached a mount an interrupted heal left");
            }
            drop(checked);
            let _ = std::fs::remove_dir(&point);
        }
    }

    /// A fresh directory for staging the heal of mount `id`, and the directory it
    /// lies in: under the kubelet root, in a directory only root can write.
    pub(super) fn staging_point(&self, id: u32) -> Result<(PathBuf, PathBuf), HealError> {
        let dir = self.kubelet_root.join(STAGING);
        root_only_dir(&dir)?;
        let point = dir.join(id.to_string());
        match std::fs::create_dir(&point) {
            Err(e) if e.kind() != std::io::ErrorKind::AlreadyExists => {
                Err(HealError::StagingPoint {
                    path: point,
                    source: e,
                })
            }
            _ => Ok((dir, point)),
        }
    }
}
