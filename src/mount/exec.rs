//! What running a mount command or call comes to: its error, with the command, its
//! status and its output, and the flags of an unmount.

use std::process::Output;
use std::time::Duration;

use crate::api::wire::{ApiError, ErrorCode, Executed};

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
