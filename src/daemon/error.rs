//! What can go wrong in the mount and unmount pipelines, and in a heal, one
//! variant per step, each keeping the error of the layer below (the command and
//! its output, the break verification found, the record file), until the one
//! place where it becomes the wire's `ApiError`, with secrets scrubbed.

use std::path::PathBuf;
use std::time::Duration;

use crate::api::wire::{ApiError, ErrorCode};
use crate::daemon::record::RecordError;
use crate::daemon::verify::VerifyError;
use crate::executor::ExecError;
use crate::mount::options::MountOptions;
use crate::mount::rebind::RebindError;
use crate::mount::staging::StagingError;
use crate::ns::mountinfo::MountinfoError;
use crate::policy::PolicyError;

/// Which pipeline failed: an executor's failure is a `mount_failed` in one and
/// an `unmount_failed` in the other.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Operation {
    Mount,
    Unmount,
}

#[derive(Debug, thiserror::Error)]
pub enum PipelineError {
    #[error(transparent)]
    Policy(#[from] PolicyError),
    #[error("{target}: target is busy (another operation on it did not end within {waited:?})")]
    Busy { target: PathBuf, waited: Duration },
    /// mount(8)'s words ("SOURCE already mounted on TARGET"), which callers match.
    #[error("{from} already mounted on {target} (mount {mount_id}, type {fstype}, options {options:?}, made by this daemon from another request); unmount it first")]
    AlreadyMounted {
        target: PathBuf,
        mount_id: u32,
        from: String,
        fstype: String,
        options: Vec<String>,
    },
    #[error("the executor {executor:?} that made the mount on {target} is not configured")]
    UnknownExecutor { target: PathBuf, executor: String },
    #[error(transparent)]
    NotReady(ExecError),
    #[error(transparent)]
    Namespaces(ExecError),
    #[error("{target}: cannot look up its mount in the {namespace} namespace: {source}")]
    Lookup {
        target: PathBuf,
        namespace: String,
        source: MountinfoError,
    },
    #[error("cannot record the intent to mount {target}: {source}")]
    Intent {
        target: PathBuf,
        source: RecordError,
    },
    #[error(transparent)]
    Execute(ExecError),
    /// libblkid could not tell the type of a source left to be probed.
    #[error("{source_path}: cannot tell its filesystem type: {error}")]
    Probe {
        source_path: String,
        error: Box<ExecError>,
    },
    /// mount(8)'s words for a probed type not among those the caller listed.
    #[error("{source_path}: wrong fs type: it holds {found}, not one of {listed}")]
    NotListed {
        source_path: String,
        found: String,
        listed: String,
    },
    #[error("{source}; the mount was undone")]
    Verify { source: VerifyError, output: String },
    #[error("cannot record the mount on {target}: {source}; the mount was undone")]
    Record {
        target: PathBuf,
        source: RecordError,
    },
    /// mount(8)'s words for a change of a target that holds no mount.
    #[error("{target}: mount point not mounted or bad option (no mount on it in the {namespace} namespace)")]
    NotAMountPoint { target: PathBuf, namespace: String },
    /// A change was made but is not seen as asked; nothing is undone (the mount
    /// was there before).
    #[error("{source}")]
    Change { source: VerifyError, output: String },
    #[error("cannot record the change of the mount on {target}: {source}")]
    Update {
        target: PathBuf,
        source: RecordError,
    },
    /// umount(8)'s words: callers (mount-utils) match "not mounted".
    #[error("{target}: not mounted (no mount point there in the {namespace} namespace)")]
    NotMounted { target: PathBuf, namespace: String },
    /// `executor_gone`: gone where it was made, still where it propagated to.
    #[error("{source}")]
    StillMounted {
        source: VerifyError,
        output: String,
        executor_gone: bool,
    },
    #[error("cannot forget the unmounted mount on {target}: {source}")]
    Forget {
        target: PathBuf,
        source: RecordError,
    },
}

impl PipelineError {
    /// The stable code callers match on.
    pub fn code(&self, op: Operation) -> ErrorCode {
        let failed = match op {
            Operation::Mount => ErrorCode::MountFailed,
            Operation::Unmount => ErrorCode::UnmountFailed,
        };
        match self {
            Self::Policy(e) => e.code(),
            Self::Busy { .. } => ErrorCode::Busy,
            Self::AlreadyMounted { .. } => ErrorCode::AlreadyMounted,
            Self::UnknownExecutor { .. } => ErrorCode::ExecutorUnavailable,
            Self::NotReady(e) | Self::Namespaces(e) | Self::Execute(e) => e.code(failed),
            Self::Probe { error, .. } => error.code(failed),
            Self::NotListed { .. } => failed,
            Self::Verify { source, .. } | Self::Change { source, .. } => {
                verify_code(source, failed)
            }
            Self::StillMounted { executor_gone, .. } => match executor_gone {
                true => ErrorCode::PropagationBroken,
                false => failed,
            },
            Self::NotMounted { .. } | Self::NotAMountPoint { .. } => ErrorCode::NotMounted,
            Self::Lookup { .. }
            | Self::Intent { .. }
            | Self::Record { .. }
            | Self::Update { .. }
            | Self::Forget { .. } => ErrorCode::Internal,
        }
    }

