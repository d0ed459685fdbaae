//! Turning a step's failure into the wire's `ApiError`, secrets scrubbed.

use crate::api::wire::{ApiError, ErrorCode, MountRequest};
use crate::daemon::verify::VerifyError;
use crate::executor::ExecError;
use crate::policy::scrub;

pub(super) fn internal(e: impl std::fmt::Display) -> ApiError {
    ApiError::new(ErrorCode::Internal, e.to_string())
}

/// An executor failure, with secrets scrubbed from message and output.
pub(super) fn exec_error(req: &MountRequest, e: &ExecError, failed: ErrorCode) -> ApiError {
    ApiError::new(e.code(failed), scrub(req, &e.to_string())).with_output(scrub(req, e.output()))
}

pub(super) fn verify_error(req: &MountRequest, e: &VerifyError) -> ApiError {
    let code = match e {
        VerifyError::Missing { .. } => ErrorCode::PropagationBroken,
        VerifyError::NotMounted { .. } => ErrorCode::MountFailed,
        _ => ErrorCode::Internal,
    };
    let mut message = format!("{}; the mount was undone", scrub(req, &e.to_string()));
    if let Some(remedy) = e.remedy() {
        message.push_str(&format!("; fix: {remedy}"));
    }
    ApiError::new(code, message)
}
