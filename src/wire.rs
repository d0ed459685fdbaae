//! The versioned HTTP/JSON API spoken over the daemon's unix socket: requests,
//! answers and errors, shared by the daemon, the mount helper and the agent.

use std::fmt;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

pub const MOUNTS: &str = "/v1/mounts";
pub const UNMOUNTS: &str = "/v1/unmounts";
pub const STATUS: &str = "/v1/status";
pub const RUN: &str = "/v1/run";

/// Largest request body the daemon reads.
pub const MAX_BODY: usize = 64 * 1024;

/// Mount `source` on `target` (mount(8)'s `-t fstype -o options source target`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MountRequest {
    pub source: String,
    pub target: PathBuf,
    /// Empty: let mount(8) decide (bind mounts).
    #[serde(default)]
    pub fstype: String,
    #[serde(default)]
    pub options: Vec<String>,
    /// Options never to be shown anywhere (mount-utils' MountSensitive).
    #[serde(default)]
    pub sensitive_options: Vec<String>,
    /// The namespace to verify as the caller's: a pid, when it is not the peer's
    /// (mount(8)'s `-N`).
    #[serde(default)]
    pub caller_pid: Option<u32>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UnmountRequest {
    pub target: PathBuf,
    /// MNT_DETACH (`umount -l`).
    #[serde(default)]
    pub lazy: bool,
    /// MNT_FORCE (`umount -f`).
    #[serde(default)]
    pub force: bool,
    #[serde(default)]
    pub caller_pid: Option<u32>,
}

/// What the daemon keeps of a mount it made. Options are already redacted.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MountRecord {
    pub target: PathBuf,
    pub executor: String,
    pub source: String,
    pub fstype: String,
    pub options: Vec<String>,
    /// The mount's id in the executor's namespace.
    pub mount_id: u32,
}

/// Where a mount was (or was no longer) seen.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Sighting {
    /// "executor", "host", "caller (pid 42)".
    pub namespace: String,
    /// The mount's id there, when it is there.
    pub mount_id: Option<u32>,
    /// Its propagation there, in findmnt's words.
    pub propagation: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MountResponse {
    pub record: MountRecord,
    pub seen: Vec<Sighting>,
    /// The executor's combined output.
    pub output: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UnmountResponse {
    pub target: PathBuf,
    pub seen: Vec<Sighting>,
    pub output: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Status {
    pub version: String,
    pub kubelet_root: PathBuf,
    pub executors: Vec<String>,
    pub mounts: Vec<MountRecord>,
    /// Records dropped at start because their mount had vanished.
    pub reconciled_away: Vec<MountRecord>,
}

/// Stable error codes: clients and operators match on these, never on messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorCode {
    /// The request is malformed or names something invalid.
    BadRequest,
    /// The peer's uid is not allowed.
    Forbidden,
    /// The target is outside the allowed roots, or reached through a symlink.
    TargetNotAllowed,
    /// Another operation on this target is in progress.
    Busy,
    /// The executor ran and failed (its output is attached).
    MountFailed,
    UnmountFailed,
    /// The target is not a mount point (unmount).
    NotMounted,
    /// The mount did not reach the host or the caller; it was undone.
    PropagationBroken,
    /// The executor did not answer in time; whatever it did was undone.
    Timeout,
    /// The executor (VCS container, Docker) cannot be reached.
    ExecutorUnavailable,
    NotImplemented,
    Internal,
}

impl ErrorCode {
    pub fn http_status(self) -> u16 {
        match self {
            ErrorCode::BadRequest => 400,
            ErrorCode::Forbidden | ErrorCode::TargetNotAllowed => 403,
            ErrorCode::NotMounted => 404,
            ErrorCode::Busy => 409,
            ErrorCode::MountFailed | ErrorCode::UnmountFailed | ErrorCode::PropagationBroken => 422,
            ErrorCode::NotImplemented => 501,
            ErrorCode::ExecutorUnavailable => 503,
            ErrorCode::Timeout => 504,
            ErrorCode::Internal => 500,
        }
    }
}

impl fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let word = serde_json::to_value(self).map_err(|_| fmt::Error)?;
        f.write_str(word.as_str().unwrap_or("internal"))
    }
}

/// Every failed request answers with this body.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
#[error("{message} [{code}]")]
pub struct ApiError {
    pub code: ErrorCode,
    pub message: String,
    /// The executor's combined output, when it ran.
    #[serde(default)]
    pub output: String,
}

impl ApiError {
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        ApiError {
            code,
            message: message.into(),
            output: String::new(),
        }
    }

    pub fn with_output(mut self, output: impl Into<String>) -> Self {
        self.output = output.into();
        self
    }
}
