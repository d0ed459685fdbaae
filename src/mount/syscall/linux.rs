//! The real syscalls behind the seam: mount(2) and umount2(2) through nix, the
//! fd-based mount API through rustix, mount_setattr(2) directly.

use std::ffi::{CString, OsStr};
use std::os::fd::{AsRawFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

use super::*;

fn errno(e: rustix::io::Errno) -> Errno {
    Errno::from_raw(e.raw_os_error())
}

/// The real syscalls.
pub struct Linux;

impl Syscall for Linux {
    fn mount(
        &self,
        source: Option<&Path>,
        target: &Path,
        fstype: Option<&str>,
        flags: MsFlags,
        data: Option<&OsStr>,
    ) -> Result<(), SyscallError> {
        nix::mount::mount(source, target, fstype, flags, data).map_err(|errno| {
            SyscallError::Mount {
                from: source.map(Path::to_owned),
                target: target.to_owned(),
                fstype: fstype.map(str::to_owned),
                flags,
                errno,
            }
        })
    }

    fn umount2(&self, target: &Path, flags: MntFlags) -> Result<(), SyscallError> {
        nix::mount::umount2(target, flags).map_err(|errno| SyscallError::Umount {
            target: target.to_owned(),
            flags,
            errno,
        })
    }

    fn fsopen(&self, fstype: &str, flags: FsOpenFlags) -> Result<OwnedFd, SyscallError> {
        rustix::mount::fsopen(fstype, flags).map_err(|e| SyscallError::Fsopen {
            fstype: fstype.to_owned(),
            errno: errno(e),
        })
    }

    fn fsconfig_set_string(
        &self,
        fs: BorrowedFd<'_>,
        key: &str,
        value: &OsStr,
    ) -> Result<(), SyscallError> {
        rustix::mount::fsconfig_set_string(fs, key, value).map_err(|e| {
            SyscallError::fsconfig(
                describe(fs, Path::new("")),
                "set-string",
                Some(key),
                errno(e),
            )
        })
    }

    fn fsconfig_set_fd(
        &self,
        fs: BorrowedFd<'_>,
        key: &str,
        file: BorrowedFd<'_>,
    ) -> Result<(), SyscallError> {
        rustix::mount::fsconfig_set_fd(fs, key, file).map_err(|e| {
            SyscallError::fsconfig(describe(fs, Path::new("")), "set-fd", Some(key), errno(e))
        })
    }

    fn fsconfig_set_flag(&self, fs: BorrowedFd<'_>, key: &str) -> Result<(), SyscallError> {
        rustix::mount::fsconfig_set_flag(fs, key).map_err(|e| {
            SyscallError::fsconfig(describe(fs, Path::new("")), "set-flag", Some(key), errno(e))
        })
    }

    fn fsconfig_create(&self, fs: BorrowedFd<'_>) -> Result<(), SyscallError> {
        rustix::mount::fsconfig_create(fs).map_err(|e| {
            SyscallError::fsconfig(describe(fs, Path::new("")), "create", None, errno(e))
        })
    }

    fn fsmount(
        &self,
        fs: BorrowedFd<'_>,
        flags: FsMountFlags,
        attr: MountAttrFlags,
    ) -> Result<OwnedFd, SyscallError> {
        rustix::mount::fsmount(fs, flags, attr).map_err(|e| SyscallError::Fsmount {
            fs: describe(fs, Path::new("")),
            attr,
            errno: errno(e),
        })
    }

    fn move_mount(
        &self,
        from: BorrowedFd<'_>,
        from_path: &Path,
        to: BorrowedFd<'_>,
        to_path: &Path,
        flags: MoveMountFlags,
    ) -> Result<(), SyscallError> {
        rustix::mount::move_mount(from, from_path, to, to_path, flags).map_err(|e| {
            SyscallError::MoveMount {
                from: describe(from, from_path),
                to: describe(to, to_path),
                flags,
                errno: errno(e),
            }
        })
    }

    fn open_tree(
        &self,
        dir: BorrowedFd<'_>,
        path: &Path,
        flags: OpenTreeFlags,
    ) -> Result<OwnedFd, SyscallError> {
        rustix::mount::open_tree(dir, path, flags).map_err(|e| SyscallError::OpenTree {
            path: describe(dir, path),
            flags,
            errno: errno(e),
        })
    }

    fn mount_setattr(
        &self,
        dir: BorrowedFd<'_>,
        path: &Path,
        flags: AtFlags,
        attr: &MountAttr,
    ) -> Result<(), SyscallError> {
        let failed = |errno| SyscallError::MountSetattr {
            path: describe(dir, path),
            attr: *attr,
            errno,
        };
        let c_path =
            CString::new(path.as_os_str().as_bytes()).map_err(|_| failed(Errno::EINVAL))?;
        // SAFETY: mount_setattr(2) reads a NUL-terminated path that lives across the
        // call and a `struct mount_attr` of the size passed, which `MountAttr` is
        // (`#[repr(C)]`, four u64: MOUNT_ATTR_SIZE_VER0); `dir` is a valid fd or
        // AT_FDCWD for the duration of the call.
        let rc = unsafe {
            libc::syscall(
                libc::SYS_mount_setattr,
                dir.as_raw_fd(),
                c_path.as_ptr(),
                flags.bits(),
                attr as *const MountAttr,
                std::mem::size_of::<MountAttr>(),
            )
        };
        if rc == 0 {
            Ok(())
        } else {
            Err(failed(Errno::last()))
        }
    }
}
