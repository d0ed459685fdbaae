//! Every mount-changing syscall sidemount makes, behind one trait, so that the
//! sequences that need root are unit-tested with a recording fake: mount(2) and
//! umount2(2), and the fd-based mount API (fsopen, fsconfig, fsmount, move_mount,
//! open_tree, mount_setattr) that lets a mount land on a checked handle instead of a
//! path that could be swapped after the check.
//!
//! Errors carry the call, its paths (an fd is named by what it points at) and the
//! errno, but never a filesystem option's value: those can be secrets.

use std::ffi::{CString, OsStr};
use std::os::fd::{AsRawFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

pub use nix::errno::Errno;
pub use nix::mount::{MntFlags, MsFlags};
pub use rustix::fs::{AtFlags, CWD};
pub use rustix::mount::{FsMountFlags, FsOpenFlags, MountAttrFlags, MoveMountFlags, OpenTreeFlags};

/// `AT_RECURSIVE` for mount_setattr(2) (open_tree(2) has it as
/// `OpenTreeFlags::AT_RECURSIVE`): apply to the whole subtree.
pub const AT_RECURSIVE: AtFlags = AtFlags::from_bits_retain(0x8000);

/// `struct mount_attr` of mount_setattr(2) (`MOUNT_ATTR_SIZE_VER0`): which
/// `MOUNT_ATTR_*` to set and clear, and a propagation type (`MS_SHARED`,
/// `MS_SLAVE`, `MS_PRIVATE`, `MS_UNBINDABLE`, or 0 to leave it).
#[repr(C)]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct MountAttr {
    pub attr_set: u64,
    pub attr_clr: u64,
    pub propagation: u64,
    pub userns_fd: u64,
}

impl MountAttr {
    /// Sets `set` and clears `clear`; the propagation is left as it is.
    pub fn flags(set: MountAttrFlags, clear: MountAttrFlags) -> Self {
        Self {
            attr_set: set.bits().into(),
            attr_clr: clear.bits().into(),
            ..Self::default()
        }
    }

