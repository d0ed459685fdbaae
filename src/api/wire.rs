//! The versioned HTTP/JSON API spoken over the daemon's unix socket: requests,
//! answers and errors, shared by the daemon, the mount helper and the agent.

use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::api::fstype::FsType;

pub const MOUNTS: &str = "/v1/mounts";
pub const UNMOUNTS: &str = "/v1/unmounts";
pub const STATUS: &str = "/v1/status";
pub const RUN: &str = "/v1/run";
pub const UPGRADE: &str = "/v1/upgrade";

/// Paths on the wire are bytes, carried exactly: a JSON string when they are
/// UTF-8 (nearly always), else `{"bytes": [98, 97, 100, 255]}`, their raw bytes.
/// Never converted lossily.
pub mod path_bytes {
    use std::ffi::OsString;
    use std::os::unix::ffi::{OsStrExt, OsStringExt};
    use std::path::{Path, PathBuf};

    use serde::{Deserialize, Deserializer, Serialize, Serializer};

    #[derive(Serialize, Deserialize)]
    #[serde(untagged)]
    enum Wire {
        Text(String),
        Bytes { bytes: Vec<u8> },
    }

    pub fn serialize<S: Serializer>(path: &Path, s: S) -> Result<S::Ok, S::Error> {
        match path.to_str() {
            Some(text) => Wire::Text(text.to_owned()),
            None => Wire::Bytes {
                bytes: path.as_os_str().as_bytes().to_vec(),
            },
        }
        .serialize(s)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<PathBuf, D::Error> {
        Ok(match Wire::deserialize(d)? {
            Wire::Text(text) => PathBuf::from(text),
            Wire::Bytes { bytes } => PathBuf::from(OsString::from_vec(bytes)),
        })
    }
}

/// Largest request body the daemon reads.
pub const MAX_BODY: usize = 64 * 1024;

/// Mount `source` on `target` (mount(8)'s `-t fstype -o options source target`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MountRequest {
    pub source: String,
    #[serde(with = "path_bytes")]
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
    /// The bind source is this file descriptor of the peer process, which holds
    /// it open until the answer (a `/proc/PID/fd/N` source the client opened in
    /// its own namespaces); `source` then only names it in messages.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source_fd: Option<i32>,
    /// The caller's deadline; the daemon's own is used when it is shorter.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout_seconds: Option<u64>,
    /// From the daemon to an agent only: the target roots the agent resolves the
    /// target beneath, in its own namespace, with the daemon's rules. The daemon
    /// ignores what a client puts here.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub beneath: Vec<PathBuf>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UnmountRequest {
    #[serde(with = "path_bytes")]
    pub target: PathBuf,
    /// MNT_DETACH (`umount -l`).
    #[serde(default)]
    pub lazy: bool,
    /// MNT_FORCE (`umount -f`).
    #[serde(default)]
    pub force: bool,
    #[serde(default)]
    pub caller_pid: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout_seconds: Option<u64>,
    /// From the daemon to an agent only: the target roots (as for a mount).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub beneath: Vec<PathBuf>,
    /// From the daemon to an agent only: the recorded mount id; the mount on the
    /// target must be that one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mount_id: Option<u32>,
    /// From the daemon to an agent only: the recorded unique mount id; when set,
    /// the mount on the target must have it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unique_id: Option<u64>,
}

/// The deadline for a request: the caller's `timeout_seconds` when it is shorter
/// than `limit`, the server's own.
pub fn deadline(asked: Option<u64>, limit: Duration) -> Duration {
    asked
        .map(Duration::from_secs)
        .map_or(limit, |d| d.min(limit))
}

/// Run a VCS command that is not a mount (`rbd map`, `iscsiadm -m discovery`): the
/// seed's RunContainerInSidecarContainer.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RunRequest {
    /// The VCS to run it in (the agent ignores it: it is its own); empty: the one
    /// whose `run` list allows the program (a command shim names none).
    #[serde(default)]
    pub vcs: String,
    /// Program and arguments; the program must be in the VCS's `run` list.
    pub command: Vec<String>,
    /// What the command reads on stdin (a shim passes its own); none: /dev/null.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stdin: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout_seconds: Option<u64>,
}

