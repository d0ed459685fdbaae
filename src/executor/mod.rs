//! Executors carry out mounts where the volume client software lives: the host
//! executor in the daemon's own namespace, VCS containers elsewhere. The daemon
//! routes each request to one and verifies the result from mountinfo.

mod agent_client;
mod change;
mod copies;
mod docker_exec;
mod host;
mod plan;
mod step;

use std::os::fd::OwnedFd;
use std::time::Duration;

pub use crate::mount::staging::{Staging, StagingError};
pub use agent_client::AgentClient;
pub use copies::set_on_copy;
pub use docker_exec::DockerExec;
pub use host::{Host, Runner};
pub use plan::{changes, propagation_of};

use crate::api::wire::{Executed, MountRequest};
pub use crate::mount::exec::{ExecError, Expected, UnmountFlags};
use crate::mount::options::MountOptions;
use crate::ns::mountinfo::ProcRoot;
use crate::ns::namespace::Namespace;
use crate::policy::{CheckedMount, CheckedTarget};

/// What an executor made.
#[derive(Debug, Default)]
pub struct Made {
    /// The tool's combined output.
    pub output: String,
    /// The new mount's own fd, when the executor made it in the daemon's namespace:
    /// verification finds it by its id and an undo detaches exactly it, wherever it
    /// landed.
    pub mount: Option<OwnedFd>,
    /// The id of the mount an agent or a container made, in its own namespace.
    pub reported: Option<u32>,
    /// The new mount's fd in a container's namespace, where the executor made
    /// it: its undo detaches exactly it, from inside that namespace.
    pub held: Option<OwnedFd>,
}

impl Made {
    /// The unique id of the mount made, when it is held.
    pub fn id(&self) -> Option<u64> {
        use std::os::fd::AsFd;
        let fd = self.mount.as_ref()?;
        crate::ns::beneath::on_mount(fd.as_fd()).ok().map(|m| m.id)
    }
}

#[async_trait::async_trait]
pub trait Executor: Send + Sync {
    /// The name records and status show: "host", "vcs/nfs".
    fn name(&self) -> &str;
    /// Makes sure it can take a request (a VCS container that died is brought back).
    async fn ready(&self) -> Result<(), ExecError> {
        Ok(())
    }
    /// The namespace its mounts are made in, to verify them there.
    async fn namespace(&self) -> Result<Namespace, ExecError>;
    /// Mounts `req` with its `options` (parsed once, where the request entered)
    /// onto the checked target (and from the checked source), never by the
    /// request's names.
    async fn mount(
        &self,
        req: &MountRequest,
        options: &MountOptions,
        checked: &CheckedMount,
        deadline: Duration,
    ) -> Result<Made, ExecError>;
    /// Unmounts the checked target, which holds a mount of type `fstype`, when the
    /// mount there is `expected` (the id the daemon just saw there, in the executor's
    /// namespace, and the recorded unique id): a mount swapped in or stacked since,
    /// or put there behind the daemon's back, is not unmounted.
    async fn unmount(
        &self,
        target: CheckedTarget,
        expected: Option<Expected>,
        fstype: &str,
        flags: UnmountFlags,
        deadline: Duration,
    ) -> Result<String, ExecError>;
    /// Undoes what `made` holds by its own handle; false when it holds none and the
    /// target must be looked at instead.
    async fn undo(&self, _made: &Made) -> bool {
        false
    }
    /// Runs a VCS command that is not a mount (`sidemount run`, a command shim),
    /// with `stdin` as its input.
    async fn run(
        &self,
        command: &[String],
        _stdin: Option<&str>,
        _deadline: Duration,
    ) -> Result<Executed, ExecError> {
        Err(ExecError::NoCommands {
            executor: self.name().to_owned(),
            command: command.first().cloned().unwrap_or_default(),
        })
    }
}

/// The namespace of the executor `name` (`None`: this process's), as verification
/// names it.
pub fn namespace_of(name: &str, proc: &ProcRoot, pid: Option<u32>) -> Namespace {
    Namespace::new(format!("executor ({name})"), proc.clone(), pid)
}
