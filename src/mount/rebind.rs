//! Puts a fresh mount in place of a stale one, in this process's mount namespace or
//! in another one (a pod container's), where propagation cannot carry it: container
//! runtimes bind pod volumes `rprivate`, so when a FUSE client restarts, the pod
//! keeps a bind of the dead connection. The fresh mount is a detached copy
//! (open_tree `OPEN_TREE_CLONE`) taken in the daemon's namespace; a dedicated
//! thread enters the other namespace (setns), opens the stale mount point beneath
//! that namespace's root without following a symlink, checks by its mount id that
//! it is the stale mount, slides the copy beneath it (`MOVE_MOUNT_BENEATH`, so the
//! path never shows an empty directory) and detaches the stale mount by its handle.
//! Where the kernel refuses to mount beneath, the stale mount is detached first and
//! the copy moved onto the mount point.

use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::path::{Path, PathBuf};

use nix::fcntl::{openat2, OFlag, OpenHow, ResolveFlag};

use crate::mount::by_handle;
use crate::ns::beneath::{in_root, open_root, relative};
use crate::ns::enter::{EnterError, MountNamespace};
use crate::ns::mountinfo::Propagation;
use rustix::fs::{statx, StatxAttributes, StatxFlags};

use crate::mount::syscall::{
    describe, AtFlags, Errno, MountAttr, MoveMountFlags, MsFlags, OpenTreeFlags, Syscall,
    SyscallError,
};

#[derive(Debug, thiserror::Error)]
pub enum RebindError {
    #[error(transparent)]
    Enter(#[from] EnterError),
    #[error("cannot open {path} in {namespace}: {errno}")]
    Open {
        path: PathBuf,
        namespace: String,
        errno: Errno,
    },
    #[error("{path} in {namespace} no longer holds the stale mount {stale} (found mount {found:?}); left as it is")]
    Moved {
        path: PathBuf,
        namespace: String,
        stale: u64,
        found: Option<u64>,
    },
    #[error("{path} in {namespace}: {source}")]
    Syscall {
        path: PathBuf,
        namespace: String,
        source: Box<SyscallError>,
    },
}

/// One stale mount to replace.
pub struct Swap<'a> {
    /// The mount namespace to act in; `None`: this process's own.
    pub namespace: Option<&'a MountNamespace>,
    /// What to call that namespace in messages ("pid 4242").
    pub name: &'a str,
    /// The stale mount's mount point, as that namespace's mountinfo shows it.
    pub mount_point: &'a Path,
    /// The stale mount's id (mountinfo's) there.
    pub stale: u64,
    /// The detached copy to put there.
    pub fresh: OwnedFd,
    /// The propagation to give the copy first (see [`propagation_like`]); `None`:
    /// the copy's own (a peer of the mount it was cloned from).
    pub propagation: Option<MsFlags>,
}

/// The propagation type that gives a copy the stale bind's part, so a pod's mounts
/// never propagate back to the host through its new bind: a private bind stays
/// private; for a slave, a slave is asked (a copy the kernel keeps alone in its
/// peer group has no master to follow and becomes private). A shared bind keeps
/// the copy's own peer group.
pub fn propagation_like(stale: &Propagation) -> Option<MsFlags> {
    if stale.unbindable {
        Some(MsFlags::MS_UNBINDABLE)
    } else if stale.is_private() {
        Some(MsFlags::MS_PRIVATE)
    } else if stale.master.is_some() && stale.shared.is_none() {
        Some(MsFlags::MS_SLAVE)
    } else {
        None
    }
}

/// A detached copy of the mount tree's directory `root` (a path inside the mount,
/// `/` for its root), opened beneath `mount` without following a symlink or
/// leaving the mount: the volume's content is written by pods, which could plant a
/// symlink where a bind's root was.
pub fn clone_subtree(
    sys: &dyn Syscall,
    mount: BorrowedFd<'_>,
    root: &Path,
) -> Result<OwnedFd, RebindError> {
    let rel = relative(root);
    let how = OpenHow::new()
        .flags(OFlag::O_PATH | OFlag::O_CLOEXEC | OFlag::O_DIRECTORY)
        .resolve(
            ResolveFlag::RESOLVE_BENEATH
                | ResolveFlag::RESOLVE_NO_SYMLINKS
                | ResolveFlag::RESOLVE_NO_MAGICLINKS
                | ResolveFlag::RESOLVE_NO_XDEV,
        );
    let dir = openat2(mount, rel, how).map_err(|errno| RebindError::Open {
        path: root.to_owned(),
        namespace: "the daemon's namespace".into(),
        errno,
    })?;
    sys.open_tree(
        dir.as_fd(),
        Path::new(""),
        OpenTreeFlags::OPEN_TREE_CLONE
            | OpenTreeFlags::OPEN_TREE_CLOEXEC
            | OpenTreeFlags::AT_EMPTY_PATH,
    )
    .map_err(|source| RebindError::Syscall {
        path: root.to_owned(),
        namespace: "the daemon's namespace".into(),
        source: Box::new(source),
    })
}

