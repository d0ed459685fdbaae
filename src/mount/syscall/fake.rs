//! A `Syscall` that records each call with its arguments and fails the ones it
//! is told to. The fds it hands out are memfds named for the call that made
//! them (`fsopen#1 tmpfs`, `fsmount#2`, `open_tree#3`), so a recorded fd
//! argument reads as the call it came from, and any other fd (a checked target)
//! as the path it is open on.

use std::ffi::OsStr;
use std::os::fd::{BorrowedFd, OwnedFd};
use std::path::{Path, PathBuf};

use super::*;
use std::sync::Mutex;

const PREFIX: &str = "sidemount-fake ";

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Call {
    Mount {
        source: Option<PathBuf>,
        target: PathBuf,
        fstype: Option<String>,
        flags: MsFlags,
        data: Option<String>,
    },
    Umount {
        target: PathBuf,
        flags: MntFlags,
    },
    Fsopen {
        fstype: String,
        flags: FsOpenFlags,
    },
    FsconfigString {
        fs: String,
        key: String,
        value: String,
    },
    FsconfigFd {
        fs: String,
        key: String,
        file: String,
    },
    FsconfigFlag {
        fs: String,
        key: String,
    },
    FsconfigCreate {
        fs: String,
    },
    Fsmount {
        fs: String,
        flags: FsMountFlags,
        attr: MountAttrFlags,
    },
    MoveMount {
        from: String,
        to: String,
        flags: MoveMountFlags,
    },
    OpenTree {
        path: String,
        flags: OpenTreeFlags,
    },
    MountSetattr {
        path: String,
        flags: AtFlags,
        attr: MountAttr,
    },
}

#[derive(Default)]
pub struct Recording {
    calls: Mutex<Vec<Call>>,
    /// Fail the call with this index (0-based), with `errno` (EPERM if unset).
    pub fail_at: Option<usize>,
    pub errno: Option<Errno>,
}

impl Recording {
    /// A fake whose call number `at` (0-based) fails with `errno`.
    pub fn failing(at: usize, errno: Errno) -> Self {
        Self {
            fail_at: Some(at),
            errno: Some(errno),
            ..Self::default()
        }
    }

    /// The calls so far, in order.
    pub fn calls(&self) -> Vec<Call> {
        self.calls.lock().unwrap().clone()
    }

    fn record(&self, call: Call) -> Result<(), Errno> {
        let mut calls = self.calls.lock().unwrap();
        calls.push(call);
        match self.fail_at {
            Some(at) if at + 1 == calls.len() => Err(self.errno.unwrap_or(Errno::EPERM)),
            _ => Ok(()),
        }
    }

    /// A new fd named for the call that made it.
    fn fd(&self, what: &str) -> OwnedFd {
        let n = self.calls.lock().unwrap().len();
        let name = format!("{PREFIX}{what}#{n}");
        rustix::fs::memfd_create(name, rustix::fs::MemfdFlags::CLOEXEC).expect("memfd")
    }
}

/// A fake fd's name, or what another fd and path name.
fn name(fd: BorrowedFd<'_>, path: &Path) -> String {
    let shown = describe(fd, path);
    match shown
        .strip_prefix("/memfd:")
        .and_then(|s| s.strip_prefix(PREFIX))
    {
        Some(rest) => rest.trim_end_matches(" (deleted)").to_owned(),
        None => shown,
    }
}

fn text(s: &OsStr) -> String {
    s.to_string_lossy().into_owned()
}

impl Syscall for Recording {
    fn mount(
        &self,
        source: Option<&Path>,
        target: &Path,
        fstype: Option<&str>,
        flags: MsFlags,
        data: Option<&OsStr>,
    ) -> Result<(), SyscallError> {
        let call = Call::Mount {
            source: source.map(Path::to_owned),
            target: target.to_owned(),
            fstype: fstype.map(str::to_owned),
            flags,
            data: data.map(text),
        };
        self.record(call).map_err(|errno| SyscallError::Mount {
            from: source.map(Path::to_owned),
            target: target.to_owned(),
            fstype: fstype.map(str::to_owned),
            flags,
            errno,
        })
    }