    /// Changes only the propagation type (one of `MS_SHARED`, `MS_SLAVE`,
    /// `MS_PRIVATE`, `MS_UNBINDABLE`).
    pub fn propagation(kind: MsFlags) -> Self {
        Self {
            propagation: kind.bits(),
            ..Self::default()
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum SyscallError {
    #[error("mount({from:?}, {target}, {fstype:?}, {flags:?}) failed: {errno}")]
    Mount {
        from: Option<PathBuf>,
        target: PathBuf,
        fstype: Option<String>,
        flags: MsFlags,
        errno: Errno,
    },
    #[error("umount2({target}, {flags:?}) failed: {errno}")]
    Umount {
        target: PathBuf,
        flags: MntFlags,
        errno: Errno,
    },
    #[error("fsopen({fstype}) failed: {errno}")]
    Fsopen { fstype: String, errno: Errno },
    /// `key` is `None` for the create command; the value is never kept.
    #[error("fsconfig({command} {}) of {fs} failed: {errno}", key.as_deref().unwrap_or(""))]
    Fsconfig {
        fs: String,
        command: &'static str,
        key: Option<String>,
        errno: Errno,
    },
    #[error("fsmount({fs}, {attr:?}) failed: {errno}")]
    Fsmount {
        fs: String,
        attr: MountAttrFlags,
        errno: Errno,
    },
    #[error("move_mount({from} -> {to}, {flags:?}) failed: {errno}")]
    MoveMount {
        from: String,
        to: String,
        flags: MoveMountFlags,
        errno: Errno,
    },
    #[error("open_tree({path}, {flags:?}) failed: {errno}")]
    OpenTree {
        path: String,
        flags: OpenTreeFlags,
        errno: Errno,
    },
    #[error("mount_setattr({path}, {attr:?}) failed: {errno}")]
    MountSetattr {
        path: String,
        attr: MountAttr,
        errno: Errno,
    },
}

impl SyscallError {
    /// The errno the kernel answered.
    pub fn errno(&self) -> Errno {
        match self {
            Self::Mount { errno, .. }
            | Self::Umount { errno, .. }
            | Self::Fsopen { errno, .. }
            | Self::Fsconfig { errno, .. }
            | Self::Fsmount { errno, .. }
            | Self::MoveMount { errno, .. }
            | Self::OpenTree { errno, .. }
            | Self::MountSetattr { errno, .. } => *errno,
        }
    }
}

/// The mount-changing syscalls. `Send + Sync` so a daemon can share one.
pub trait Syscall: Send + Sync {
    /// mount(2): a new filesystem (`fstype` and `data`), or with no type a bind,
    /// move, remount or propagation change.
    fn mount(
        &self,
        source: Option<&Path>,
        target: &Path,
        fstype: Option<&str>,
        flags: MsFlags,
        data: Option<&OsStr>,
    ) -> Result<(), SyscallError>;
    /// umount2(2); `UMOUNT_NOFOLLOW` keeps a symlink at `target` from redirecting it.
    fn umount2(&self, target: &Path, flags: MntFlags) -> Result<(), SyscallError>;
    /// fsopen(2): a filesystem context of `fstype` to configure.
    fn fsopen(&self, fstype: &str, flags: FsOpenFlags) -> Result<OwnedFd, SyscallError>;
    /// fsconfig(FSCONFIG_SET_STRING): one `key=value` option.
    fn fsconfig_set_string(
        &self,
        fs: BorrowedFd<'_>,
        key: &str,
        value: &OsStr,
    ) -> Result<(), SyscallError>;
    /// fsconfig(FSCONFIG_SET_FLAG): one option with no value.
    fn fsconfig_set_flag(&self, fs: BorrowedFd<'_>, key: &str) -> Result<(), SyscallError>;
    /// fsconfig(FSCONFIG_CMD_CREATE): makes the superblock.
    fn fsconfig_create(&self, fs: BorrowedFd<'_>) -> Result<(), SyscallError>;
    /// fsmount(2): a detached mount of the created superblock.
    fn fsmount(
        &self,
        fs: BorrowedFd<'_>,
        flags: FsMountFlags,
        attr: MountAttrFlags,
    ) -> Result<OwnedFd, SyscallError>;
    /// move_mount(2): `from_path` relative to `from` (empty with
    /// `MOVE_MOUNT_F_EMPTY_PATH`: `from` itself) onto `to_path` relative to `to`
    /// (empty with `MOVE_MOUNT_T_EMPTY_PATH`: the directory `to` is open on).
    fn move_mount(
        &self,
        from: BorrowedFd<'_>,
        from_path: &Path,
        to: BorrowedFd<'_>,
        to_path: &Path,
        flags: MoveMountFlags,
    ) -> Result<(), SyscallError>;
    /// open_tree(2): with `OPEN_TREE_CLONE` (and `AT_RECURSIVE`) a detached copy
    /// of the mount (tree) at `path` relative to `dir`, as a bind would make.
    fn open_tree(
        &self,
        dir: BorrowedFd<'_>,
        path: &Path,
        flags: OpenTreeFlags,
    ) -> Result<OwnedFd, SyscallError>;
    /// mount_setattr(2): changes the attributes or propagation of the mount at
    /// `path` relative to `dir` (`AT_EMPTY_PATH`: `dir` itself; `AT_RECURSIVE`).
    fn mount_setattr(
        &self,
        dir: BorrowedFd<'_>,
        path: &Path,
        flags: AtFlags,
        attr: &MountAttr,
    ) -> Result<(), SyscallError>;
}

/// What an fd and a path relative to it name, for messages: the fd's path as
/// /proc/self/fd shows it, joined with `path`.
pub fn describe(fd: BorrowedFd<'_>, path: &Path) -> String {
    let raw = fd.as_raw_fd();
    let base = if raw == CWD.as_raw_fd() {
        PathBuf::from(".")
    } else {
        std::fs::read_link(format!("/proc/self/fd/{raw}"))
            .unwrap_or_else(|_| PathBuf::from(format!("fd {raw}")))
    };
    if path.as_os_str().is_empty() {
        base.display().to_string()
    } else {
        base.join(path).display().to_string()
    }
}

fn errno(e: rustix::io::Errno) -> Errno {
    Errno::from_raw(e.raw_os_error())
}

/// The real syscalls.
pub struct Linux;

impl Syscall for Linux {
    fn mount(
        &self,
        source: Option<&Path>,
        target: &Path,
        fstype: Option<&str>,
        flags: MsFlags,
        data: Option<&OsStr>,
    ) -> Result<(), SyscallError> {
        nix::mount::mount(source, target, fstype, flags, data).map_err(|errno| {
            SyscallError::Mount {
                from: source.map(Path::to_owned),
                target: target.to_owned(),
                fstype: fstype.map(str::to_owned),
                flags,
                errno,
            }
        })
    }

    fn umount2(&self, target: &Path, flags: MntFlags) -> Result<(), SyscallError> {
        nix::mount::umount2(target, flags).map_err(|errno| SyscallError::Umount {
            target: target.to_owned(),
            flags,
            errno,
        })
    }

    fn fsopen(&self, fstype: &str, flags: FsOpenFlags) -> Result<OwnedFd, SyscallError> {
        rustix::mount::fsopen(fstype, flags).map_err(|e| SyscallError::Fsopen {
            fstype: fstype.to_owned(),
            errno: errno(e),
        })
    }

    fn fsconfig_set_string(
        &self,
        fs: BorrowedFd<'_>,
        key: &str,
        value: &OsStr,
    ) -> Result<(), SyscallError> {
        rustix::mount::fsconfig_set_string(fs, key, value).map_err(|e| SyscallError::Fsconfig {
            fs: describe(fs, Path::new("")),
            command: "set-string",
            key: Some(key.to_owned()),
            errno: errno(e),
        })
    }

    fn fsconfig_set_flag(&self, fs: BorrowedFd<'_>, key: &str) -> Result<(), SyscallError> {
        rustix::mount::fsconfig_set_flag(fs, key).map_err(|e| SyscallError::Fsconfig {
            fs: describe(fs, Path::new("")),
            command: "set-flag",
            key: Some(key.to_owned()),
            errno: errno(e),
        })
    }

    fn fsconfig_create(&self, fs: BorrowedFd<'_>) -> Result<(), SyscallError> {
        rustix::mount::fsconfig_create(fs).map_err(|e| SyscallError::Fsconfig {
            fs: describe(fs, Path::new("")),
            command: "create",
            key: None,
            errno: errno(e),
        })
    }

    fn fsmount(
        &self,
        fs: BorrowedFd<'_>,
        flags: FsMountFlags,
        attr: MountAttrFlags,
    ) -> Result<OwnedFd, SyscallError> {
        rustix::mount::fsmount(fs, flags, attr).map_err(|e| SyscallError::Fsmount {
            fs: describe(fs, Path::new("")),
            attr,
            errno: errno(e),
        })
    }

    fn move_mount(
        &self,
        from: BorrowedFd<'_>,
        from_path: &Path,
        to: BorrowedFd<'_>,
        to_path: &Path,
        flags: MoveMountFlags,
    ) -> Result<(), SyscallError> {
        rustix::mount::move_mount(from, from_path, to, to_path, flags).map_err(|e| {
            SyscallError::MoveMount {
                from: describe(from, from_path),
                to: describe(to, to_path),
                flags,
                errno: errno(e),
            }
        })
    }

    fn open_tree(
        &self,
        dir: BorrowedFd<'_>,
        path: &Path,
        flags: OpenTreeFlags,
    ) -> Result<OwnedFd, SyscallError> {
        rustix::mount::open_tree(dir, path, flags).map_err(|e| SyscallError::OpenTree {
            path: describe(dir, path),
            flags,
            errno: errno(e),
        })
    }

    fn mount_setattr(
        &self,
        dir: BorrowedFd<'_>,
        path: &Path,
        flags: AtFlags,
        attr: &MountAttr,
    ) -> Result<(), SyscallError> {
        let failed = |errno| SyscallError::MountSetattr {
            path: describe(dir, path),
            attr: *attr,
            errno,
        };
        let c_path =
            CString::new(path.as_os_str().as_bytes()).map_err(|_| failed(Errno::EINVAL))?;
        // SAFETY: mount_setattr(2) reads a NUL-terminated path that lives across the
        // call and a `struct mount_attr` of the size passed, which `MountAttr` is
        // (`#[repr(C)]`, four u64: MOUNT_ATTR_SIZE_VER0); `dir` is a valid fd or
        // AT_FDCWD for the duration of the call.
        let rc = unsafe {
            libc::syscall(
                libc::SYS_mount_setattr,
                dir.as_raw_fd(),
                c_path.as_ptr(),
                flags.bits(),
                attr as *const MountAttr,
                std::mem::size_of::<MountAttr>(),
            )
        };
        if rc == 0 {
            Ok(())
        } else {
            Err(failed(Errno::last()))
        }
    }
}

#[cfg(test)]
pub mod fake {
    //! A `Syscall` that records each call with its arguments and fails the ones it
    //! is told to. The fds it hands out are memfds named for the call that made
    //! them (`fsopen#1 tmpfs`, `fsmount#2`, `open_tree#3`), so a recorded fd
    //! argument reads as the call it came from, and any other fd (a checked target)
    //! as the path it is open on.
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
            self.record(call).map_err(|errno| SyscallError::Fsconfig {
                fs,
                command: "set-string",
                key: Some(key.to_owned()),
                errno,
            })
        }

        fn fsconfig_set_flag(&self, fs: BorrowedFd<'_>, key: &str) -> Result<(), SyscallError> {
            let fs = name(fs, Path::new(""));
            let call = Call::FsconfigFlag {
                fs: fs.clone(),
                key: key.to_owned(),
            };
            self.record(call).map_err(|errno| SyscallError::Fsconfig {
                fs,
                command: "set-flag",
                key: Some(key.to_owned()),
                errno,
            })
        }

        fn fsconfig_create(&self, fs: BorrowedFd<'_>) -> Result<(), SyscallError> {
            let fs = name(fs, Path::new(""));
            let call = Call::FsconfigCreate { fs: fs.clone() };
            self.record(call).map_err(|errno| SyscallError::Fsconfig {
                fs,
                command: "create",
                key: None,
                errno,
            })
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
        let t_empty =
            MoveMountFlags::MOVE_MOUNT_F_EMPTY_PATH | MoveMountFlags::MOVE_MOUNT_T_EMPTY_PATH;
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
}
