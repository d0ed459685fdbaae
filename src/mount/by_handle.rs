//! Mounts that land on a checked handle, never on a name: a caller's path was
//! resolved once, to an `O_PATH` fd, and every step here acts on that fd, so a
//! directory swapped for a symlink after the check cannot redirect a mount, a bind
//! or an unmount outside the roots.
//!
//! - a new filesystem: fsopen, fsconfig, fsmount, then move_mount onto the target
//!   fd (`MOVE_MOUNT_T_EMPTY_PATH`);
//! - a bind: open_tree(`OPEN_TREE_CLONE`) of the checked source fd, mount_setattr
//!   for its flags, move_mount onto the target fd;
//! - what mount(8) made on a private staging directory: moved onto the target fd;
//! - an unmount: umount2 of the target's name beneath its checked parent, with
//!   `UMOUNT_NOFOLLOW`; an undo: a lazy umount2 of exactly the mount that was made,
//!   through its own fd, wherever it landed.
//!
//! Where the kernel lacks the new mount API (before Linux 5.2), mount(2) takes the
//! target as `/proc/thread-self/fd/N`, the magic link to the handle, as runc does.

use std::ffi::OsStr;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::path::Path;
use std::sync::OnceLock;

use super::syscall::{
    AtFlags, Errno, FsMountFlags, FsOpenFlags, Linux, MntFlags, MountAttr, MountAttrFlags,
    MoveMountFlags, MsFlags, OpenTreeFlags, Syscall, SyscallError, AT_RECURSIVE,
};
use crate::ns::beneath::fd_path;

/// How mounts reach a handle on this kernel.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Api {
    /// fsopen/fsmount/open_tree/move_mount onto the fd (Linux 5.2+).
    NewMountApi,
    /// mount(2) onto `/proc/thread-self/fd/N`.
    ProcFdPath,
}

impl std::fmt::Display for Api {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Api::NewMountApi => "the new mount API (fsopen/open_tree + move_mount onto the fd)",
            Api::ProcFdPath => "mount(2) onto /proc/thread-self/fd/N (no new mount API)",
        })
    }
}

/// What this kernel offers, asked once: fsopen(2) of a filesystem every kernel has.
pub fn api() -> Api {
    static API: OnceLock<Api> = OnceLock::new();
    *API.get_or_init(
        || match Linux.fsopen("tmpfs", FsOpenFlags::FSOPEN_CLOEXEC) {
            Err(e) if e.errno() == Errno::ENOSYS => Api::ProcFdPath,
            _ => Api::NewMountApi,
        },
    )
}

/// Where a mount goes: the checked target's handle, and its name beneath its
/// checked parent's handle (for an unmount, and for the mount(2) fallback).
#[derive(Debug, Clone, Copy)]
pub struct Place<'a> {
    pub parent: BorrowedFd<'a>,
    pub name: &'a OsStr,
    pub fd: BorrowedFd<'a>,
}

/// A new filesystem as mount(2) would take it: flags, and the filesystem's own
/// options (data), one `key` or `key=value` piece each; with the new mount API,
/// also options whose values are open files (`lowerdir+` and an overlay layer's
/// handle), given after the data. mount(2) takes no files: give none without the
/// new API.
#[derive(Debug, Clone, Copy)]
pub struct Filesystem<'a> {
    pub fstype: &'a str,
    pub source: &'a OsStr,
    pub flags: MsFlags,
    pub data: &'a [&'a OsStr],
    pub files: &'a [(&'a str, BorrowedFd<'a>)],
}

/// The superblock flags fsconfig takes by name, from mount(2) flags.
const SB_FLAGS: &[(MsFlags, &str)] = &[
    (MsFlags::MS_RDONLY, "ro"),
    (MsFlags::MS_SYNCHRONOUS, "sync"),
    (MsFlags::MS_DIRSYNC, "dirsync"),
    (MsFlags::MS_LAZYTIME, "lazytime"),
    (MsFlags::MS_MANDLOCK, "mand"),
];

/// `MS_NOSYMFOLLOW` (Linux 5.10), which nix does not name.
const MS_NOSYMFOLLOW: MsFlags = MsFlags::from_bits_retain(256);

