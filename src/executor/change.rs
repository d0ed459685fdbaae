//! The change of the mount already on a target (a remount, a propagation
//! change): one mount(2) on the target's handle, made by the thread that holds
//! it, in that thread's mount namespace. The host executor makes it in the
//! daemon's namespace, the exec executor in its container's; a remount keeps
//! the flags it does not name, read from that same namespace's table.

use std::ffi::OsStr;
use std::os::fd::AsFd;

use super::plan::keep_current;
use super::step::syscall_failed;
use super::ExecError;
use crate::mount::syscall::{Errno, MsFlags, Syscall, SyscallError};
use crate::ns::beneath::{fd_path, mountinfo_id, on_mount, thread_self};
use crate::ns::mountinfo::MountTable;
use crate::policy::CheckedTarget;

/// Changes the mount on `target`: `flags` (with `MS_REMOUNT`, a remount that
/// keeps the flags `named` does not name; else a propagation change) and the
/// filesystem's own options `data`.
pub(super) fn change(
    sys: &dyn Syscall,
    target: &CheckedTarget,
    flags: MsFlags,
    data: &OsStr,
    named: MsFlags,
) -> Result<(), ExecError> {
    let data = Some(data).filter(|d| !d.is_empty());
    let flags = match flags.contains(MsFlags::MS_REMOUNT) {
        true => keep_current(flags, named, &current_flags(target, flags)?),
        false => flags,
    };
    let on = fd_path(target.fd.as_fd());
    sys.mount(None, &on, None, flags, data)
        .map_err(|e| syscall_failed(target, e))
}

/// The per-mount options (`rw,nosuid,relatime`) of the mount on the target's
/// handle, from this thread's mountinfo; a target that is no mount point is
/// refused in mount(8)'s words.
fn current_flags(target: &CheckedTarget, flags: MsFlags) -> Result<String, ExecError> {
    let failed = |errno: Errno| {
        let said = match errno {
            Errno::EINVAL => "mount point not mounted or bad option",
            errno => errno.desc(),
        };
        ExecError::Call {
            call: "mount",
            said: format!("mount: {}: {said}.\n", target.path.display()),
            target: target.path.clone(),
            source: Box::new(SyscallError::Mount {
                from: None,
                target: target.path.clone(),
                fstype: None,
                flags,
                errno,
            }),
        }
    };
    let on = on_mount(target.fd.as_fd()).map_err(failed)?;
    if !on.root {
        return Err(failed(Errno::EINVAL));
    }
    let id = mountinfo_id(target.fd.as_fd()).map_err(failed)?;
    let table = MountTable::read_path(&thread_self("mountinfo")).map_err(|_| failed(Errno::EIO))?;
    let mount = table.by_id(id).ok_or_else(|| failed(Errno::EINVAL))?;
    Ok(mount.options.clone())
}
