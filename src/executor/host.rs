//! The host executor: mounts in the daemon's own namespace, for kernel filesystems
//! and for clients installed where the daemon runs, by mount(2) when one call does
//! it (see `kernel_mount`), else by util-linux mount(8)/umount(8).

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use super::{namespace_of, ExecError, Executor, UnmountFlags};
use crate::api::wire::MountRequest;
use crate::mount::kernel;
use crate::mount::options::MountOptions;
use crate::mount::syscall::{Linux, Syscall};
use crate::mount::util_linux::{mount_args, run, unmount_args};
use crate::ns::mountinfo::ProcRoot;
use crate::ns::namespace::Namespace;

pub struct Host {
    proc: ProcRoot,
    sys: Arc<dyn Syscall>,
}

impl Host {
    pub fn new(proc: ProcRoot) -> Self {
        Host {
            proc,
            sys: Arc::new(Linux),
        }
    }
}

#[async_trait::async_trait]
impl Executor for Host {
    fn name(&self) -> &str {
        "host"
    }

    async fn namespace(&self) -> Result<Namespace, ExecError> {
        Ok(namespace_of(self.name(), &self.proc, None))
    }

    async fn mount(
        &self,
        req: &MountRequest,
        options: &MountOptions,
        deadline: Duration,
    ) -> Result<String, ExecError> {
        if kernel::mount(&self.sys, req, options, deadline).await? {
            return Ok(String::new());
        }
        run("mount", &mount_args(req, options), deadline).await
    }

    async fn unmount(
        &self,
        target: &Path,
        fstype: &str,
        flags: UnmountFlags,
        deadline: Duration,
    ) -> Result<String, ExecError> {
        if kernel::unmount(&self.sys, target, fstype, flags, deadline).await? {
            return Ok(String::new());
        }
        run("umount", &unmount_args(target, fstype, flags), deadline).await
    }
}
