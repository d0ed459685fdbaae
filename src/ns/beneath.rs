//! Resolving a caller's path to a handle, once: an `O_PATH` fd opened beneath a
//! trusted root with openat2(`RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS |
//! RESOLVE_NO_MAGICLINKS`), so that no symlink, `..` or magic link planted by a pod
//! can move it elsewhere; and what the kernel says about the mount such a handle is
//! on (statx `STATX_MNT_ID_UNIQUE`), so that later steps act on the handle and
//! compare mount ids instead of resolving the name again.

use std::ffi::OsStr;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::path::{Path, PathBuf};

use nix::errno::Errno;
use nix::fcntl::{open, openat, openat2, OFlag, OpenHow, ResolveFlag};
use nix::sys::stat::{fstat, Mode, SFlag};
use rustix::fs::{statx, AtFlags, StatxAttributes, StatxFlags};

/// Why a path could not be resolved below its root.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Fault {
    /// The root itself cannot be opened.
    Root(Errno),
    Missing,
    /// A component (named) is a symbolic link.
    Symlink(String),
    /// A component (named) that must be a directory is not one.
    NotADirectory(String),
    Errno(Errno),
}

/// What the resolved path must be.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Directory,
    /// A directory or a file (a bind source, a file-onto-file bind target).
    Any,
}

/// Opens the trusted `root` (configuration, not a caller's path) as an `O_PATH`
/// directory.
pub fn open_root(root: &Path) -> Result<OwnedFd, Errno> {
    open(
        root,
        OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
        Mode::empty(),
    )
}

/// `path` opened `O_PATH` inside `root` as a process whose root it is would
/// resolve it (`RESOLVE_IN_ROOT`: `..` and absolute names stay inside), without
/// following any symlink or magic link.
pub fn in_root(root: BorrowedFd<'_>, path: &Path) -> Result<OwnedFd, Errno> {
    let how = OpenHow::new()
        .flags(OFlag::O_PATH | OFlag::O_CLOEXEC)
        .resolve(
            ResolveFlag::RESOLVE_IN_ROOT
                | ResolveFlag::RESOLVE_NO_SYMLINKS
                | ResolveFlag::RESOLVE_NO_MAGICLINKS,
        );
    openat2(root, relative(path), how)
}

/// `path` without its leading `/`; `.` for the root.
pub fn relative(path: &Path) -> &Path {
    match path.strip_prefix("/").unwrap_or(path) {
        p if p.as_os_str().is_empty() => Path::new("."),
        p => p,
    }
}

/// Opens `rest` (relative, normalized, no `..`) beneath `root` without following
/// any symlink, and returns the `O_PATH` handle. When openat2 fails, for whatever
/// reason (missing before Linux 5.6, filtered by seccomp, or a refusal), the walk
/// resolves again one component at a time: it is as strict, and names the
/// component at fault.
pub fn beneath(root: &Path, rest: &Path, kind: Kind) -> Result<OwnedFd, Fault> {
    let root = open_root(root).map_err(Fault::Root)?;
    beneath_fd(root.as_fd(), rest, kind)
}

/// [`beneath`] from an open root.
pub fn beneath_fd(root: BorrowedFd<'_>, rest: &Path, kind: Kind) -> Result<OwnedFd, Fault> {
    // No O_NOFOLLOW: with O_PATH it would open a trailing symlink itself, where
    // RESOLVE_NO_SYMLINKS refuses it.
    let mut flags = OFlag::O_PATH | OFlag::O_CLOEXEC;
    if kind == Kind::Directory {
        flags |= OFlag::O_DIRECTORY;
    }
    let how = OpenHow::new().flags(flags).resolve(
        ResolveFlag::RESOLVE_BENEATH
            | ResolveFlag::RESOLVE_NO_SYMLINKS
            | ResolveFlag::RESOLVE_NO_MAGICLINKS,
    );
    match openat2(root, rest, how) {
        Ok(fd) => Ok(fd),
        Err(_) => walk(root, rest, kind),
    }
}