/// The most stdin a `/v1/run` request carries: its body must stay below
/// [`MAX_BODY`] once JSON-escaped.
pub const MAX_STDIN: usize = 16 * 1024;

/// A command that ran to its end, whatever its exit code: the answer to `/v1/run`,
/// and the agent's answer to mounts and unmounts.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Executed {
    /// The command as it may be shown (no mount options).
    pub command: String,
    pub exit_code: i32,
    /// stdout and stderr, interleaved as written.
    pub output: String,
    /// After a mount or unmount: the agent's own mountinfo entry for the target.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mount: Option<Sighting>,
}

/// Replace a docker-provided VCS container by one made from the current
/// configuration.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UpgradeRequest {
    pub vcs: String,
    /// Replace it even while long-running mounts depend on it (they break).
    #[serde(default)]
    pub force: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UpgradeResponse {
    pub vcs: String,
    pub container: String,
    /// False when the running container already matched the configuration.
    pub replaced: bool,
    /// Mounts of this VCS that existed when it was replaced.
    pub mounts: Vec<PathBuf>,
}

/// The health of one volume-client container.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VcsStatus {
    pub name: String,
    pub types: Vec<FsType>,
    /// "docker" or "external".
    pub provider: String,
    /// "agent" or "exec".
    pub mode: String,
    /// The container (docker provider) or agent socket (external).
    pub reached_at: String,
    /// The programs `sidemount run` and command shims may execute there.
    #[serde(default)]
    pub run: Vec<String>,
    pub healthy: bool,
    /// Why it is not healthy, or that its configuration changed since it was made.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub note: String,
}

/// What the daemon keeps of a mount it made. Options are already redacted.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MountRecord {
    #[serde(with = "path_bytes")]
    pub target: PathBuf,
    pub executor: String,
    pub source: String,
    pub fstype: String,
    pub options: Vec<String>,
    /// The mount's id in the executor's namespace.
    pub mount_id: u32,
    /// Its unique id, where the kernel has them (Linux 6.8): an unmount acts only
    /// on that mount, never on one put on the target since. Absent in records of
    /// older kernels and versions, which compare `mount_id`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unique: Option<UniqueMount>,
}

/// A mount by its unique id (statx `STATX_MNT_ID_UNIQUE`, never reused while the
/// machine runs), in the mount namespace it was made in: a namespace made again
/// (a restarted container) holds copies of the mount under ids of their own.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct UniqueMount {
    pub id: u64,
    /// That namespace's id (`NS_GET_MNTNS_ID`, Linux 6.11).
    pub namespace: u64,
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
    #[serde(with = "path_bytes")]
    pub target: PathBuf,
    pub seen: Vec<Sighting>,
    pub output: String,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Status {
    pub version: String,
    pub kubelet_root: PathBuf,
    pub executors: Vec<String>,
    pub vcs: Vec<VcsStatus>,
    pub mounts: Vec<MountRecord>,
    /// Records dropped at start because their mount had vanished.
    pub reconciled_away: Vec<MountRecord>,
    /// Mounts a killed daemon made but had not recorded yet, found at start and
    /// recorded.
    #[serde(default)]
    pub adopted: Vec<MountRecord>,
    /// Mounts a killed daemon meant to make, not found at start: forgotten
    /// (`mount_id` 0).
    #[serde(default)]
    pub abandoned: Vec<MountRecord>,
    /// How each watched mount (those of long-running VCS) was found last.
    #[serde(default)]
    pub health: Vec<MountHealth>,
}

