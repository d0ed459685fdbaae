//! `sidemount share`: kubelet's MakeRShared, which makes the kubelet root a mount
//! point of its own and `rshared`, so that mounts made below it reach every
//! namespace that binds it `rshared` or `rslave`.

use std::path::{Path, PathBuf};

use serde::Serialize;

use crate::mount::syscall::{MntFlags, MsFlags, Syscall, SyscallError};
use crate::ns::mountinfo::{MountTable, MountinfoError, ProcRoot, Propagation};

#[derive(Debug, thiserror::Error)]
pub enum ShareError {
    #[error(transparent)]
    Mountinfo(#[from] MountinfoError),
    #[error(transparent)]
    Syscall(#[from] SyscallError),
    #[error("{path} is not shared after mount(MS_SHARED|MS_REC): {propagation}")]
    NotShared {
        path: PathBuf,
        propagation: Propagation,
    },
    #[error("no mount holds {path} in this process's namespace after sharing it")]
    NoMount { path: PathBuf },
}

/// What `share` did and the peer group the path is in now.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Shared {
    pub path: PathBuf,
    pub peer_group: u32,
    /// The path was not a mount point and was bound onto itself first.
    pub bound: bool,
    /// It was already a shared mount point: nothing was changed.
    pub unchanged: bool,
}

/// kubelet's MakeRShared: makes `path` a mount point (a bind onto itself) when it is
/// not one, then `MS_SHARED|MS_REC`. Idempotent. `path` must be canonical.
pub fn share(sys: &dyn Syscall, proc: &ProcRoot, path: &Path) -> Result<Shared, ShareError> {
    let table = MountTable::read(proc, None)?;
    // 1. Already a shared mount point: nothing to do.
    if let Some(group) = table.by_target(path).and_then(|m| m.propagation.shared) {
        return Ok(Shared {
            path: path.to_owned(),
            peer_group: group,
            bound: false,
            unchanged: true,
        });
    }
    // 2. Not a mount point: bind it onto itself (with its submounts) so it has its
    //    own propagation setting.
    let bound = !table.is_mount_point(path);
    if bound {
        sys.mount(
            Some(path),
            path,
            None,
            MsFlags::MS_BIND | MsFlags::MS_REC,
            None,
        )?;
    }
    // 3. Make it and every mount below it shared; undo our bind if that fails.
    if let Err(e) = sys.mount(None, path, None, MsFlags::MS_SHARED | MsFlags::MS_REC, None) {
        if bound {
            let _ = sys.umount2(path, MntFlags::MNT_DETACH);
        }
        return Err(e.into());
    }
    // 4. Prove it from mountinfo.
    let table = MountTable::read(proc, None)?;
    let mount = table.by_target(path).ok_or_else(|| ShareError::NoMount {
        path: path.to_owned(),
    })?;
    let peer_group = mount.propagation.shared.ok_or(ShareError::NotShared {
        path: path.to_owned(),
        propagation: mount.propagation,
    })?;
    Ok(Shared {
        path: path.to_owned(),
        peer_group,
        bound,
        unchanged: false,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mount::syscall::fake::{Call, Recording};
    use crate::ns::mountinfo::fixture::{proc_with, PLAIN};

    #[test]
    fn share_binds_a_plain_directory_then_makes_it_rshared() {
        let (_d, proc) = proc_with(PLAIN);
        let sys = Recording::default();
        // The fake changes nothing, so the final proof must fail: that is the point
        // of proving from mountinfo.
        let err = share(&sys, &proc, Path::new("/var/lib/kubelet")).unwrap_err();
        assert!(matches!(err, ShareError::NoMount { .. }), "{err}");
        let kubelet = PathBuf::from("/var/lib/kubelet");
        assert_eq!(
            sys.calls(),
            vec![
                Call::Mount {
                    source: Some(kubelet.clone()),
                    target: kubelet.clone(),
                    fstype: None,
                    flags: MsFlags::MS_BIND | MsFlags::MS_REC,
                    data: None,
                },
                Call::Mount {
                    source: None,
                    target: kubelet,
                    fstype: None,
                    flags: MsFlags::MS_SHARED | MsFlags::MS_REC,
                    data: None,
                },
            ]
        );
    }

    #[test]
    fn share_of_a_private_mount_point_only_changes_propagation() {
        let (_d, proc) = proc_with(&format!(
            "{PLAIN}30 27 0:40 / /var/lib/kubelet rw - tmpfs tmpfs rw\n"
        ));
        let sys = Recording::default();
        let err = share(&sys, &proc, Path::new("/var/lib/kubelet")).unwrap_err();
        assert!(matches!(err, ShareError::NotShared { .. }), "{err}");
        assert_eq!(sys.calls().len(), 1);
    }

    #[test]
    fn share_of_a_shared_mount_point_does_nothing() {
        let (_d, proc) = proc_with(&format!(
            "{PLAIN}30 27 0:40 / /var/lib/kubelet rw shared:5 - tmpfs tmpfs rw\n"
        ));
        let sys = Recording::default();
        let done = share(&sys, &proc, Path::new("/var/lib/kubelet")).unwrap();
        assert_eq!((done.peer_group, done.unchanged), (5, true));
        assert!(sys.calls().is_empty());
    }

    #[test]
    fn share_undoes_its_bind_when_making_it_shared_fails() {
        let (_d, proc) = proc_with(PLAIN);
        let sys = Recording::failing(1, nix::Error::EPERM);
        let err = share(&sys, &proc, Path::new("/k")).unwrap_err();
        assert!(err.to_string().contains("EPERM"), "{err}");
        assert_eq!(
            sys.calls().last(),
            Some(&Call::Umount {
                target: "/k".into(),
                flags: MntFlags::MNT_DETACH
            })
        );
    }
}