/// Opens each component of `rest` relative to the previous one with O_NOFOLLOW
/// (which with O_PATH yields the symlink itself), and refuses symlinks and
/// non-directories on the way.
pub fn walk(root: BorrowedFd<'_>, rest: &Path, kind: Kind) -> Result<OwnedFd, Fault> {
    let names: Vec<&OsStr> = rest.iter().collect();
    let dup =
        || openat(root, ".", OFlag::O_PATH | OFlag::O_CLOEXEC, Mode::empty()).map_err(Fault::Errno);
    let mut current: Option<OwnedFd> = None;
    for (i, name) in names.iter().enumerate() {
        let parent = current.as_ref().map_or(root, |fd| fd.as_fd());
        if *name == OsStr::new("..") {
            return Err(Fault::Errno(Errno::EXDEV));
        }
        let flags = OFlag::O_PATH | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC;
        let fd = openat(parent, *name, flags, Mode::empty()).map_err(|e| match e {
            Errno::ENOENT => Fault::Missing,
            e => Fault::Errno(e),
        })?;
        let mode = fstat(&fd).map_err(Fault::Errno)?.st_mode;
        let file_kind = SFlag::from_bits_truncate(mode) & SFlag::S_IFMT;
        let component = || name.to_string_lossy().into_owned();
        if file_kind == SFlag::S_IFLNK {
            return Err(Fault::Symlink(component()));
        }
        let last = i + 1 == names.len();
        if file_kind != SFlag::S_IFDIR && (kind == Kind::Directory || !last) {
            return Err(Fault::NotADirectory(component()));
        }
        current = Some(fd);
    }
    current.map_or_else(dup, Ok)
}

/// The path through which a handle's own file is reached by a call that takes a
/// path (mount(2), umount2(2), mount(8)'s argument): `/proc/thread-self/fd/N`, a
/// magic link the kernel resolves to exactly the handle's mount and dentry, as
/// runc does. Valid in this thread for as long as the fd is open.
pub fn fd_path(fd: BorrowedFd<'_>) -> PathBuf {
    thread_self(&format!("fd/{}", fd.as_raw_fd()))
}

/// `/proc/thread-self/ENTRY` of this process's procfs: what the kernel shows of
/// the calling thread, which may be in another mount namespace than the process
/// (`thread-self/mountinfo` is that namespace's table, seen from its root).
pub fn thread_self(entry: &str) -> PathBuf {
    let dir = if FDS_FROM_CWD.get() { "" } else { "/proc/" };
    PathBuf::from(format!("{dir}thread-self/{entry}"))
}

thread_local! {
    /// Set in a thread that entered another mount namespace, whose `/proc` is not
    /// this process's: its working directory is this process's procfs instead,
    /// and handles are named relative to it (see [`crate::ns::enter`]).
    static FDS_FROM_CWD: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// Names this thread's handles relative to its working directory, which the
/// caller has made this process's procfs.
pub(crate) fn name_fds_from_cwd() {
    FDS_FROM_CWD.set(true);
}

/// What statx(2) says about the mount a handle lies on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OnMount {
    /// The mount's unique id (`STATX_MNT_ID_UNIQUE`, Linux 6.8), or its reusable
    /// id (`STATX_MNT_ID`) on older kernels, as `unique` says.
    pub id: u64,
    pub unique: bool,
    /// Whether the handle is that mount's root, i.e. a mount point.
    pub root: bool,
}

/// `STATX_MNT_ID_UNIQUE` (Linux 6.8).
const STATX_MNT_ID_UNIQUE: u32 = 0x4000;

/// The mount `fd` lies on. `AT_STATX_DONT_SYNC`: no request reaches a network
/// filesystem's server.
pub fn on_mount(fd: BorrowedFd<'_>) -> Result<OnMount, Errno> {
    let ask = |mask: StatxFlags| {
        statx(fd, "", AtFlags::EMPTY_PATH | AtFlags::STATX_DONT_SYNC, mask)
            .map_err(|e| Errno::from_raw(e.raw_os_error()))
    };
    let stx = ask(StatxFlags::from_bits_retain(STATX_MNT_ID_UNIQUE))?;
    let unique = stx.stx_mask & STATX_MNT_ID_UNIQUE != 0;
    let stx = if unique || stx.stx_mask & StatxFlags::MNT_ID.bits() != 0 {
        stx
    } else {
        ask(StatxFlags::MNT_ID)?
    };
    if stx.stx_mask & (STATX_MNT_ID_UNIQUE | StatxFlags::MNT_ID.bits()) == 0
        || !stx
            .stx_attributes_mask
            .contains(StatxAttributes::MOUNT_ROOT)
    {
        return Err(Errno::ENOSYS);
    }
    Ok(OnMount {
        id: stx.stx_mnt_id,
        unique,
        root: stx.stx_attributes.contains(StatxAttributes::MOUNT_ROOT),
    })
}

