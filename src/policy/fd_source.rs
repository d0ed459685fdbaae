//! A bind source given as one of the caller's file descriptors: the kubelet opens
//! a subPath below its volume without following links and binds
//! `/proc/<kubelet pid>/fd/N`. That name means something only in the caller's
//! pid and mount namespaces, so the daemon never resolves it: the client opens it
//! in its own namespaces and sends its own fd number, and the daemon takes that fd
//! from the peer's fd table (pidfd_getfd(2) of the peer SO_PEERCRED named). The
//! handle is then located below the source roots exactly as any bind source, and
//! the bind is made from that checked handle only once it is proven to be the
//! very file the caller holds.

use std::ffi::OsString;
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::path::{Path, PathBuf};

use nix::errno::Errno;
use nix::sys::stat::fstat;
use rustix::process::{pidfd_getfd, pidfd_open, Pid, PidfdFlags, PidfdGetfdFlags};

use crate::ns::beneath::{fd_path, Kind};
use crate::policy::checked::CheckedSource;
use crate::policy::resolve::resolve_source;
use crate::policy::PolicyError;

/// The peer's fd `fd`, taken from the fd table of the process `pid` (in the
/// daemon's pid namespace, as SO_PEERCRED gives it). The peer waits on its
/// connection for the answer, so the pid stays its own while this runs; were it
/// reused meanwhile (a peer that handed its connection on and exited), the fd
/// taken would still have to pass [`locate`], and so give nothing the peer
/// could not have named by its path.
pub fn take(pid: Option<u32>, fd: i32) -> Result<OwnedFd, PolicyError> {
    let failed = |errno| PolicyError::CallerFd { fd, pid, errno };
    let pid = pid
        .and_then(|p| i32::try_from(p).ok())
        .and_then(Pid::from_raw)
        .ok_or(failed(Errno::ESRCH))?;
    let errno = |e: rustix::io::Errno| Errno::from_raw(e.raw_os_error());
    let pidfd = pidfd_open(pid, PidfdFlags::empty()).map_err(|e| failed(errno(e)))?;
    pidfd_getfd(&pidfd, fd, PidfdGetfdFlags::empty()).map_err(|e| failed(errno(e)))
}

/// Checks the caller's `handle` below `roots` as any bind source: the path the
/// kernel gives for it (in the caller's mount namespace) is resolved beneath a
/// root without following any symlink, in the daemon's namespace, and must lead
/// to the same file (device and inode) as the handle. What is bound is that
/// checked handle; a file moved or replaced meanwhile is refused, never followed.
pub fn locate(handle: &OwnedFd, roots: &[PathBuf]) -> Result<CheckedSource, PolicyError> {
    let link =
        std::fs::read_link(fd_path(handle.as_fd())).map_err(|e| PolicyError::Unresolvable {
            what: "source",
            path: fd_path(handle.as_fd()),
            errno: Errno::from_raw(e.raw_os_error().unwrap_or(0)),
        })?;
    let path = without_deleted(link);
    let checked = resolve_source(&path, roots, Kind::Any)?;
    let same = |a: &OwnedFd, b: &OwnedFd| -> Result<bool, Errno> {
        let (a, b) = (fstat(a.as_fd())?, fstat(b.as_fd())?);
        Ok((a.st_dev, a.st_ino) == (b.st_dev, b.st_ino))
    };
    match same(handle, &checked.fd) {
        Ok(true) => Ok(checked),
        Ok(false) => Err(PolicyError::NotTheCallersFile { path }),
        Err(errno) => Err(PolicyError::Unresolvable {
            what: "source",
            path,
            errno,
        }),
    }
}

/// The kernel's name of an unlinked file ends in " (deleted)": what is left names
/// nothing, or another file, which [`locate`] then refuses.
fn without_deleted(link: PathBuf) -> PathBuf {
    let bytes = link.as_os_str().as_bytes();
    match bytes.strip_suffix(b" (deleted)") {
        Some(name) => PathBuf::from(OsString::from_vec(name.to_vec())),
        None => link,
    }
}

/// `/proc/PID/fd/N`, `/proc/self/fd/N` or `/dev/fd/N`: a source that names one of
/// a process's file descriptors, which only that process's namespaces can open.
pub fn names_a_descriptor(source: &Path) -> bool {
    let parts: Vec<&[u8]> = source
        .as_os_str()
        .as_bytes()
        .split(|&b| b == b'/')
        .collect();
    let number = |p: &[u8]| !p.is_empty() && p.iter().all(u8::is_ascii_digit);
    match parts.as_slice() {
        [b"", b"proc", pid, b"fd", n] => (number(pid) || *pid == b"self") && number(n),
        [b"", b"dev", b"fd", n] => number(n),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::fd::AsRawFd;

    #[test]
    fn descriptor_names() {
        for yes in ["/proc/123/fd/7", "/proc/self/fd/0", "/dev/fd/3"] {
            assert!(names_a_descriptor(Path::new(yes)), "{yes}");
        }
        for no in [
            "/proc/123/fd",
            "/proc/123/fd/7/x",
            "/proc/x1/fd/7",
            "/proc/123/fdinfo/7",
            "proc/123/fd/7",
            "/var/lib/kubelet/pods/p/volumes/v",
            "/proc/123/fd/",
        ] {
            assert!(!names_a_descriptor(Path::new(no)), "{no}");
        }
    }

    #[test]
    fn a_handle_below_the_roots_is_located_and_one_outside_refused() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("root");
        std::fs::create_dir_all(root.join("v/sub")).unwrap();
        let roots = [root.clone()];
        let inside = OwnedFd::from(std::fs::File::open(root.join("v/sub")).unwrap());
        let checked = locate(&inside, &roots).unwrap();
        assert_eq!(checked.path, root.join("v/sub"));
        let outside = OwnedFd::from(std::fs::File::open(dir.path()).unwrap());
        let err = locate(&outside, &roots).unwrap_err();
        assert!(matches!(err, PolicyError::OutsideRoots { .. }), "{err:?}");
        // Taken from this very process, as the daemon takes it from a peer.
        let taken = take(Some(std::process::id()), inside.as_raw_fd()).unwrap();
        assert_eq!(locate(&taken, &roots).unwrap().path, root.join("v/sub"));
        let err = take(Some(std::process::id()), 999_999).unwrap_err();
        assert!(
            matches!(
                err,
                PolicyError::CallerFd {
                    errno: Errno::EBADF,
                    ..
                }
            ),
            "{err:?}"
        );
    }

    #[test]
    fn a_file_replaced_under_its_name_is_not_the_callers() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().to_owned();
        let roots = [root.clone()];
        std::fs::create_dir_all(root.join("v/sub")).unwrap();
        let held = OwnedFd::from(std::fs::File::open(root.join("v/sub")).unwrap());
        // The held directory moves away; another takes its name.
        std::fs::rename(root.join("v/sub"), root.join("v/moved")).unwrap();
        std::fs::create_dir(root.join("v/sub")).unwrap();
        // It is found under its new name.
        assert_eq!(locate(&held, &roots).unwrap().path, root.join("v/moved"));
        // Deleted: its old name now holds another directory.
        std::fs::remove_dir(root.join("v/moved")).unwrap();
        std::fs::rename(root.join("v/sub"), root.join("v/moved")).unwrap();
        let err = locate(&held, &roots).unwrap_err();
        assert!(
            matches!(err, PolicyError::NotTheCallersFile { .. }),
            "{err:?}"
        );
    }
}