/// Replaces the stale mount of `swap` by its fresh copy, in its namespace (by a
/// thread that enters it, see [`MountNamespace::run`]).
pub fn swap(sys: &dyn Syscall, swap: Swap<'_>) -> Result<(), RebindError> {
    match swap.namespace {
        Some(ns) => ns.run(|| in_namespace(sys, swap))?,
        None => in_namespace(sys, swap),
    }
}

fn in_namespace(sys: &dyn Syscall, swap: Swap<'_>) -> Result<(), RebindError> {
    let name = swap.name;
    let failed = |source| RebindError::Syscall {
        path: swap.mount_point.to_owned(),
        namespace: name.to_owned(),
        source: Box::new(source),
    };
    // 1. The stale mount, by a handle opened beneath the namespace's root, checked
    //    by its mount id.
    let stale = open_mount_point(swap.mount_point, name)?;
    let found = mount_id(&stale);
    if found != Some(swap.stale) {
        return Err(RebindError::Moved {
            path: swap.mount_point.to_owned(),
            namespace: name.to_owned(),
            stale: swap.stale,
            found,
        });
    }
    // 2. The copy beneath it; where the kernel refuses (EINVAL), the stale
    //    mount goes first and the copy is moved onto the empty mount point.
    let empty = Path::new("");
    let both = MoveMountFlags::MOVE_MOUNT_F_EMPTY_PATH | MoveMountFlags::MOVE_MOUNT_T_EMPTY_PATH;
    let beneath = match sys.move_mount(
        swap.fresh.as_fd(),
        empty,
        stale.as_fd(),
        empty,
        both | MoveMountFlags::MOVE_MOUNT_BENEATH,
    ) {
        Ok(()) => true,
        Err(e) if e.errno() == Errno::EINVAL => false,
        Err(e) => return Err(failed(e)),
    };
    // 3. The stale mount detached through its handle.
    by_handle::detach(sys, stale.as_fd()).map_err(failed)?;
    if !beneath {
        let target = open_mount_point(swap.mount_point, name)?;
        sys.move_mount(swap.fresh.as_fd(), empty, target.as_fd(), empty, both)
            .map_err(failed)?;
    }
    // 4. The stale bind's propagation, on the copy now in place (a detached
    //    copy is not in its peer group yet, so it could not become a slave).
    if let Some(kind) = swap.propagation {
        let placed = open_mount_point(swap.mount_point, name)?;
        sys.mount_setattr(
            placed.as_fd(),
            empty,
            AtFlags::EMPTY_PATH,
            &MountAttr::propagation(kind),
        )
        .map_err(failed)?;
    }
    Ok(())
}

/// Moves the detached copy `fresh` onto the directory `target` (an `O_PATH`
/// handle) in this process's namespace.
pub fn place(sys: &dyn Syscall, fresh: OwnedFd, target: OwnedFd) -> Result<(), RebindError> {
    let empty = Path::new("");
    let both = MoveMountFlags::MOVE_MOUNT_F_EMPTY_PATH | MoveMountFlags::MOVE_MOUNT_T_EMPTY_PATH;
    sys.move_mount(fresh.as_fd(), empty, target.as_fd(), empty, both)
        .map_err(|source| RebindError::Syscall {
            path: PathBuf::from(describe(target.as_fd(), empty)),
            namespace: "the daemon's namespace".into(),
            source: Box::new(source),
        })
}

/// `path` opened `O_PATH` beneath this thread's root, no symlink followed.
fn open_mount_point(path: &Path, namespace: &str) -> Result<OwnedFd, RebindError> {
    let failed = |errno| RebindError::Open {
        path: path.to_owned(),
        namespace: namespace.to_owned(),
        errno,
    };
    let root = open_root(Path::new("/")).map_err(failed)?;
    in_root(root.as_fd(), path).map_err(failed)
}

/// The mount id (mountinfo's) of the mount whose root `fd` is, or `None` when it
/// is no mount's root. `AT_STATX_DONT_SYNC`: no request reaches a dead server.
pub fn mount_id(fd: &OwnedFd) -> Option<u64> {
    let stx = statx(
        fd,
        "",
        AtFlags::EMPTY_PATH | AtFlags::STATX_DONT_SYNC,
        StatxFlags::MNT_ID,
    )
    .ok()?;
    let root = stx.stx_attributes.contains(StatxAttributes::MOUNT_ROOT);
    (stx.stx_mask & StatxFlags::MNT_ID.bits() != 0 && root).then_some(stx.stx_mnt_id)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_copy_keeps_the_part_the_stale_bind_played() {
        let p = |shared, master, unbindable| Propagation {
            shared,
            master,
            propagate_from: None,
            unbindable,
        };
        assert_eq!(
            propagation_like(&p(None, None, false)),
            Some(MsFlags::MS_PRIVATE)
        );
        assert_eq!(
            propagation_like(&p(None, Some(3), false)),
            Some(MsFlags::MS_SLAVE)
        );
        assert_eq!(propagation_like(&p(Some(4), Some(3), false)), None);
        assert_eq!(propagation_like(&p(Some(4), None, false)), None);
        assert_eq!(
            propagation_like(&p(None, None, true)),
            Some(MsFlags::MS_UNBINDABLE)
        );
    }
}
