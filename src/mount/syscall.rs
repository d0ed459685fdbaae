//! The few mount syscalls sidemount makes itself, behind a trait, so that the
//! sequences that need root are unit-tested with a recording fake.

use std::path::{Path, PathBuf};

pub use nix::mount::{MntFlags, MsFlags};

#[derive(Debug, thiserror::Error)]
pub enum SyscallError {
    #[error("mount({from:?}, {target}, {flags:?}) failed: {errno}")]
    Mount {
        from: Option<PathBuf>,
        target: PathBuf,
        flags: MsFlags,
        errno: nix::Error,
    },
    #[error("umount2({target}, {flags:?}) failed: {errno}")]
    Umount {
        target: PathBuf,
        flags: MntFlags,
        errno: nix::Error,
    },
}

pub trait Syscall {
    /// mount(2) with no filesystem type and no data: binds and propagation changes.
    fn mount(
        &self,
        source: Option<&Path>,
        target: &Path,
        flags: MsFlags,
    ) -> Result<(), SyscallError>;
    /// umount2(2).
    fn umount(&self, target: &Path, flags: MntFlags) -> Result<(), SyscallError>;
}

/// The real syscalls.
pub struct Linux;

impl Syscall for Linux {
    fn mount(
        &self,
        source: Option<&Path>,
        target: &Path,
        flags: MsFlags,
    ) -> Result<(), SyscallError> {
        nix::mount::mount(source, target, None::<&str>, flags, None::<&str>).map_err(|errno| {
            SyscallError::Mount {
                from: source.map(Path::to_owned),
                target: target.to_owned(),
                flags,
                errno,
            }
        })
    }

    fn umount(&self, target: &Path, flags: MntFlags) -> Result<(), SyscallError> {
        nix::mount::umount2(target, flags).map_err(|errno| SyscallError::Umount {
            target: target.to_owned(),
            flags,
            errno,
        })
    }
}

#[cfg(test)]
pub mod fake {
    //! A `Syscall` that records each call and fails the ones it is told to.
    use super::*;
    use std::cell::RefCell;

    #[derive(Debug, Clone, PartialEq, Eq)]
    pub enum Call {
        Mount {
            source: Option<PathBuf>,
            target: PathBuf,
            flags: MsFlags,
        },
        Umount {
            target: PathBuf,
            flags: MntFlags,
        },
    }

    #[derive(Default)]
    pub struct Recording {
        pub calls: RefCell<Vec<Call>>,
        /// Fail the call with this index (0-based) with EPERM.
        pub fail_at: Option<usize>,
    }

    impl Recording {
        fn record(&self, call: Call) -> Result<(), nix::Error> {
            let mut calls = self.calls.borrow_mut();
            calls.push(call);
            match self.fail_at {
                Some(at) if at + 1 == calls.len() => Err(nix::Error::EPERM),
                _ => Ok(()),
            }
        }
    }

    impl Syscall for Recording {
        fn mount(
            &self,
            source: Option<&Path>,
            target: &Path,
            flags: MsFlags,
        ) -> Result<(), SyscallError> {
            let call = Call::Mount {
                source: source.map(Path::to_owned),
                target: target.to_owned(),
                flags,
            };
            self.record(call).map_err(|errno| SyscallError::Mount {
                from: source.map(Path::to_owned),
                target: target.to_owned(),
                flags,
                errno,
            })
        }

        fn umount(&self, target: &Path, flags: MntFlags) -> Result<(), SyscallError> {
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
    }
}
