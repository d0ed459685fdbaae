//! What a check hands on: the caller's paths resolved once, to handles. After the
//! check nothing resolves them by name again: executors mount onto, clone, move and
//! unmount through these fds, and the paths are kept only for messages.

use std::ffi::OsString;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::path::{Path, PathBuf};

use crate::mount::by_handle::Place;

/// A checked mount target: an `O_PATH` fd opened beneath a target root without
/// following symlinks, the fd of its parent (an unmount names the target beneath
/// it: an fd on the mount itself would keep it busy), its last component, and its
/// path for messages.
#[derive(Debug)]
pub struct CheckedTarget {
    pub path: PathBuf,
    /// The target root it was resolved beneath.
    pub root: PathBuf,
    pub fd: OwnedFd,
    pub parent: OwnedFd,
    pub name: OsString,
}

impl CheckedTarget {
    /// Where a mount onto this target goes.
    pub fn place(&self) -> Place<'_> {
        Place {
            parent: self.parent.as_fd(),
            name: &self.name,
            fd: self.fd.as_fd(),
        }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Copies of the fds, for a blocking thread that outlives a borrow.
    pub fn try_clone(&self) -> std::io::Result<CheckedTarget> {
        Ok(CheckedTarget {
            path: self.path.clone(),
            root: self.root.clone(),
            fd: self.fd.try_clone()?,
            parent: self.parent.try_clone()?,
            name: self.name.clone(),
        })
    }
}

/// A checked source (of a bind, a move, a loop file, a block device, an overlay
/// layer): an `O_PATH` fd opened beneath a source root without following
/// symlinks, and its path for messages.
#[derive(Debug)]
pub struct CheckedSource {
    pub path: PathBuf,
    pub fd: OwnedFd,
}

impl CheckedSource {
    pub fn fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }

    pub fn try_clone(&self) -> std::io::Result<CheckedSource> {
        Ok(CheckedSource {
            path: self.path.clone(),
            fd: self.fd.try_clone()?,
        })
    }
}

/// A checked mount request: its target and, when it takes paths, its sources.
#[derive(Debug)]
pub struct CheckedMount {
    pub target: CheckedTarget,
    /// The source of a bind, a move or a loop mount, or a block device.
    pub source: Option<CheckedSource>,
    /// Overlay layers, in the order given, each with its option's key
    /// (`lowerdir` once per lower layer, `upperdir`, `workdir`, ...).
    pub layers: Vec<(String, CheckedSource)>,
}

impl CheckedMount {
    pub fn try_clone(&self) -> std::io::Result<CheckedMount> {
        Ok(CheckedMount {
            target: self.target.try_clone()?,
            source: self.source.as_ref().map(|s| s.try_clone()).transpose()?,
            layers: self
                .layers
                .iter()
                .map(|(key, layer)| Ok((key.clone(), layer.try_clone()?)))
                .collect::<std::io::Result<_>>()?,
        })
    }
}