/// The reusable mount id (as mountinfo shows it) of the mount `fd` lies on, by
/// statx `STATX_MNT_ID` (Linux 5.8): no statmount(2), which a container's seccomp
/// profile may refuse.
pub fn mountinfo_id(fd: BorrowedFd<'_>) -> Result<u32, Errno> {
    let stx = statx(
        fd,
        "",
        AtFlags::EMPTY_PATH | AtFlags::STATX_DONT_SYNC,
        StatxFlags::MNT_ID,
    )
    .map_err(|e| Errno::from_raw(e.raw_os_error()))?;
    if stx.stx_mask & StatxFlags::MNT_ID.bits() == 0 {
        return Err(Errno::ENOSYS);
    }
    u32::try_from(stx.stx_mnt_id).map_err(|_| Errno::EOVERFLOW)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;

    fn tree() -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("pods/uid/volumes/v")).unwrap();
        std::fs::write(dir.path().join("pods/uid/file"), "x").unwrap();
        symlink("/etc", dir.path().join("pods/uid/evil")).unwrap();
        dir
    }

    fn target_of(fd: &OwnedFd) -> PathBuf {
        std::fs::read_link(format!("/proc/self/fd/{}", fd.as_raw_fd())).unwrap()
    }

    #[test]
    fn opens_beneath_without_symlinks_and_names_the_fault() {
        let dir = tree();
        let root = dir.path();
        let fd = beneath(root, Path::new("pods/uid/volumes/v"), Kind::Directory).unwrap();
        assert_eq!(target_of(&fd), root.join("pods/uid/volumes/v"));
        let fd = beneath(root, Path::new("pods/uid/file"), Kind::Any).unwrap();
        assert_eq!(target_of(&fd), root.join("pods/uid/file"));
        for (rest, kind, fault) in [
            (
                "pods/uid/evil/ssl",
                Kind::Directory,
                Fault::Symlink("evil".into()),
            ),
            ("pods/uid/evil", Kind::Any, Fault::Symlink("evil".into())),
            ("pods/uid/none", Kind::Any, Fault::Missing),
            (
                "pods/uid/file",
                Kind::Directory,
                Fault::NotADirectory("file".into()),
            ),
            (
                "pods/uid/file/x",
                Kind::Any,
                Fault::NotADirectory("file".into()),
            ),
        ] {
            assert_eq!(
                beneath(root, Path::new(rest), kind).unwrap_err(),
                fault,
                "{rest}"
            );
        }
        assert_eq!(
            beneath(&root.join("nope"), Path::new("x"), Kind::Any).unwrap_err(),
            Fault::Root(Errno::ENOENT)
        );
    }

    #[test]
    fn the_walk_alone_is_as_strict_and_returns_the_same_file() {
        let dir = tree();
        let root = open_root(dir.path()).unwrap();
        let fd = walk(
            root.as_fd(),
            Path::new("pods/uid/volumes/v"),
            Kind::Directory,
        )
        .unwrap();
        assert_eq!(target_of(&fd), dir.path().join("pods/uid/volumes/v"));
        assert_eq!(
            walk(
                root.as_fd(),
                Path::new("pods/uid/evil/ssl"),
                Kind::Directory
            )
            .unwrap_err(),
            Fault::Symlink("evil".into())
        );
        assert_eq!(
            walk(root.as_fd(), Path::new("pods/../x"), Kind::Any).unwrap_err(),
            Fault::Errno(Errno::EXDEV)
        );
    }

    #[test]
    fn a_handle_reads_through_its_fd_path_and_knows_its_mount() {
        let dir = tree();
        let fd = beneath(dir.path(), Path::new("pods/uid"), Kind::Directory).unwrap();
        let via = fd_path(fd.as_fd());
        assert_eq!(std::fs::read(via.join("file")).unwrap(), b"x");
        let here = on_mount(fd.as_fd()).unwrap();
        let root = on_mount(open_root(Path::new("/")).unwrap().as_fd()).unwrap();
        assert!(!here.root, "a plain directory is no mount point");
        let line = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
        let id = mountinfo_id(fd.as_fd()).unwrap().to_string();
        assert!(
            line.lines().any(|l| l.starts_with(&format!("{id} "))),
            "{id}"
        );
        assert!(root.root, "/ is a mount's root");
    }
}
