//! Steps taken inside another process's mount namespace (a VCS container's): on a
//! thread of its own that enters it, since setns(CLONE_NEWNS) changes the calling
//! thread's root and working directory, which no other thread may share. The
//! thread ends with the step; handles it opened stay valid in the caller. The
//! namespace's `/proc` belongs to its container, so the thread works in this
//! process's procfs, opened before, and names its handles from there.

use std::fs::File;
use std::path::{Path, PathBuf};

use nix::errno::Errno;
use nix::fcntl::OFlag;
use nix::sched::CloneFlags;
use nix::sys::stat::Mode;

use crate::ns::beneath::name_fds_from_cwd;

#[derive(Debug, thiserror::Error)]
pub enum EnterError {
    #[error("cannot open the mount namespace {}: {errno}", path.display())]
    Open { path: PathBuf, errno: Errno },
    #[error("cannot enter the mount namespace of {namespace}: {errno}")]
    Enter { namespace: String, errno: Errno },
    #[error("cannot open this process's /proc: {0}")]
    Proc(Errno),
    #[error("the thread acting in the mount namespace of {namespace} panicked")]
    Panicked { namespace: String },
}

/// A mount namespace to act in: `/proc/PID/ns/mnt`, opened once.
pub struct MountNamespace {
    file: File,
    /// How messages name it ("the sidemount-vcs-nfs container (pid 4242)").
    pub name: String,
}

impl MountNamespace {
    /// The mount namespace of `pid`, through the procfs at `proc`.
    pub fn of(proc: &Path, pid: u32, name: String) -> Result<Self, EnterError> {
        let path = proc.join(pid.to_string()).join("ns/mnt");
        let file = File::open(&path).map_err(|e| EnterError::Open {
            errno: Errno::from_raw(e.raw_os_error().unwrap_or(libc::EIO)),
            path,
        })?;
        Ok(MountNamespace { file, name })
    }

    /// Runs `step` on a new thread inside this namespace and returns its result.
    pub fn run<T: Send>(&self, step: impl FnOnce() -> T + Send) -> Result<T, EnterError> {
        let enter = |errno| EnterError::Enter {
            namespace: self.name.clone(),
            errno,
        };
        let proc = nix::fcntl::open(
            "/proc",
            OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
            Mode::empty(),
        )
        .map_err(EnterError::Proc)?;
        std::thread::scope(|s| {
            s.spawn(|| {
                // 1. A root and working directory of this thread's own: setns
                //    refuses a thread that shares them.
                nix::sched::unshare(CloneFlags::CLONE_FS).map_err(enter)?;
                // 2. The namespace, with its root as this thread's root.
                nix::sched::setns(&self.file, CloneFlags::CLONE_NEWNS).map_err(enter)?;
                // 3. This process's procfs as the working directory, to name
                //    handles by `thread-self/fd/N`.
                nix::unistd::fchdir(&proc).map_err(enter)?;
                name_fds_from_cwd();
                Ok(step())
            })
            .join()
            .unwrap_or_else(|_| {
                Err(EnterError::Panicked {
                    namespace: self.name.clone(),
                })
            })
        })
    }
}
