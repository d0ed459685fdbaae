//! Resolution of a target or bind source below its allowed roots without following
//! any symlink: with openat2 where the kernel has it, one component at a time
//! otherwise.

use std::ffi::OsStr;
use std::os::fd::OwnedFd;
use std::path::{Component, Path, PathBuf};

use nix::errno::Errno;
use nix::fcntl::{open, openat, openat2, OFlag, OpenHow, ResolveFlag};
use nix::sys::stat::{fstat, Mode, SFlag};

use crate::ns::mountinfo::normalize;
use crate::policy::PolicyError;

/// Checks that `path` lies strictly below one of `roots` and resolves it from there
/// without following any symlink; `dir`: it must be a directory. Returns the
/// normalized path. The roots themselves are trusted configuration and are opened
/// normally.
pub(super) fn resolve(
    what: &'static str,
    path: &Path,
    roots: &[PathBuf],
    dir: bool,
) -> Result<PathBuf, PolicyError> {
    if !path.is_absolute() {
        return Err(PolicyError::NotAbsolute {
            what,
            path: path.to_owned(),
        });
    }
    if path.components().any(|c| c == Component::ParentDir) {
        return Err(PolicyError::DotDot {
            what,
            path: path.to_owned(),
        });
    }
    let path = normalize(path);
    let roots: Vec<PathBuf> = roots.iter().map(|r| normalize(r)).collect();
    let below = roots.iter().find_map(|root| {
        let rest = path.strip_prefix(root).ok()?;
        (!rest.as_os_str().is_empty()).then_some((root, rest))
    });
    let Some((root, rest)) = below else {
        return Err(if roots.contains(&path) {
            PolicyError::IsRoot { what, path }
        } else {
            PolicyError::OutsideRoots { what, path, roots }
        });
    };
    match beneath(root, rest, dir) {
        Ok(()) => Ok(path),
        Err(Fault::Root(errno)) => Err(PolicyError::Unresolvable {
            what: "allowed root",
            path: root.clone(),
            errno,
        }),
        Err(Fault::Errno(errno)) => Err(PolicyError::Unresolvable { what, path, errno }),
        Err(Fault::Missing) => Err(PolicyError::Missing { what, path }),
        Err(Fault::Symlink(component)) => Err(PolicyError::Symlink {
            what,
            path,
            component,
        }),
        Err(Fault::NotADirectory(component)) => Err(PolicyError::NotADirectory {
            what,
            path,
            component,
        }),
    }
}

/// Why `rest` could not be resolved below its root.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Fault {
    /// The root itself cannot be opened.
    Root(Errno),
    Missing,
    Symlink(String),
    NotADirectory(String),
    Errno(Errno),
}

/// Opens `rest` (relative, normalized, no `..`) below `root` with openat2, which
/// refuses symlinks and escapes in the kernel. When openat2 fails, for whatever
/// reason (missing before Linux 5.6 or filtered by seccomp, or a refusal), the walk
/// resolves again one component at a time: it is as strict, and names the component
/// at fault.
fn beneath(root: &Path, rest: &Path, dir: bool) -> Result<(), Fault> {
    let root = open(
        root,
        OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
        Mode::empty(),
    )
    .map_err(Fault::Root)?;
    let mut flags = OFlag::O_PATH | OFlag::O_CLOEXEC;
    if dir {
        flags |= OFlag::O_DIRECTORY;
    }
    let how = OpenHow::new().flags(flags).resolve(
        ResolveFlag::RESOLVE_BENEATH
            | ResolveFlag::RESOLVE_NO_SYMLINKS
            | ResolveFlag::RESOLVE_NO_MAGICLINKS,
    );
    match openat2(&root, rest, how) {
        Ok(_) => Ok(()),
        Err(_) => walk(&root, rest, dir),
    }
}

/// Opens each component of `rest` relative to the previous one with O_NOFOLLOW
/// (which with O_PATH yields the symlink itself), and refuses symlinks and
/// non-directories on the way.
pub(super) fn walk(root: &OwnedFd, rest: &Path, dir: bool) -> Result<(), Fault> {
    let names: Vec<&OsStr> = rest.iter().collect();
    let mut current: Option<OwnedFd> = None;
    for (i, name) in names.iter().enumerate() {
        let parent = current.as_ref().unwrap_or(root);
        let flags = OFlag::O_PATH | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC;
        let fd = openat(parent, *name, flags, Mode::empty()).map_err(|e| match e {
            Errno::ENOENT => Fault::Missing,
            e => Fault::Errno(e),
        })?;
        let mode = fstat(&fd).map_err(Fault::Errno)?.st_mode;
        let kind = SFlag::from_bits_truncate(mode) & SFlag::S_IFMT;
        let component = || name.to_string_lossy().into_owned();
        if kind == SFlag::S_IFLNK {
            return Err(Fault::Symlink(component()));
        }
        let last = i + 1 == names.len();
        if kind != SFlag::S_IFDIR && (dir || !last) {
            return Err(Fault::NotADirectory(component()));
        }
        current = Some(fd);
    }
    Ok(())
}
