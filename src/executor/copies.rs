//! Per-mount attributes (read-only, nosuid, nodev, noexec, atime) belong to
//! each mount, not to its filesystem: a copy that propagation puts in another
//! namespace (the host's, a containerized kubelet's) takes its original's
//! flags when it is made, and keeps them when the original is remounted later.
//! A `bind,remount,ro` in a VCS container thus leaves the host's copy of that
//! bind writable. This step gives a copy the attributes asked, by handle, in
//! its own namespace: the target opened there beneath the kubelet root, that
//! handle's mount checked to be a copy of the original on the target, then
//! mount_setattr(2) on the same handle. No name is resolved after the check.

use std::os::fd::AsFd;
use std::path::{Path, PathBuf};
use std::time::Duration;

use super::step::{blocking, entering, resolve_there, syscall_failed};
use super::ExecError;
use crate::mount::syscall::{AtFlags, Linux, MountAttr, Syscall};
use crate::ns::beneath::{mountinfo_id, on_mount, thread_self};
use crate::ns::enter::MountNamespace;
use crate::ns::mountinfo::{normalize, Mount, MountTable};
use crate::ns::namespace::Namespace;
use crate::ns::statmount;

/// Gives the copy of `original` on `target` in `ns` the attributes `attr`; the
/// target is resolved there beneath `root`. Fails, naming `ns`, when the mount
/// on the target there is not such a copy.
pub async fn set_on_copy(
    ns: &Namespace,
    original: &Mount,
    target: &Path,
    root: &Path,
    attr: MountAttr,
    deadline: Duration,
) -> Result<(), ExecError> {
    let named = |e: ExecError| match e {
        ExecError::InContainer { step, source, .. } => ExecError::InContainer {
            executor: format!("the {} namespace", ns.name),
            step,
            source,
        },
        other => other,
    };
    // The daemon's own namespace (the host's, often) is acted in as it is:
    // its ns/mnt may not be open to the daemon (pid 1 of the machine).
    let entered = match (ns.pid, ns.is_own()) {
        (Some(pid), false) => Some(
            MountNamespace::of(ns.proc.path(), pid, ns.name.clone())
                .map_err(entering)
                .map_err(named)?,
        ),
        _ => None,
    };
    let (original, target, root): (Mount, PathBuf, PathBuf) =
        (original.clone(), target.to_owned(), root.to_owned());
    let what = format!(
        "mount_setattr(2) of the copy on {} in the {} namespace",
        target.display(),
        ns.name
    );
    blocking(what, deadline, move || {
        let step = || set_attributes(&Linux, &target, &root, &original, &attr);
        match entered {
            Some(ns) => ns.run(step).map_err(entering)?,
            None => step(),
        }
    })
    .await
    .map_err(named)
}

/// In the namespace of the calling thread: the mount on `target` (resolved
/// beneath `root`), when it is a copy of `original`, given `attr` through the
/// handle it was found by.
fn set_attributes(
    sys: &dyn Syscall,
    target: &Path,
    root: &Path,
    original: &Mount,
    attr: &MountAttr,
) -> Result<(), ExecError> {
    let there = resolve_there(target, root)?;
    let fd = there.fd.as_fd();
    let failed = |step, source: Box<dyn std::error::Error + Send + Sync>| ExecError::InContainer {
        executor: String::new(),
        step,
        source,
    };
    let id = mountinfo_id(fd).map_err(|e| failed("reading the id of the mount there", e.into()))?;
    // The handle's mount as mountinfo shows it: by statmount(2) of its unique
    // id, at a cost independent of the table; from the table on older kernels.
    let by_unique = match on_mount(fd) {
        Ok(on) if on.unique => statmount::by_id(on.id).ok().flatten(),
        _ => None,
    };
    let found = match by_unique {
        Some(m) => Some(m),
        None => MountTable::read_path(&thread_self("mountinfo"))
            .map_err(|e| failed("reading its mount table", e.into()))?
            .by_id(id)
            .cloned(),
    };
    let copy = found
        .as_ref()
        .filter(|m| m.target == normalize(target) && m.is_copy_of(original));
    if copy.is_none() {
        let shows = found.map_or_else(
            || format!("mount {id}, not in its table"),
            |m| format!("mount {id} on {}", m.target.display()),
        );
        return Err(failed(
            "finding the copy of the mount made on the target",
            format!(
                "the handle opened there is on {shows}, not a copy of mount {} (device {}:{}, {})",
                original.id,
                original.major,
                original.minor,
                original.root.display()
            )
            .into(),
        ));
    }
    sys.mount_setattr(fd, Path::new(""), AtFlags::EMPTY_PATH, attr)
        .map_err(|e| syscall_failed(&there, e))
}
