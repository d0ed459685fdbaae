//! Resolution of a target or source below its allowed roots, once, to handles:
//! `O_PATH` fds opened with openat2 (`RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS |
//! RESOLVE_NO_MAGICLINKS`) where the kernel has it, one component at a time
//! otherwise (see [`crate::ns::beneath`]).

use std::os::fd::AsFd;
use std::path::{Component, Path, PathBuf};

use nix::errno::Errno;
use nix::fcntl::OFlag;
use nix::sys::stat::{fstat, Mode, SFlag};

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
    let (root, path, rest) = below(what, path, roots)?;
    let fault = |f| fault(what, &root, &path, f);
    let root_fd = open_root(&root).map_err(|e| fault(Fault::Root(e)))?;
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
        root,
        fd,
        parent,
        name,
    })
}

/// Makes the missing directories of `path` below its root (`X-mount.mkdir`),
/// each by mkdirat(2) beneath the handle of its parent, itself opened without
/// following a symlink; with `mode` (less the daemon's umask), as mount(8)
/// makes them.
pub(super) fn make_dirs(path: &Path, roots: &[PathBuf], mode: u32) -> Result<(), PolicyError> {
    let what = "target";
    let (root, path, rest) = below(what, path, roots)?;
    let fault = |f| fault(what, &root, &path, f);
    let mut dir = open_root(&root).map_err(|e| fault(Fault::Root(e)))?;
    for name in rest.iter() {
        let name = Path::new(name);
        dir = match beneath_fd(dir.as_fd(), name, Kind::Directory) {
            Err(Fault::Missing) => {
                match nix::sys::stat::mkdirat(dir.as_fd(), name, Mode::from_bits_truncate(mode)) {
                    Ok(()) | Err(Errno::EEXIST) => {}
                    Err(errno) => return Err(fault(Fault::Errno(errno))),
                }
                beneath_fd(dir.as_fd(), name, Kind::Directory).map_err(fault)?
            }
            opened => opened.map_err(fault)?,
        };
    }
    Ok(())
}

/// A bind's source and target are both directories or both not, as the kernel
/// binds them; else the refusal in mount(8)'s words, before anything is made.
pub(super) fn same_kind(source: &CheckedSource, target: &CheckedTarget) -> Result<(), PolicyError> {
    let is_dir = |fd, what, path: &Path| match fstat(fd) {
        Ok(st) => Ok(SFlag::from_bits_truncate(st.st_mode) & SFlag::S_IFMT == SFlag::S_IFDIR),
        Err(errno) => Err(PolicyError::Unresolvable {
            what,
            path: path.to_owned(),
            errno,
        }),
    };
    let source_is_dir = is_dir(source.fd(), "source", &source.path)?;
    match source_is_dir == is_dir(target.fd.as_fd(), "target", &target.path)? {
        true => Ok(()),
        false => Err(PolicyError::BindKind {
            target: target.path.clone(),
            source_is_dir,
        }),
    }
}

/// `path` (absolute, with no `..`) normalized, the root it lies strictly below
/// and the rest of it below that root.
fn below(
    what: &'static str,
    path: &Path,
    roots: &[PathBuf],
) -> Result<(PathBuf, PathBuf, PathBuf), PolicyError> {
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
    Ok((root.clone(), path, rest))
}