/// The mount attributes (per mount, not per superblock) of mount(2) flags.
const MOUNT_ATTRS: &[(MsFlags, MountAttrFlags)] = &[
    (MsFlags::MS_RDONLY, MountAttrFlags::MOUNT_ATTR_RDONLY),
    (MsFlags::MS_NOSUID, MountAttrFlags::MOUNT_ATTR_NOSUID),
    (MsFlags::MS_NODEV, MountAttrFlags::MOUNT_ATTR_NODEV),
    (MsFlags::MS_NOEXEC, MountAttrFlags::MOUNT_ATTR_NOEXEC),
    (MsFlags::MS_NOATIME, MountAttrFlags::MOUNT_ATTR_NOATIME),
    (
        MsFlags::MS_STRICTATIME,
        MountAttrFlags::MOUNT_ATTR_STRICTATIME,
    ),
    (
        MsFlags::MS_NODIRATIME,
        MountAttrFlags::MOUNT_ATTR_NODIRATIME,
    ),
    (MS_NOSYMFOLLOW, MountAttrFlags::MOUNT_ATTR_NOSYMFOLLOW),
];

/// Flags that change nothing the new API must be told (`MS_RELATIME` is its
/// default; `MS_SILENT` only quiets the kernel log).
const NO_ATTR: MsFlags = MsFlags::MS_RELATIME.union(MsFlags::MS_SILENT);

/// The mount attributes of `flags`, or `None` when one of them has none.
pub fn mount_attrs(flags: MsFlags) -> Option<MountAttrFlags> {
    let mut left = flags - NO_ATTR;
    let mut attrs = MountAttrFlags::empty();
    for (flag, attr) in MOUNT_ATTRS {
        if flags.contains(*flag) {
            attrs |= *attr;
            left.remove(*flag);
        }
    }
    for (flag, _) in SB_FLAGS {
        left.remove(*flag);
    }
    left.is_empty().then_some(attrs)
}

/// Mounts a new filesystem onto `target`; returns the new mount's fd, by which it
/// is found and undone.
pub fn new_filesystem(
    sys: &dyn Syscall,
    fs: &Filesystem<'_>,
    target: &Place<'_>,
    api: Api,
) -> Result<OwnedFd, SyscallError> {
    let attrs = mount_attrs(fs.flags).filter(|_| api == Api::NewMountApi);
    let Some(attrs) = attrs else {
        return legacy(sys, fs, target);
    };
    let ctx = sys.fsopen(fs.fstype, FsOpenFlags::FSOPEN_CLOEXEC)?;
    if !fs.source.is_empty() {
        sys.fsconfig_set_string(ctx.as_fd(), "source", fs.source)?;
    }
    for (flag, name) in SB_FLAGS {
        if fs.flags.contains(*flag) {
            sys.fsconfig_set_flag(ctx.as_fd(), name)?;
        }
    }
    for piece in fs.data.iter().filter(|p| !p.is_empty()) {
        match split(piece) {
            (key, Some(value)) => sys.fsconfig_set_string(ctx.as_fd(), key, value)?,
            (key, None) => sys.fsconfig_set_flag(ctx.as_fd(), key)?,
        }
    }
    for (key, file) in fs.files {
        sys.fsconfig_set_fd(ctx.as_fd(), key, *file)?;
    }
    sys.fsconfig_create(ctx.as_fd())?;
    let mnt = sys.fsmount(ctx.as_fd(), FsMountFlags::FSMOUNT_CLOEXEC, attrs)?;
    move_onto(sys, mnt.as_fd(), target.fd)?;
    Ok(mnt)
}

/// `key=value` as fsconfig takes it; a key that is not UTF-8 cannot be an option
/// name and is passed whole, for the kernel to refuse.
fn split(piece: &OsStr) -> (&str, Option<&OsStr>) {
    use std::os::unix::ffi::OsStrExt;
    let bytes = piece.as_bytes();
    let (key, value) = match bytes.iter().position(|&b| b == b'=') {
        Some(at) => (&bytes[..at], Some(OsStr::from_bytes(&bytes[at + 1..]))),
        None => (bytes, None),
    };
    match std::str::from_utf8(key) {
        Ok(key) => (key, value),
        Err(_) => ("", Some(piece)),
    }
}

/// mount(2) onto the handle's magic link, then the new mount's fd.
fn legacy(
    sys: &dyn Syscall,
    fs: &Filesystem<'_>,
    target: &Place<'_>,
) -> Result<OwnedFd, SyscallError> {
    let data = fs.data.join(OsStr::new(","));
    let source = Path::new(fs.source);
    let on = fd_path(target.fd);
    sys.mount(
        Some(source),
        &on,
        Some(fs.fstype),
        fs.flags,
        Some(data.as_os_str()).filter(|d| !d.is_empty()),
    )?;
    top_of(sys, target)
}

