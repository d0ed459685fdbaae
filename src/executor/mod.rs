//! Executors carry out mounts where the volume client software lives: the host
//! executor in the daemon's own namespace, VCS containers elsewhere. The daemon
//! routes each request to one and verifies the result from mountinfo.

mod agent;
mod docker_exec;
mod helper;
mod host;
pub mod kernel_mount;

use std::path::Path;
use std::process::Output;
use std::time::Duration;

pub use agent::Agent;
pub use docker_exec::DockerExec;
pub use host::{mount_args, shown, unmount_args, Host};

use crate::mountinfo::ProcRoot;
use crate::propagation::Namespace;
use crate::wire::{ApiError, ErrorCode, Executed, MountRequest};

#[derive(Debug, thiserror::Error)]
pub enum ExecError {
    #[error("{command} failed ({status})")]
    Failed {
        command: String,
        status: String,
        output: String,
    },
    #[error("{command} did not finish within {after:?} and was killed")]
    Timeout { command: String, after: Duration },
    #[error("cannot run {command}: {source}")]
    Spawn {
        command: String,
        source: std::io::Error,
    },
    #[error("{0}")]
    Unavailable(String),
    /// The agent or Docker answered with an error of its own.
    #[error("{context}: {error}")]
    Remote { context: String, error: ApiError },
}

impl ExecError {
    pub fn code(&self, failed: ErrorCode) -> ErrorCode {
        match self {
            ExecError::Failed { .. } | ExecError::Spawn { .. } => failed,
            ExecError::Timeout { .. } => ErrorCode::Timeout,
            ExecError::Unavailable(_) => ErrorCode::ExecutorUnavailable,
            ExecError::Remote { error, .. } => match error.code {
                ErrorCode::MountFailed | ErrorCode::UnmountFailed => failed,
                code => code,
            },
        }
    }

    pub fn output(&self) -> &str {
        match self {
            ExecError::Failed { output, .. } => output,
            ExecError::Remote { error, .. } => &error.output,
            _ => "",
        }
    }
}

/// How to unmount (umount(8)'s `-l` and `-f`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct UnmountFlags {
    pub lazy: bool,
    pub force: bool,
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
    /// Runs a VCS command that is not a mount (`sidemount run`).
    async fn run(&self, command: &[String], _deadline: Duration) -> Result<Executed, ExecError> {
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

/// A command's end as an executor reports it: its output, or `Failed` with it.
pub fn finished(done: Executed) -> Result<String, ExecError> {
    if done.exit_code == 0 {
        Ok(done.output)
    } else {
        Err(ExecError::Failed {
            command: done.command,
            status: format!("exit status: {}", done.exit_code),
            output: done.output,
        })
    }
}

/// stdout then stderr, as one text.
pub fn combined(output: &Output) -> String {
    let mut text = String::from_utf8_lossy(&output.stdout).into_owned();
    text.push_str(&String::from_utf8_lossy(&output.stderr));
    text
}