    /// The wire's error, with the request's secrets (`options`) scrubbed from
    /// message and output, the remedy of a broken propagation and the
    /// executor's output.
    pub fn to_api(&self, op: Operation, options: &MountOptions) -> ApiError {
        let mut message = options.scrub(&self.to_string());
        let output = match self {
            Self::NotReady(e) | Self::Namespaces(e) | Self::Execute(e) => e.output(),
            Self::Probe { error, .. } => error.output(),
            Self::Verify { source, output } | Self::Change { source, output } => {
                with_remedy(&mut message, source);
                output
            }
            Self::StillMounted { output, .. } => output,
            _ => "",
        };
        ApiError::new(self.code(op), message).with_output(options.scrub(output))
    }
}

/// What can go wrong in a heal: the steps it shares with the mount pipeline keep
/// their error; the others are its own.
#[derive(Debug, thiserror::Error)]
pub enum HealError {
    #[error(transparent)]
    Step(Box<PipelineError>),
    #[error("the mount on {target} changed while it was looked up")]
    Changed { target: PathBuf },
    #[error("the mount on {target} is not the recorded mount {mount_id} (its unique id differs): left as it is")]
    NotRecorded { target: PathBuf, mount_id: u32 },
    #[error(
        "the record of mount {mount_id} on {target} changed during the heal: it is left as it is"
    )]
    RecordChanged { target: PathBuf, mount_id: u32 },
    #[error(transparent)]
    Staging(#[from] StagingError),
    #[error("cannot make the staging point {path}: {source}")]
    StagingPoint {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("the fresh mount on {staging} did not reach the daemon's namespace")]
    NotPropagated { staging: PathBuf },
    #[error("cannot put the fresh mount in place of the stale one on {target}: {source}")]
    Swap {
        target: PathBuf,
        source: RebindError,
    },
    #[error(transparent)]
    Verify(VerifyError),
    #[error("{target} still holds the stale mount")]
    StillStale { target: PathBuf },
    #[error("cannot give the record of {target} the fresh mount's id: {source}")]
    Record {
        target: PathBuf,
        source: RecordError,
    },
    #[error("the {step} of {target} ended abnormally: {source}")]
    Task {
        step: &'static str,
        target: PathBuf,
        source: tokio::task::JoinError,
    },
}

impl From<PipelineError> for HealError {
    fn from(e: PipelineError) -> Self {
        Self::Step(Box::new(e))
    }
}

impl HealError {
    pub fn code(&self) -> ErrorCode {
        match self {
            Self::Step(e) => e.code(Operation::Mount),
            Self::Changed { .. } | Self::NotRecorded { .. } | Self::RecordChanged { .. } => {
                ErrorCode::Busy
            }
            Self::NotPropagated { .. } => ErrorCode::PropagationBroken,
            Self::Verify(source) => verify_code(source, ErrorCode::MountFailed),
            Self::Swap { .. } | Self::StillStale { .. } => ErrorCode::MountFailed,
            Self::Staging(_)
            | Self::StagingPoint { .. }
            | Self::Record { .. }
            | Self::Task { .. } => ErrorCode::Internal,
        }
    }

    /// The wire's error, with the request's secrets (`options`) scrubbed.
    pub fn to_api(&self, options: &MountOptions) -> ApiError {
        if let Self::Step(e) = self {
            return e.to_api(Operation::Mount, options);
        }
        let mut message = options.scrub(&self.to_string());
        if let Self::Verify(source) = self {
            with_remedy(&mut message, source);
        }
        ApiError::new(self.code(), message)
    }
}

/// The code of a failed verification; `failed`: the operation's own failure.
fn verify_code(source: &VerifyError, failed: ErrorCode) -> ErrorCode {
    match source {
        VerifyError::Missing { .. } => ErrorCode::PropagationBroken,
        VerifyError::NotMounted { .. }
        | VerifyError::NotSame { .. }
        | VerifyError::Unchanged { .. }
        | VerifyError::Attributes { .. }
        | VerifyError::NotGiven { .. } => failed,
        VerifyError::StillMounted { .. } | VerifyError::Elsewhere { .. } | VerifyError::Read(_) => {
            ErrorCode::Internal
        }
    }
}

/// Appends the remedy of a broken propagation, if verification found one.
fn with_remedy(message: &mut String, source: &VerifyError) {
    if let Some(remedy) = source.remedy() {
        message.push_str(&format!("; fix: {remedy}"));
    }
}
