//! The per-mount options a mount or a change asks reach every copy of it that
//! verification proves: a copy that propagation put in the host's or the
//! caller's namespace keeps the flags its original had when it was made, so a
//! later `bind,remount,ro` (or a bind made read-only after it was attached)
//! would leave it writable there. Each copy that lacks them is given them by
//! handle in its own namespace, then every copy is proved to show them.

use std::path::Path;
use std::time::Duration;

use tracing::info;

use crate::api::wire::Sighting;
use crate::daemon::verify::{self, VerifyError, Views, Wanted};
use crate::executor;
use crate::ns::mountinfo::Mount;

/// Gives each copy of `mount` (the executor's, on `target`, beneath the kubelet
/// `root`) that lacks them the per-mount options `wanted`, then proves where
/// it was seen (see [`verify::reached`]).
pub(super) async fn given(
    target: &Path,
    root: &Path,
    mount: &Mount,
    wanted: &Wanted,
    views: &Views,
    deadline: Duration,
) -> Result<Vec<Sighting>, VerifyError> {
    if wanted.names_flags() {
        let attr = wanted.attributes();
        for ns in verify::lacking(target, mount, wanted, views)? {
            executor::set_on_copy(&ns, mount, target, root, attr, deadline)
                .await
                .map_err(|e| VerifyError::NotGiven {
                    target: target.display().to_string(),
                    namespace: ns.name.clone(),
                    cause: e.to_string(),
                })?;
            info!(target = %target.display(), namespace = %ns.name, options = %wanted,
                "the copy there was given the options asked");
        }
    }
    verify::reached(target, mount, wanted, views)
}
