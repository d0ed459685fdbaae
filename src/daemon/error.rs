//! What can go wrong in the mount and unmount pipelines, one variant per step,
//! each keeping the error of the layer below (the command and its output, the
//! break verification found, the record file), until the one place where it
//! becomes the wire's `ApiError`, with secrets scrubbed.

use std::path::PathBuf;
use std::time::Duration;

use crate::api::wire::{ApiError, ErrorCode};
use crate::daemon::record::RecordError;
use crate::daemon::verify::VerifyError;
use crate::executor::ExecError;
use crate::mount::options::MountOptions;
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
            Self::Verify { source, .. } | Self::Change { source, .. } => match source {
                VerifyError::Missing { .. } => ErrorCode::PropagationBroken,
                VerifyError::NotMounted { .. }
                | VerifyError::NotSame { .. }
                | VerifyError::Unchanged { .. } => failed,
                VerifyError::StillMounted { .. }
                | VerifyError::Elsewhere { .. }
                | VerifyError::Read(_) => ErrorCode::Internal,
            },
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
            Self::Verify { source, output } | Self::Change { source, output } => {
                if let Some(remedy) = source.remedy() {
                    message.push_str(&format!("; fix: {remedy}"));
                }
                output
            }
            Self::StillMounted { output, .. } => output,
            _ => "",
        };
        ApiError::new(self.code(op), message).with_output(options.scrub(output))
    }
}
