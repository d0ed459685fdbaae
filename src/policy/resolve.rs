//! Resolution of a target or source below its allowed roots, once, to handles:
//! `O_PATH` fds opened with openat2 (`RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS |
//! RESOLVE_NO_MAGICLINKS`) where the kernel has it, one component at a time
//! otherwise (see [`crate::ns::beneath`]).

use std::os::fd::AsFd;
use std::path::{Component, Path, PathBuf};

use crate::ns::beneath::{beneath_fd, open_root, Fault, Kind};
use crate::ns::mountinfo::normalize;
use crate::policy::checked::{CheckedSource, CheckedTarget};
use crate::policy::PolicyError;

/// Checks that `path` lies strictly below one of `roots` and resolves it from there
/// without following any symlink: its parent first, then its last component
/// beneath the parent's handle. The roots themselves are trusted configuration and
/// are opened normally.
pub(super) fn resolve(
    what: &'static str,
    path: &Path,
    roots: &[PathBuf],
    kind: Kind,
) -> Result<CheckedTarget, PolicyError> {
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
        (!rest.as_os_str().is_empty()).then_some((root, rest.to_owned()))
    });
    let Some((root, rest)) = below else {
        return Err(if roots.contains(&path) {
            PolicyError::IsRoot { what, path }
        } else {
            PolicyError::OutsideRoots { what, path, roots }
        });
    };
    let fault = |f: Fault| match f {
        Fault::Root(errno) => PolicyError::Unresolvable {
            what: "allowed root",
            path: root.clone(),
            errno,
        },
        Fault::Errno(errno) => PolicyError::Unresolvable {
            what,
            path: path.clone(),
            errno,
        },
        Fault::Missing => PolicyError::Missing {
            what,
            path: path.clone(),
        },
        Fault::Symlink(component) => PolicyError::Symlink {
            what,
            path: path.clone(),
            component,
        },
        Fault::NotADirectory(component) => PolicyError::NotADirectory {
            what,
            path: path.clone(),
            component,
        },
    };
    let root_fd = open_root(root).map_err(|e| fault(Fault::Root(e)))?;
    let name = rest
        .file_name()
        .expect("a normalized path below a root")
        .to_owned();
    let parent = match rest.parent().filter(|p| !p.as_os_str().is_empty()) {
        Some(dirs) => beneath_fd(root_fd.as_fd(), dirs, Kind::Directory).map_err(fault)?,
        None => root_fd,
    };
    let fd = beneath_fd(parent.as_fd(), Path::new(&name), kind).map_err(fault)?;
    Ok(CheckedTarget {
        path,
        root: root.clone(),
        fd,
        parent,
        name,
    })
}

/// A source resolved the same way: only its own handle is kept.
pub(super) fn resolve_source(
    path: &Path,
    roots: &[PathBuf],
    kind: Kind,
) -> Result<CheckedSource, PolicyError> {
    let checked = resolve("source", path, roots, kind)?;
    Ok(CheckedSource {
        path: checked.path,
        fd: checked.fd,
    })
}