    fn umount2(&self, target: &Path, flags: MntFlags) -> Result<(), SyscallError> {
        let call = Call::Umount {
            target: target.to_owned(),
            flags,
        };
        self.record(call).map_err(|errno| SyscallError::Umount {
            target: target.to_owned(),
            flags,
            errno,
        })
    }

    fn fsopen(&self, fstype: &str, flags: FsOpenFlags) -> Result<OwnedFd, SyscallError> {
        let call = Call::Fsopen {
            fstype: fstype.to_owned(),
            flags,
        };
        self.record(call).map_err(|errno| SyscallError::Fsopen {
            fstype: fstype.to_owned(),
            errno,
        })?;
        Ok(self.fd(&format!("fsopen {fstype}")))
    }

    fn fsconfig_set_string(
        &self,
        fs: BorrowedFd<'_>,
        key: &str,
        value: &OsStr,
    ) -> Result<(), SyscallError> {
        let fs = name(fs, Path::new(""));
        let call = Call::FsconfigString {
            fs: fs.clone(),
            key: key.to_owned(),
            value: text(value),
        };
        self.record(call)
            .map_err(|errno| SyscallError::fsconfig(fs, "set-string", Some(key), errno))
    }

    fn fsconfig_set_fd(
        &self,
        fs: BorrowedFd<'_>,
        key: &str,
        file: BorrowedFd<'_>,
    ) -> Result<(), SyscallError> {
        let fs = name(fs, Path::new(""));
        let call = Call::FsconfigFd {
            fs: fs.clone(),
            key: key.to_owned(),
            file: name(file, Path::new("")),
        };
        self.record(call)
            .map_err(|errno| SyscallError::fsconfig(fs, "set-fd", Some(key), errno))
    }

    fn fsconfig_set_flag(&self, fs: BorrowedFd<'_>, key: &str) -> Result<(), SyscallError> {
        let fs = name(fs, Path::new(""));
        let call = Call::FsconfigFlag {
            fs: fs.clone(),
            key: key.to_owned(),
        };
        self.record(call)
            .map_err(|errno| SyscallError::fsconfig(fs, "set-flag", Some(key), errno))
    }

    fn fsconfig_create(&self, fs: BorrowedFd<'_>) -> Result<(), SyscallError> {
        let fs = name(fs, Path::new(""));
        let call = Call::FsconfigCreate { fs: fs.clone() };
        self.record(call)
            .map_err(|errno| SyscallError::fsconfig(fs, "create", None, errno))
    }

    fn fsmount(
        &self,
        fs: BorrowedFd<'_>,
        flags: FsMountFlags,
        attr: MountAttrFlags,
    ) -> Result<OwnedFd, SyscallError> {
        let fs = name(fs, Path::new(""));
        let call = Call::Fsmount {
            fs: fs.clone(),
            flags,
            attr,
        };
        self.record(call)
            .map_err(|errno| SyscallError::Fsmount { fs, attr, errno })?;
        Ok(self.fd("fsmount"))
    }

    fn move_mount(
        &self,
        from: BorrowedFd<'_>,
        from_path: &Path,
        to: BorrowedFd<'_>,
        to_path: &Path,
        flags: MoveMountFlags,
    ) -> Result<(), SyscallError> {
        let (from, to) = (name(from, from_path), name(to, to_path));
        let call = Call::MoveMount {
            from: from.clone(),
            to: to.clone(),
            flags,
        };
        self.record(call).map_err(|errno| SyscallError::MoveMount {
            from,
            to,
            flags,
            errno,
        })
    }

    fn open_tree(
        &self,
        dir: BorrowedFd<'_>,
        path: &Path,
        flags: OpenTreeFlags,
    ) -> Result<OwnedFd, SyscallError> {
        let path = name(dir, path);
        let call = Call::OpenTree {
            path: path.clone(),
            flags,
        };
        self.record(call)
            .map_err(|errno| SyscallError::OpenTree { path, flags, errno })?;
        Ok(self.fd("open_tree"))
    }