/// Why `path` (below `root`) could not be resolved, as the policy says it.
fn fault(what: &'static str, root: &Path, path: &Path, f: Fault) -> PolicyError {
    let path = path.to_owned();
    match f {
        Fault::Root(errno) => PolicyError::Unresolvable {
            what: "allowed root",
            path: root.to_owned(),
            errno,
        },
        Fault::Errno(errno) => PolicyError::Unresolvable { what, path, errno },
        Fault::Missing => PolicyError::Missing { what, path },
        Fault::Symlink(component) => PolicyError::Symlink {
            what,
            path,
            component,
        },
        Fault::NotADirectory(component) => PolicyError::NotADirectory {
            what,
            path,
            component,
        },
    }
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

/// A block device node to bind (allowed by the device rules as `path`, number
/// `rdev`), opened once: below the source `roots`, as any bind source (no link
/// followed: a pod may plant one in its volume); elsewhere, the links udev keeps
/// (`/dev/disk/by-path/...`) followed as mount(8) follows them, then the node
/// itself without following any. It must still be a block device of `rdev`.
pub(super) fn device_node(
    path: &Path,
    rdev: u64,
    roots: &[PathBuf],
) -> Result<CheckedSource, PolicyError> {
    let unresolvable = |errno| PolicyError::Unresolvable {
        what: "source",
        path: path.to_owned(),
        errno,
    };
    let below_roots = roots
        .iter()
        .any(|r| normalize(path).starts_with(normalize(r)));
    let checked = match below_roots {
        true => resolve_source(path, roots, Kind::Any)?,
        false => {
            let node = std::fs::canonicalize(path)
                .map_err(|e| unresolvable(Errno::from_raw(e.raw_os_error().unwrap_or(0))))?;
            let how = OFlag::O_PATH | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC;
            let fd = nix::fcntl::open(&node, how, Mode::empty()).map_err(unresolvable)?;
            CheckedSource { path: node, fd }
        }
    };
    let stat = nix::sys::stat::fstat(&checked.fd).map_err(unresolvable)?;
    let block = SFlag::from_bits_truncate(stat.st_mode) & SFlag::S_IFMT == SFlag::S_IFBLK;
    if !block || stat.st_rdev != rdev {
        return Err(PolicyError::DeviceReplaced { path: checked.path });
    }
    Ok(checked)
}

/// How many symbolic links an unmount's target may pass through (the kernel's
/// own limit).
const MAX_LINKS: usize = 40;

/// `path` with the symbolic links on it replaced by what they name, as umount(8)
/// canonicalizes its argument. Each link is read through the handle of its
/// parent, itself resolved beneath a root without following any symlink; the
/// path it leads to is checked afresh, so a link leads only where a caller could
/// have named directly, and never out of the roots. A path with no link, or that
/// cannot be resolved at all, is returned as it is, for [`resolve`] to judge.
pub(super) fn without_links(path: &Path, roots: &[PathBuf]) -> Result<PathBuf, PolicyError> {
    let mut path = path.to_owned();
    for _ in 0..MAX_LINKS {
        match resolve("target", &path, roots, Kind::Any) {
            Err(PolicyError::Symlink { .. }) => {}
            _ => return Ok(path),
        }
        match read_first_link(&path, roots) {
            Some(next) => path = next,
            None => return Ok(path),
        }
    }
    Err(PolicyError::Unresolvable {
        what: "target",
        path,
        errno: Errno::ELOOP,
    })
}

/// `path` with its first symbolic link below a root replaced by the link's text.
fn read_first_link(path: &Path, roots: &[PathBuf]) -> Option<PathBuf> {
    let path = normalize(path);
    let (root, rest) = roots.iter().map(|r| normalize(r)).find_map(|root| {
        let rest = path.strip_prefix(&root).ok()?.to_owned();
        Some((root, rest))
    })?;
    let root_fd = open_root(&root).ok()?;
    let names: Vec<&std::ffi::OsStr> = rest.iter().collect();
    for (i, name) in names.iter().enumerate() {
        let dirs: PathBuf = names[..i].iter().collect();
        let parent = match i {
            0 => root_fd.try_clone().ok()?,
            _ => beneath_fd(root_fd.as_fd(), &dirs, Kind::Directory).ok()?,
        };
        let Ok(link) = nix::fcntl::readlinkat(parent.as_fd(), *name) else {
            continue;
        };
        let after: PathBuf = names[i + 1..].iter().collect();
        return Some(lexical(&root.join(dirs).join(link)).join(after));
    }
    None
}

/// An absolute path with `.` and `..` taken away by name (its directories hold
/// no symlink: they were just resolved without following one).
fn lexical(path: &Path) -> PathBuf {
    let mut out = PathBuf::from("/");
    for component in path.components() {
        match component {
            Component::ParentDir => {
                out.pop();
            }
            Component::Normal(name) => out.push(name),
            Component::RootDir | Component::CurDir | Component::Prefix(_) => {}
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;

    #[test]
    fn a_device_node_below_the_roots_is_never_reached_through_a_link() {
        let Some(dev) = crate::testing::block_device_or_skip(
            "a_device_node_below_the_roots_is_never_reached_through_a_link",
        ) else {
            return;
        };
        use std::os::unix::fs::MetadataExt;
        let rdev = std::fs::metadata(&dev).unwrap().rdev();
        let dir = tempfile::tempdir().unwrap();
        let roots = [dir.path().to_owned()];
        // A pod's link to a device: refused below the roots.
        let planted = dir.path().join("planted");
        symlink(&dev, &planted).unwrap();
        let err = device_node(&planted, rdev, &roots).unwrap_err();
        assert!(matches!(err, PolicyError::Symlink { .. }), "{err:?}");
        // A udev link elsewhere is followed to the node.
        let outside = tempfile::tempdir().unwrap();
        let by_path = outside.path().join("by-path");
        symlink(&dev, &by_path).unwrap();
        let checked = device_node(&by_path, rdev, &roots).unwrap();
        assert_eq!(checked.path, std::fs::canonicalize(&dev).unwrap());
        // Another device number than the one checked.
        let err = device_node(&by_path, rdev + 1, &roots).unwrap_err();
        assert!(matches!(err, PolicyError::DeviceReplaced { .. }), "{err:?}");
    }

    #[test]
    fn links_are_replaced_and_judged_afresh() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("pods");
        std::fs::create_dir_all(root.join("a/v")).unwrap();
        symlink(root.join("a/v"), root.join("abs")).unwrap();
        symlink("../a/v", root.join("a/rel")).unwrap();
        symlink("rel", root.join("a/chain")).unwrap();
        symlink("/etc", root.join("out")).unwrap();
        symlink("loop", root.join("loop")).unwrap();
        let roots = [root.clone()];
        let want = root.join("a/v");
        for link in ["abs", "a/rel", "a/chain"] {
            assert_eq!(
                without_links(&root.join(link), &roots).unwrap(),
                want,
                "{link}"
            );
        }
        // Through a linked directory too.
        symlink(root.join("a"), root.join("dir")).unwrap();
        assert_eq!(without_links(&root.join("dir/v"), &roots).unwrap(), want);
        // Out of the roots: the path it leads to, which the check then refuses.
        assert_eq!(
            without_links(&root.join("out"), &roots).unwrap(),
            PathBuf::from("/etc")
        );
        assert!(matches!(
            without_links(&root.join("loop"), &roots),
            Err(PolicyError::Unresolvable {
                errno: Errno::ELOOP,
                ..
            })
        ));
        assert_eq!(
            lexical(Path::new("/a/b/../../../c/./d")),
            PathBuf::from("/c/d")
        );
    }
}
