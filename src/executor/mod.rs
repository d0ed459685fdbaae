//! Executors carry out mounts where the volume client software lives: the host
//! executor in the daemon's own namespace, VCS containers elsewhere. The daemon
//! routes each request to one and verifies the result from mountinfo.

mod host;

use std::path::Path;
use std::process::Output;
use std::time::Duration;

pub use host::Host;

use crate::propagation::Namespace;
use crate::wire::{ErrorCode, MountRequest};

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
}

impl ExecError {
    pub fn code(&self, failed: ErrorCode) -> ErrorCode {
        match self {
            ExecError::Failed { .. } | ExecError::Spawn { .. } => failed,
            ExecError::Timeout { .. } => ErrorCode::Timeout,
            ExecError::Unavailable(_) => ErrorCode::ExecutorUnavailable,
        }
    }

    pub fn output(&self) -> &str {
        match self {
            ExecError::Failed { output, .. } => output,
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
    /// The namespace its mounts are made in, to verify them there.
    fn namespace(&self) -> Namespace;
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
}

/// stdout then stderr, as one text.
pub fn combined(output: &Output) -> String {
    let mut text = String::from_utf8_lossy(&output.stdout).into_owned();
    text.push_str(&String::from_utf8_lossy(&output.stderr));
    text
}