/// The mount on top of the target's place now, by its name beneath the checked
/// parent (a magic link lands on the handle's own mount, not on what covers it);
/// not followed if it is a symlink now.
fn top_of(sys: &dyn Syscall, target: &Place<'_>) -> Result<OwnedFd, SyscallError> {
    let flags = OpenTreeFlags::OPEN_TREE_CLOEXEC | OpenTreeFlags::AT_SYMLINK_NOFOLLOW;
    sys.open_tree(target.parent, Path::new(target.name), flags)
}

/// A bind: what `mount --bind SOURCE TARGET` (`recursive`: `--rbind`) makes, with
/// the mount flags of `flags` (ro, nosuid, nodev, ...), source and target both
/// handles. Returns the new mount's fd.
pub fn bind(
    sys: &dyn Syscall,
    source: BorrowedFd<'_>,
    recursive: bool,
    flags: MsFlags,
    target: &Place<'_>,
    api: Api,
) -> Result<OwnedFd, SyscallError> {
    let Some(attrs) = mount_attrs(flags).filter(|_| api == Api::NewMountApi) else {
        return legacy_bind(sys, source, recursive, flags, target);
    };
    let tree = detached_copy(sys, source, recursive, attrs)?;
    move_onto(sys, tree.as_fd(), target.fd)?;
    Ok(tree)
}

/// A detached copy (open_tree `OPEN_TREE_CLONE`) of the mount at `source`, or
/// of its whole tree (`recursive`), with the mount attributes `attrs` on its top
/// mount, as mount(8) sets them; [`move_onto`] attaches it, also in another
/// mount namespace than the one it was copied from.
pub fn detached_copy(
    sys: &dyn Syscall,
    source: BorrowedFd<'_>,
    recursive: bool,
    attrs: MountAttrFlags,
) -> Result<OwnedFd, SyscallError> {
    let mut clone = OpenTreeFlags::OPEN_TREE_CLONE
        | OpenTreeFlags::OPEN_TREE_CLOEXEC
        | OpenTreeFlags::AT_EMPTY_PATH;
    if recursive {
        clone |= OpenTreeFlags::AT_RECURSIVE;
    }
    let tree = sys.open_tree(source, Path::new(""), clone)?;
    if !attrs.is_empty() {
        let attr = MountAttr::flags(attrs, MountAttrFlags::empty());
        sys.mount_setattr(tree.as_fd(), Path::new(""), AtFlags::EMPTY_PATH, &attr)?;
    }
    Ok(tree)
}

/// mount(2) `MS_BIND` between the two magic links, then a remount for the flags.
fn legacy_bind(
    sys: &dyn Syscall,
    source: BorrowedFd<'_>,
    recursive: bool,
    flags: MsFlags,
    target: &Place<'_>,
) -> Result<OwnedFd, SyscallError> {
    let mut bind = MsFlags::MS_BIND;
    bind.set(MsFlags::MS_REC, recursive);
    let on = fd_path(target.fd);
    sys.mount(Some(&fd_path(source)), &on, None, bind, None)?;
    let made = top_of(sys, target)?;
    if !flags.is_empty() {
        let remount = MsFlags::MS_BIND | MsFlags::MS_REMOUNT | flags;
        if let Err(e) = sys.mount(None, &fd_path(made.as_fd()), None, remount, None) {
            let _ = detach(sys, made.as_fd());
            return Err(e);
        }
    }
    Ok(made)
}

/// Moves the mount `mount` is the root of (made on a staging directory, or a
/// detached one) onto `target`.
pub fn move_onto(
    sys: &dyn Syscall,
    mount: BorrowedFd<'_>,
    target: BorrowedFd<'_>,
) -> Result<(), SyscallError> {
    let flags = MoveMountFlags::MOVE_MOUNT_F_EMPTY_PATH | MoveMountFlags::MOVE_MOUNT_T_EMPTY_PATH;
    sys.move_mount(mount, Path::new(""), target, Path::new(""), flags)
}

/// Changes the propagation of the mount `mount` is the root of (`MS_SHARED`,
/// `MS_SLAVE`, `MS_PRIVATE`, `MS_UNBINDABLE`; `recursive`: of its whole tree).
pub fn set_propagation(
    sys: &dyn Syscall,
    mount: BorrowedFd<'_>,
    kind: MsFlags,
    recursive: bool,
) -> Result<(), SyscallError> {
    let mut at = AtFlags::EMPTY_PATH;
    if recursive {
        at |= AT_RECURSIVE;
    }
    sys.mount_setattr(mount, Path::new(""), at, &MountAttr::propagation(kind))
}

