//! Every mount-changing syscall sidemount makes, behind one trait, so that the
//! sequences that need root are unit-tested with a recording fake: mount(2) and
//! umount2(2), and the fd-based mount API (fsopen, fsconfig, fsmount, move_mount,
//! open_tree, mount_setattr) that lets a mount land on a checked handle instead of a
//! path that could be swapped after the check.
//!
//! Errors carry the call, its paths (an fd is named by what it points at) and the
//! errno, but never a filesystem option's value: those can be secrets.

mod linux;

#[cfg(test)]
pub mod fake;

pub use linux::Linux;

use std::ffi::OsStr;
use std::os::fd::{AsRawFd, BorrowedFd, OwnedFd};
use std::path::{Path, PathBuf};

pub use nix::errno::Errno;
pub use nix::mount::{MntFlags, MsFlags};
pub use rustix::fs::{AtFlags, CWD};
pub use rustix::mount::{FsMountFlags, FsOpenFlags, MountAttrFlags, MoveMountFlags, OpenTreeFlags};

/// `AT_RECURSIVE` for mount_setattr(2) (open_tree(2) has it as
/// `OpenTreeFlags::AT_RECURSIVE`): apply to the whole subtree.
pub const AT_RECURSIVE: AtFlags = AtFlags::from_bits_retain(0x8000);

/// `struct mount_attr` of mount_setattr(2) (`MOUNT_ATTR_SIZE_VER0`): which
/// `MOUNT_ATTR_*` to set and clear, and a propagation type (`MS_SHARED`,
/// `MS_SLAVE`, `MS_PRIVATE`, `MS_UNBINDABLE`, or 0 to leave it).
#[repr(C)]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct MountAttr {
    pub attr_set: u64,
    pub attr_clr: u64,
    pub propagation: u64,
    pub userns_fd: u64,
}

impl MountAttr {
    /// Sets `set` and clears `clear`; the propagation is left as it is.
    pub fn flags(set: MountAttrFlags, clear: MountAttrFlags) -> Self {
        Self {
            attr_set: set.bits().into(),
            attr_clr: clear.bits().into(),
            ..Self::default()
        }
    }

