//! What running a mount command or call comes to: its error, with the command, its
//! status and its output, and the flags of an unmount.

use std::fmt;
use std::path::PathBuf;
use std::process::Output;
use std::time::Duration;

use nix::errno::Errno;

use crate::api::client::ClientError;
use crate::api::wire::{ApiError, ErrorCode, Executed};
use crate::mount::syscall::SyscallError;

/// How a command ended: its exit code, or the signal that killed it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exit {
    Code(i32),
    Signal(i32),
}

impl fmt::Display for Exit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Exit::Code(code) => write!(f, "exit status: {code}"),
            Exit::Signal(signal) => write!(f, "signal: {signal}"),
        }
    }
}

impl From<std::process::ExitStatus> for Exit {
    fn from(status: std::process::ExitStatus) -> Self {
        use std::os::unix::process::ExitStatusExt;
        match (status.code(), status.signal()) {
            (Some(code), _) => Exit::Code(code),
            (None, Some(signal)) => Exit::Signal(signal),
            (None, None) => Exit::Code(-1),
        }
    }
}

/// Why a mount, unmount or command did not happen: each variant carries what names
/// the failing step (the command, the socket, the container) and its cause, with
/// the errno where there is one (see [`ExecError::errno`]).
#[derive(Debug, thiserror::Error)]
pub enum ExecError {
    #[error("{command} failed ({status})")]
    Failed {
        command: String,
        status: Exit,
        output: String,
    },
    #[error("{command} did not finish within {after:?} and was killed")]
    Timeout { command: String, after: Duration },
    #[error("cannot run {command}: {source}")]
    Spawn {
        command: String,
        source: std::io::Error,
    },
    /// A syscall that was the whole operation failed.
    #[error(transparent)]
    Syscall(#[from] SyscallError),
    /// A call on a checked target failed; `said` is what util-linux would have
    /// printed (callers such as mount-utils match its words).
    #[error("{call} on {}: {source}", target.display())]
    Call {
        call: &'static str,
        target: PathBuf,
        source: Box<SyscallError>,
        said: String,
    },
    /// The mount on an unmount's target is not the one recorded, or the one seen
    /// a moment before (swapped in or stacked since): it is not unmounted.
    #[error("the mount on {} is {found}, not {expected}: not unmounted", target.display())]
    Replaced {
        target: PathBuf,
        expected: Expected,
        found: String,
    },
    /// A bind or move reached an executor without a checked source.
    #[error("a bind or move onto {} without a checked source", target.display())]
    NoSource { target: PathBuf },
    /// A step taken in another mount namespace failed (a VCS container's, or
    /// one a copy of a mount reached): entering it, resolving the target there,
    /// or acting on that handle.
    #[error("{executor}: {step}: {source}")]
    InContainer {
        executor: String,
        step: &'static str,
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// The loop device for a checked loop file could not be set up.
    #[error(transparent)]
    Loop(#[from] crate::mount::loop_device::LoopError),
    /// The private staging directory mount(8) mounts on could not be prepared.
    #[error(transparent)]
    Staging(#[from] crate::mount::staging::StagingError),
    #[error("the {vcs} agent at {} cannot be reached: {source}", socket.display())]
    AgentUnreachable {
        vcs: String,
        socket: PathBuf,
        source: std::io::Error,
    },
    /// An agent sidemount does not run (provider external) does not answer.
    #[error("the {vcs} agent at {} does not answer ({source}); its container is not run by sidemount (provider external): check the VCS sidecar of the sidemount pod on this node", socket.display())]
    ExternalAgentSilent {
        vcs: String,
        socket: PathBuf,
        source: std::io::Error,
    },
    #[error("the {vcs} agent's pid is not visible here: the daemon needs the host's pid namespace (hostPID)")]
    AgentPidHidden { vcs: String },
    /// The agent's container could not be brought back (its provider's error).
    #[error("the {vcs} agent at {} cannot be reached, and its container cannot be brought back: {source}", socket.display())]
    Revive {
        vcs: String,
        socket: PathBuf,
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// The container engine failed the step `executor` asked of it.
    #[error("{executor}: {source}")]
    Engine {
        executor: String,
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    #[error("{executor}: container {container} is {state}")]
    NotRunning {
        executor: String,
        container: String,
        state: String,
    },
    #[error("{executor} runs no commands: `run` needs a volume-client container ({command})")]
    NoCommands { executor: String, command: String },
    /// The agent could not be asked (no HTTP answer).
    #[error("{0}")]
    Unreachable(ClientError),
    /// The agent or Docker answered with an error of its own.
    #[error("{context}: {error}")]
    Remote { context: String, error: ApiError },
}

impl ExecError {
    pub fn code(&self, failed: ErrorCode) -> ErrorCode {
        match self {
            ExecError::Failed { .. }
            | ExecError::Spawn { .. }
            | ExecError::Syscall(_)
            | ExecError::Call { .. }
            | ExecError::Replaced { .. }
            | ExecError::NoSource { .. }
            | ExecError::Loop(_)
            | ExecError::InContainer { .. } => failed,
            ExecError::Timeout { .. } => ErrorCode::Timeout,
            ExecError::AgentUnreachable { .. }
            | ExecError::ExternalAgentSilent { .. }
            | ExecError::AgentPidHidden { .. }
            | ExecError::Revive { .. }
            | ExecError::Engine { .. }
            | ExecError::NotRunning { .. }
            | ExecError::NoCommands { .. }
            | ExecError::Staging(_)
            | ExecError::Unreachable(_) => ErrorCode::ExecutorUnavailable,
            ExecError::Remote { error, .. } => match error.code {
                ErrorCode::MountFailed | ErrorCode::UnmountFailed => failed,
                code => code,
            },
        }
    }

    pub fn output(&self) -> &str {
        match self {
            ExecError::Failed { output, .. } => output,
            ExecError::Call { said, .. } => said,
            ExecError::Remote { error, .. } => &error.output,
            _ => "",
        }
    }

    /// The errno of the failing step, when it was a syscall or a system error.
    pub fn errno(&self) -> Option<Errno> {
        match self {
            ExecError::Syscall(e) => Some(e.errno()),
            ExecError::Call { source, .. } => Some(source.errno()),
            ExecError::Spawn { source, .. }
            | ExecError::AgentUnreachable { source, .. }
            | ExecError::ExternalAgentSilent { source, .. } => {
                source.raw_os_error().map(Errno::from_raw)
            }
            _ => None,
        }
    }
}

/// The mount an unmount must find on its target, or it unmounts nothing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Expected {
    /// Its id in the executor's namespace, as seen there a moment before.
    pub id: u32,
    /// Its unique id (statx `STATX_MNT_ID_UNIQUE`), from the record, where the
    /// kernel has them: unlike `id`, never that of another mount made since.
    pub unique: Option<u64>,
}

impl std::fmt::Display for Expected {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.unique {
            Some(unique) => write!(f, "the recorded mount (unique id {unique})"),
            None => write!(f, "mount {} seen there a moment ago", self.id),
        }
    }
}

/// How to unmount (umount(8)'s `-l` and `-f`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct UnmountFlags {
    pub lazy: bool,
    pub force: bool,
}

/// A command's end as an executor reports it: its output, or `Failed` with it.
pub fn finished(done: Executed) -> Result<String, ExecError> {
    if done.exit_code == 0 {
        Ok(done.output)
    } else {
        Err(ExecError::Failed {
            command: done.command,
            status: Exit::Code(done.exit_code),
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