/// Unmounts the mount on `name` beneath the checked `parent`:
/// `UMOUNT_NOFOLLOW`, so a symlink put there after the check is not followed. The
/// parent, not the target, is the handle: an fd on the mount itself would keep it
/// busy.
pub fn unmount(
    sys: &dyn Syscall,
    parent: BorrowedFd<'_>,
    name: &OsStr,
    flags: MntFlags,
) -> Result<(), SyscallError> {
    let path = fd_path(parent).join(name);
    sys.umount2(&path, flags | MntFlags::UMOUNT_NOFOLLOW)
}

/// Undoes a mount that was made: lazily detaches exactly the mount `mount` is the
/// root of, through its own fd, wherever it landed.
pub fn detach(sys: &dyn Syscall, mount: BorrowedFd<'_>) -> Result<(), SyscallError> {
    sys.umount2(&fd_path(mount), MntFlags::MNT_DETACH)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mount::syscall::fake::{Call, Recording};
    use std::os::fd::AsRawFd;

    fn dir() -> (tempfile::TempDir, OwnedFd) {
        let dir = tempfile::tempdir().unwrap();
        let fd = crate::ns::beneath::open_root(dir.path()).unwrap();
        (dir, fd)
    }

    /// A directory `v` in a temporary directory: the parent's fd and its own.
    struct Target {
        dir: tempfile::TempDir,
        parent: OwnedFd,
        fd: OwnedFd,
    }

    impl Target {
        fn new() -> Self {
            let (dir, parent) = super::tests::dir();
            std::fs::create_dir(dir.path().join("v")).unwrap();
            let fd = crate::ns::beneath::open_root(&dir.path().join("v")).unwrap();
            Target { dir, parent, fd }
        }

        fn place(&self) -> Place<'_> {
            Place {
                parent: self.parent.as_fd(),
                name: OsStr::new("v"),
                fd: self.fd.as_fd(),
            }
        }

        fn path(&self) -> String {
            self.dir.path().join("v").display().to_string()
        }
    }

    fn os(items: &[&'static str]) -> Vec<&'static OsStr> {
        items.iter().map(|s| OsStr::new(*s)).collect()
    }

    const EMPTY_PATHS: MoveMountFlags =
        MoveMountFlags::MOVE_MOUNT_F_EMPTY_PATH.union(MoveMountFlags::MOVE_MOUNT_T_EMPTY_PATH);

    #[test]
    fn a_new_filesystem_is_configured_then_moved_onto_the_target_fd() {
        let target = Target::new();
        let sys = Recording::default();
        let data = os(&["size=2m", "mode=0755", "noswap"]);
        let fs = Filesystem {
            fstype: "tmpfs",
            source: OsStr::new("vol"),
            flags: MsFlags::MS_RDONLY | MsFlags::MS_NOSUID | MsFlags::MS_RELATIME,
            data: &data,
            files: &[("lowerdir+", target.fd.as_fd())],
        };
        new_filesystem(&sys, &fs, &target.place(), Api::NewMountApi).unwrap();
        let ctx = "fsopen tmpfs#1".to_string();
        let set = |key: &str, value: &str| Call::FsconfigString {
            fs: ctx.clone(),
            key: key.into(),
            value: value.into(),
        };
        let flag = |key: &str| Call::FsconfigFlag {
            fs: ctx.clone(),
            key: key.into(),
        };
        assert_eq!(
            sys.calls(),
            vec![
                Call::Fsopen {
                    fstype: "tmpfs".into(),
                    flags: FsOpenFlags::FSOPEN_CLOEXEC
                },
                set("source", "vol"),
                flag("ro"),
                set("size", "2m"),
                set("mode", "0755"),
                flag("noswap"),
                Call::FsconfigFd {
                    fs: ctx.clone(),
                    key: "lowerdir+".into(),
                    file: target.path(),
                },
                Call::FsconfigCreate { fs: ctx.clone() },
                Call::Fsmount {
                    fs: ctx.clone(),
                    flags: FsMountFlags::FSMOUNT_CLOEXEC,
                    attr: MountAttrFlags::MOUNT_ATTR_RDONLY | MountAttrFlags::MOUNT_ATTR_NOSUID
                },
                Call::MoveMount {
                    from: "fsmount#9".into(),
                    to: target.path(),
                    flags: EMPTY_PATHS
                },
            ]
        );
    }

    #[test]
    fn without_the_new_api_mount2_takes_the_fds_magic_link() {
        let target = Target::new();
        let sys = Recording::default();
        let data = os(&["size=2m", "uid=0"]);
        let fs = Filesystem {
            fstype: "tmpfs",
            source: OsStr::new("vol"),
            flags: MsFlags::MS_NOEXEC,
            data: &data,
            files: &[],
        };
        new_filesystem(&sys, &fs, &target.place(), Api::ProcFdPath).unwrap();
        let on = format!("/proc/thread-self/fd/{}", target.fd.as_raw_fd());
        assert_eq!(
            sys.calls()[0],
            Call::Mount {
                source: Some("vol".into()),
                target: on.into(),
                fstype: Some("tmpfs".into()),
                flags: MsFlags::MS_NOEXEC,
                data: Some("size=2m,uid=0".into())
            }
        );
        // A flag the new API has no attribute for takes the same way.
        let sys = Recording::default();
        let iversion = Filesystem {
            flags: MsFlags::MS_I_VERSION,
            ..fs
        };
        new_filesystem(&sys, &iversion, &target.place(), Api::NewMountApi).unwrap();
        assert!(
            matches!(&sys.calls()[0], Call::Mount { flags, .. } if *flags == MsFlags::MS_I_VERSION)
        );
    }

    #[test]
    fn a_bind_clones_the_source_fd_sets_its_flags_and_moves_onto_the_target_fd() {
        let (src_dir, source) = dir();
        let target = Target::new();
        let sys = Recording::default();
        let flags = MsFlags::MS_RDONLY | MsFlags::MS_NOSUID | MsFlags::MS_NODEV;
        bind(
            &sys,
            source.as_fd(),
            true,
            flags,
            &target.place(),
            Api::NewMountApi,
        )
        .unwrap();
        let attrs = MountAttrFlags::MOUNT_ATTR_RDONLY
            | MountAttrFlags::MOUNT_ATTR_NOSUID
            | MountAttrFlags::MOUNT_ATTR_NODEV;
        assert_eq!(
            sys.calls(),
            vec![
                Call::OpenTree {
                    path: src_dir.path().display().to_string(),
                    flags: OpenTreeFlags::OPEN_TREE_CLONE
                        | OpenTreeFlags::OPEN_TREE_CLOEXEC
                        | OpenTreeFlags::AT_EMPTY_PATH
                        | OpenTreeFlags::AT_RECURSIVE
                },
                Call::MountSetattr {
                    path: "open_tree#1".into(),
                    flags: AtFlags::EMPTY_PATH,
                    attr: MountAttr::flags(attrs, MountAttrFlags::empty())
                },
                Call::MoveMount {
                    from: "open_tree#1".into(),
                    to: target.path(),
                    flags: EMPTY_PATHS
                },
            ]
        );
        // A failed step stops the sequence: nothing is moved onto the target.
        let sys = Recording::failing(1, Errno::EPERM);
        let err = bind(
            &sys,
            source.as_fd(),
            false,
            flags,
            &target.place(),
            Api::NewMountApi,
        )
        .unwrap_err();
        assert_eq!(err.errno(), Errno::EPERM);
        assert_eq!(sys.calls().len(), 2);
    }

    #[test]
    fn unmount_names_the_target_beneath_its_parent_fd_and_undo_detaches_the_mount_fd() {
        let target = Target::new();
        let sys = Recording::default();
        unmount(
            &sys,
            target.parent.as_fd(),
            OsStr::new("v"),
            MntFlags::MNT_FORCE,
        )
        .unwrap();
        detach(&sys, target.fd.as_fd()).unwrap();
        let (parent, fd) = (target.parent.as_raw_fd(), target.fd.as_raw_fd());
        assert_eq!(
            sys.calls(),
            vec![
                Call::Umount {
                    target: format!("/proc/thread-self/fd/{parent}/v").into(),
                    flags: MntFlags::MNT_FORCE | MntFlags::UMOUNT_NOFOLLOW
                },
                Call::Umount {
                    target: format!("/proc/thread-self/fd/{fd}").into(),
                    flags: MntFlags::MNT_DETACH
                },
            ]
        );
    }

    #[test]
    fn flags_map_to_mount_attributes_or_to_none() {
        assert_eq!(
            mount_attrs(MsFlags::MS_NOATIME | MsFlags::MS_NODEV | MsFlags::MS_SILENT),
            Some(MountAttrFlags::MOUNT_ATTR_NOATIME | MountAttrFlags::MOUNT_ATTR_NODEV)
        );
        assert_eq!(
            mount_attrs(MsFlags::MS_SYNCHRONOUS),
            Some(MountAttrFlags::empty())
        );
        assert_eq!(mount_attrs(MsFlags::MS_I_VERSION), None);
        assert_eq!(mount_attrs(MsFlags::MS_BIND), None);
    }
}
