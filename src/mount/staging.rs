//! The private staging directory of an executor: where mount(8) and its helpers
//! (mount.nfs, sshfs, a loop device) make a mount that needs a path, before the
//! result is moved onto the checked target's handle. It is a tmpfs of its own,
//! mode 0700, owned by root and made private, so that no caller can reach or swap
//! anything below it and nothing made there propagates; the move then needs no
//! name the caller controls.

use std::ffi::OsStr;
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::fs::{DirBuilderExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use crate::mount::syscall::{MsFlags, Syscall, SyscallError};
use crate::ns::beneath::{on_mount, open_root};

#[derive(Debug, thiserror::Error)]
pub enum StagingError {
    #[error("cannot prepare the staging directory {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot prepare the staging directory {path}: {source}")]
    Mount { path: PathBuf, source: SyscallError },
    #[error(
        "the staging directory {path} is {what}: it must be a root-owned directory of mode 0700"
    )]
    Unsafe { path: PathBuf, what: String },
}

/// A private tmpfs where mounts are made before they are moved onto a target.
pub struct Staging {
    dir: PathBuf,
    next: AtomicU64,
}

/// One staging point: an empty directory below the staging tmpfs, removed when
/// dropped (whatever was mounted on it has been moved away or detached by then).
pub struct Point {
    pub path: PathBuf,
}

impl Drop for Point {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir(&self.path);
    }
}

impl Staging {
    /// Makes `dir` (created 0700 if missing, never through a symlink) a private
    /// tmpfs, unless it already is one (a daemon restarted).
    pub fn prepare(sys: &dyn Syscall, dir: &Path) -> Result<Staging, StagingError> {
        let io = |source| StagingError::Io {
            path: dir.to_owned(),
            source,
        };
        root_only_dir(dir)?;
        let fd = open_root(dir).map_err(|e| io(e.into()))?;
        let mounted = on_mount(fd.as_fd()).is_ok_and(|m| m.root);
        drop(fd);
        let failed = |source| StagingError::Mount {
            path: dir.to_owned(),
            source,
        };
        if !mounted {
            let data = OsStr::new("mode=0700,size=64k");
            sys.mount(
                Some(Path::new("sidemount-staging")),
                dir,
                Some("tmpfs"),
                MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC,
                Some(data),
            )
            .map_err(failed)?;
        }
        // Private: what is made here stays here until it is moved, and a moved
        // mount needs a parent that is not shared.
        sys.mount(None, dir, None, MsFlags::MS_PRIVATE, None)
            .map_err(failed)?;
        check_owner(dir, &std::fs::symlink_metadata(dir).map_err(io)?)?;
        Ok(Staging {
            dir: dir.to_owned(),
            next: AtomicU64::new(0),
        })
    }

    /// A fresh, empty staging point.
    pub fn point(&self) -> Result<Point, StagingError> {
        let n = self.next.fetch_add(1, Ordering::Relaxed);
        let path = self.dir.join(format!("{}-{n}", std::process::id()));
        std::fs::DirBuilder::new()
            .mode(0o700)
            .create(&path)
            .map_err(|source| StagingError::Io {
                path: path.clone(),
                source,
            })?;
        Ok(Point { path })
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }
}

impl Point {
    /// The point as it is named once this value is gone: it is left in place,
    /// for a step that removes it itself (in another mount namespace).
    pub fn into_path(self) -> PathBuf {
        let path = self.path.clone();
        std::mem::forget(self);
        path
    }

    /// The root of what was mounted on this point, to move it away: `None` when
    /// nothing is mounted here.
    pub fn mounted(&self) -> Option<OwnedFd> {
        let fd = open_root(&self.path).ok()?;
        on_mount(fd.as_fd()).ok()?.root.then_some(fd)
    }
}

/// Makes `dir` (created 0700 if missing) and checks that it is a root-owned
/// directory of mode 0700, not a symlink: only root can write in it, so no caller
/// can plant or swap anything below it.
pub fn root_only_dir(dir: &Path) -> Result<(), StagingError> {
    let io = |source| StagingError::Io {
        path: dir.to_owned(),
        source,
    };
    match std::fs::DirBuilder::new()
        .mode(0o700)
        .recursive(true)
        .create(dir)
    {
        Err(e) if e.kind() != std::io::ErrorKind::AlreadyExists => return Err(io(e)),
        _ => {}
    }
    check_owner(dir, &std::fs::symlink_metadata(dir).map_err(io)?)
}

fn check_owner(dir: &Path, meta: &std::fs::Metadata) -> Result<(), StagingError> {
    let what = if !meta.is_dir() {
        "not a directory".to_owned()
    } else if meta.uid() != 0 {
        format!("owned by uid {}", meta.uid())
    } else if meta.mode() & 0o077 != 0 {
        format!("of mode {:o}", meta.mode() & 0o7777)
    } else {
        return Ok(());
    };
    Err(StagingError::Unsafe {
        path: dir.to_owned(),
        what,
    })
}