    /// Changes only the propagation type (one of `MS_SHARED`, `MS_SLAVE`,
    /// `MS_PRIVATE`, `MS_UNBINDABLE`).
    pub fn propagation(kind: MsFlags) -> Self {
        Self {
            propagation: kind.bits(),
            ..Self::default()
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum SyscallError {
    #[error("mount({from:?}, {target}, {fstype:?}, {flags:?}) failed: {errno}")]
    Mount {
        from: Option<PathBuf>,
        target: PathBuf,
        fstype: Option<String>,
        flags: MsFlags,
        errno: Errno,
    },
    #[error("umount2({target}, {flags:?}) failed: {errno}")]
    Umount {
        target: PathBuf,
        flags: MntFlags,
        errno: Errno,
    },
    #[error("fsopen({fstype}) failed: {errno}")]
    Fsopen { fstype: String, errno: Errno },
    /// `key` is `None` for the create command; the value is never kept.
    #[error("fsconfig({command} {}) of {fs} failed: {errno}", key.as_deref().unwrap_or(""))]
    Fsconfig {
        fs: String,
        command: &'static str,
        key: Option<String>,
        errno: Errno,
    },
    #[error("fsmount({fs}, {attr:?}) failed: {errno}")]
    Fsmount {
        fs: String,
        attr: MountAttrFlags,
        errno: Errno,
    },
    #[error("move_mount({from} -> {to}, {flags:?}) failed: {errno}")]
    MoveMount {
        from: String,
        to: String,
        flags: MoveMountFlags,
        errno: Errno,
    },
    #[error("open_tree({path}, {flags:?}) failed: {errno}")]
    OpenTree {
        path: String,
        flags: OpenTreeFlags,
        errno: Errno,
    },
    #[error("mount_setattr({path}, {attr:?}) failed: {errno}")]
    MountSetattr {
        path: String,
        attr: MountAttr,
        errno: Errno,
    },
}

impl SyscallError {
    /// fsconfig's `command` (with the option `key`, none for create) failing on
    /// the context shown as `fs`.
    pub fn fsconfig(fs: String, command: &'static str, key: Option<&str>, errno: Errno) -> Self {
        let key = key.map(str::to_owned);
        SyscallError::Fsconfig {
            fs,
            command,
            key,
            errno,
        }
    }

    /// The errno the kernel answered.
    pub fn errno(&self) -> Errno {
        match self {
            Self::Mount { errno, .. }
            | Self::Umount { errno, .. }
            | Self::Fsopen { errno, .. }
            | Self::Fsconfig { errno, .. }
            | Self::Fsmount { errno, .. }
            | Self::MoveMount { errno, .. }
            | Self::OpenTree { errno, .. }
            | Self::MountSetattr { errno, .. } => *errno,
        }
    }
}

/// The mount-changing syscalls. `Send + Sync` so a daemon can share one.
pub trait Syscall: Send + Sync {
    /// mount(2): a new filesystem (`fstype` and `data`), or with no type a bind,
    /// move, remount or propagation change.
    fn mount(
        &self,
        source: Option<&Path>,
        target: &Path,
        fstype: Option<&str>,
        flags: MsFlags,
        data: Option<&OsStr>,
    ) -> Result<(), SyscallError>;
    /// umount2(2); `UMOUNT_NOFOLLOW` keeps a symlink at `target` from redirecting it.
    fn umount2(&self, target: &Path, flags: MntFlags) -> Result<(), SyscallError>;
    /// fsopen(2): a filesystem context of `fstype` to configure.
    fn fsopen(&self, fstype: &str, flags: FsOpenFlags) -> Result<OwnedFd, SyscallError>;
    /// fsconfig(FSCONFIG_SET_STRING): one `key=value` option.
    fn fsconfig_set_string(
        &self,
        fs: BorrowedFd<'_>,
        key: &str,
        value: &OsStr,
    ) -> Result<(), SyscallError>;
    /// fsconfig(FSCONFIG_SET_FD): one option whose value is an open file (an
    /// overlay layer, Linux 6.13+).
    fn fsconfig_set_fd(
        &self,
        fs: BorrowedFd<'_>,
        key: &str,
        file: BorrowedFd<'_>,
    ) -> Result<(), SyscallError>;
    /// fsconfig(FSCONFIG_SET_FLAG): one option with no value.
    fn fsconfig_set_flag(&self, fs: BorrowedFd<'_>, key: &str) -> Result<(), SyscallError>;
    /// fsconfig(FSCONFIG_CMD_CREATE): makes the superblock.
    fn fsconfig_create(&self, fs: BorrowedFd<'_>) -> Result<(), SyscallError>;
    /// fsmount(2): a detached mount of the created superblock.
    fn fsmount(
        &self,
        fs: BorrowedFd<'_>,
        flags: FsMountFlags,
        attr: MountAttrFlags,
    ) -> Result<OwnedFd, SyscallError>;
    /// move_mount(2): `from_path` relative to `from` (empty with
    /// `MOVE_MOUNT_F_EMPTY_PATH`: `from` itself) onto `to_path` relative to `to`
    /// (empty with `MOVE_MOUNT_T_EMPTY_PATH`: the directory `to` is open on).
    fn move_mount(
        &self,
        from: BorrowedFd<'_>,
        from_path: &Path,
        to: BorrowedFd<'_>,
        to_path: &Path,
        flags: MoveMountFlags,
    ) -> Result<(), SyscallError>;
    /// open_tree(2): with `OPEN_TREE_CLONE` (and `AT_RECURSIVE`) a detached copy
    /// of the mount (tree) at `path` relative to `dir`, as a bind would make.
    fn open_tree(
        &self,
        dir: BorrowedFd<'_>,
        path: &Path,
        flags: OpenTreeFlags,
    ) -> Result<OwnedFd, SyscallError>;
    /// mount_setattr(2): changes the attributes or propagation of the mount at
    /// `path` relative to `dir` (`AT_EMPTY_PATH`: `dir` itself; `AT_RECURSIVE`).
    fn mount_setattr(
        &self,
        dir: BorrowedFd<'_>,
        path: &Path,
        flags: AtFlags,
        attr: &MountAttr,
    ) -> Result<(), SyscallError>;
}

/// What an fd and a path relative to it name, for messages: the fd's path as
/// /proc/self/fd shows it, joined with `path`.
pub fn describe(fd: BorrowedFd<'_>, path: &Path) -> String {
    let raw = fd.as_raw_fd();
    let base = if raw == CWD.as_raw_fd() {
        PathBuf::from(".")
    } else {
        std::fs::read_link(format!("/proc/self/fd/{raw}"))
            .unwrap_or_else(|_| PathBuf::from(format!("fd {raw}")))
    };
    if path.as_os_str().is_empty() {
        base.display().to_string()
    } else {
        base.join(path).display().to_string()
    }
}