/// What a stat of a mount's root last found.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Health {
    /// Not checked yet.
    Unknown,
    Healthy,
    /// Failed with one of the kubelet's corrupted-mount errors (ENOTCONN, ESTALE,
    /// EIO, EACCES, EHOSTDOWN, EWOULDBLOCK, ENODEV): its client is gone.
    Corrupted,
    /// The stat did not return in time (a server that does not answer).
    Unresponsive,
    /// Failed with another error.
    Failed,
    /// No mount of its type is on the target any more: its client unmounted it
    /// as it exited (sshfs does when its connection drops).
    Vanished,
}

impl Health {
    pub fn as_str(self) -> &'static str {
        match self {
            Health::Unknown => "unknown",
            Health::Healthy => "healthy",
            Health::Corrupted => "corrupted",
            Health::Unresponsive => "unresponsive",
            Health::Failed => "failed",
            Health::Vanished => "vanished",
        }
    }
}

/// The health of one recorded mount.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MountHealth {
    #[serde(with = "path_bytes")]
    pub target: PathBuf,
    /// The record's mount id.
    pub mount_id: u32,
    pub executor: String,
    pub health: Health,
    /// The error the check met ("ENOTCONN: Transport endpoint is not connected").
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub error: String,
    /// When it was last checked, in seconds since the Unix epoch.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub checked_at: Option<u64>,
    /// The last heal of the mount on this target, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_heal: Option<HealReport>,
}

/// How a corrupted mount was last healed (mounted afresh through its VCS and put
/// in place of the stale one).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HealReport {
    /// When it ended, in seconds since the Unix epoch.
    pub at: u64,
    /// `healed`, `failed` or `not_healable`.
    pub result: String,
    /// The stale mount's id (the record's).
    pub stale_mount_id: u32,
    /// The fresh mount's id, when it was made.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mount_id: Option<u32>,
    /// The namespaces whose stale mount was replaced ("daemon", "pid 4242: /data").
    #[serde(default)]
    pub touched: Vec<String>,
    /// Why it failed or cannot be done.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub error: String,
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
    /// What would be mounted is not allowed: a pseudo filesystem, a source outside
    /// the source roots, a block device no pattern allows, a loop or block source
    /// of a peer other than root.
    SourceNotAllowed,
    /// Another operation on this target is in progress.
    Busy,
    /// The target holds a mount the daemon made from another request.
    AlreadyMounted,
    /// The daemon serves as many connections as it may, all busy.
    Overloaded,
    /// No such endpoint, or not with this method.
    NotFound,
    MethodNotAllowed,
    /// The request body is larger than the daemon reads.
    TooLarge,
    /// The request head or body did not arrive in time.
    RequestTimeout,
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
    /// `run` of a program the VCS does not allow, or of an unknown VCS.
    NotAllowed,
    /// A VCS container cannot be replaced while long-running mounts depend on it.
    InUse,
    NotImplemented,
    Internal,
}

impl ErrorCode {
    pub fn http_status(self) -> u16 {
        match self {
            ErrorCode::BadRequest => 400,
            ErrorCode::Forbidden
            | ErrorCode::TargetNotAllowed
            | ErrorCode::SourceNotAllowed
            | ErrorCode::NotAllowed => 403,
            ErrorCode::NotMounted | ErrorCode::NotFound => 404,
            ErrorCode::MethodNotAllowed => 405,
            ErrorCode::RequestTimeout => 408,
            ErrorCode::Busy | ErrorCode::InUse | ErrorCode::AlreadyMounted => 409,
            ErrorCode::TooLarge => 413,
            ErrorCode::MountFailed | ErrorCode::UnmountFailed | ErrorCode::PropagationBroken => 422,
            ErrorCode::NotImplemented => 501,
            ErrorCode::ExecutorUnavailable | ErrorCode::Overloaded => 503,
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

/// Who is asking, from SO_PEERCRED. `pid` is `None` when the peer's pid is not
/// visible in the daemon's pid namespace.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Peer {
    pub uid: u32,
    pub pid: Option<u32>,
}

/// What `GET /v1/status` answers: the agent is up and serves this VCS.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AgentStatus {
    pub version: String,
    pub vcs: String,
    /// Commands running now.
    pub busy: bool,
}
