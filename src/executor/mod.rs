//! Executors carry out mounts where the volume client software lives: the host
//! executor in the daemon's own namespace, VCS containers elsewhere. The daemon
//! routes each request to one and verifies the result from mountinfo.

mod agent_client;
mod docker_exec;
mod host;

use std::path::Path;
use std::time::Duration;

pub use agent_client::AgentClient;
pub use docker_exec::DockerExec;
pub use host::Host;

use crate::api::wire::{Executed, MountRequest};
pub use crate::mount::exec::{ExecError, UnmountFlags};
use crate::ns::mountinfo::ProcRoot;
use crate::ns::namespace::Namespace;

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
    /// Mounts; returns the tool's combined output.
    async fn mount(&self, req: &MountRequest, deadline: Duration) -> Result<String, ExecError>;
    /// Unmounts `target`, which holds a mount of type `fstype`.
    async fn unmount(
        &self,
        target: &Path,
        fstype: &str,
        flags: UnmountFlags,
        deadline: Duration,
    ) -> Result<String, ExecError>;
    /// Runs a VCS command that is not a mount (`sidemount run`, a command shim),
    /// with `stdin` as its input.
    async fn run(
        &self,
        command: &[String],
        _stdin: Option<&str>,
        _deadline: Duration,
    ) -> Result<Executed, ExecError> {
        Err(ExecError::Unavailable(format!(
            "{} runs no commands: `run` needs a volume-client container ({})",
            self.name(),
            command.first().map_or("", String::as_str)
        )))
    }
}

/// The namespace of the executor `name` (`None`: this process's), as verification
/// names it.
pub fn namespace_of(name: &str, proc: &ProcRoot, pid: Option<u32>) -> Namespace {
    Namespace::new(format!("executor ({name})"), proc.clone(), pid)
}