    fn mount_setattr(
        &self,
        dir: BorrowedFd<'_>,
        path: &Path,
        flags: AtFlags,
        attr: &MountAttr,
    ) -> Result<(), SyscallError> {
        let path = name(dir, path);
        let call = Call::MountSetattr {
            path: path.clone(),
            flags,
            attr: *attr,
        };
        self.record(call)
            .map_err(|errno| SyscallError::MountSetattr {
                path,
                attr: *attr,
                errno,
            })
    }
}

#[test]
fn records_the_new_mount_api_with_fds_named_for_their_calls() {
    use std::os::fd::AsFd;
    let sys = Recording::default();
    let dir = tempfile::tempdir().unwrap();
    let target = std::fs::File::open(dir.path()).unwrap();
    let fs = sys.fsopen("tmpfs", FsOpenFlags::FSOPEN_CLOEXEC).unwrap();
    sys.fsconfig_set_string(fs.as_fd(), "size", OsStr::new("2m"))
        .unwrap();
    sys.fsconfig_set_flag(fs.as_fd(), "ro").unwrap();
    sys.fsconfig_create(fs.as_fd()).unwrap();
    let mnt = sys
        .fsmount(
            fs.as_fd(),
            FsMountFlags::FSMOUNT_CLOEXEC,
            MountAttrFlags::MOUNT_ATTR_NOSUID,
        )
        .unwrap();
    let t_empty = MoveMountFlags::MOVE_MOUNT_F_EMPTY_PATH | MoveMountFlags::MOVE_MOUNT_T_EMPTY_PATH;
    sys.move_mount(
        mnt.as_fd(),
        Path::new(""),
        target.as_fd(),
        Path::new(""),
        t_empty,
    )
    .unwrap();
    let tree = sys
        .open_tree(
            CWD,
            dir.path(),
            OpenTreeFlags::OPEN_TREE_CLONE | OpenTreeFlags::AT_RECURSIVE,
        )
        .unwrap();
    let ro = MountAttr::flags(MountAttrFlags::MOUNT_ATTR_RDONLY, MountAttrFlags::empty());
    sys.mount_setattr(
        tree.as_fd(),
        Path::new(""),
        AtFlags::EMPTY_PATH | AT_RECURSIVE,
        &ro,
    )
    .unwrap();
    let path = dir.path().display().to_string();
    assert_eq!(
        sys.calls(),
        vec![
            Call::Fsopen {
                fstype: "tmpfs".into(),
                flags: FsOpenFlags::FSOPEN_CLOEXEC
            },
            Call::FsconfigString {
                fs: "fsopen tmpfs#1".into(),
                key: "size".into(),
                value: "2m".into()
            },
            Call::FsconfigFlag {
                fs: "fsopen tmpfs#1".into(),
                key: "ro".into()
            },
            Call::FsconfigCreate {
                fs: "fsopen tmpfs#1".into()
            },
            Call::Fsmount {
                fs: "fsopen tmpfs#1".into(),
                flags: FsMountFlags::FSMOUNT_CLOEXEC,
                attr: MountAttrFlags::MOUNT_ATTR_NOSUID
            },
            Call::MoveMount {
                from: "fsmount#5".into(),
                to: path.clone(),
                flags: t_empty
            },
            Call::OpenTree {
                path,
                flags: OpenTreeFlags::OPEN_TREE_CLONE | OpenTreeFlags::AT_RECURSIVE
            },
            Call::MountSetattr {
                path: "open_tree#7".into(),
                flags: AtFlags::EMPTY_PATH | AT_RECURSIVE,
                attr: ro
            },
        ]
    );
}

#[test]
fn a_failing_call_names_its_step_and_errno_but_no_value() {
    use std::os::fd::AsFd;
    let sys = Recording::failing(1, Errno::EINVAL);
    let fs = sys.fsopen("cifs", FsOpenFlags::FSOPEN_CLOEXEC).unwrap();
    let err = sys
        .fsconfig_set_string(fs.as_fd(), "password", OsStr::new("hunter2"))
        .unwrap_err();
    assert_eq!(err.errno(), Errno::EINVAL);
    let shown = err.to_string();
    assert!(
        shown.contains("set-string password") && shown.contains("EINVAL"),
        "{shown}"
    );
    assert!(!shown.contains("hunter2"), "{shown}");
}
