//! What the executors share about a mount step: it runs off the async threads
//! within its deadline, and mount(8)'s failure on a staging point is told in the
//! target's name, which is the one the caller knows.

use std::path::Path;
use std::time::Duration;

use super::ExecError;
use crate::mount::syscall::SyscallError;
use crate::policy::CheckedTarget;

/// Runs `call` on a blocking thread within `deadline`: the handles it needs are
/// copies, so the thread may outlive the request.
pub(super) async fn blocking<T: Send + 'static>(
    what: String,
    deadline: Duration,
    call: impl FnOnce() -> Result<T, ExecError> + Send + 'static,
) -> Result<T, ExecError> {
    match tokio::time::timeout(deadline, tokio::task::spawn_blocking(call)).await {
        Ok(Ok(done)) => done,
        Ok(Err(join)) => Err(ExecError::Spawn {
            command: what,
            source: std::io::Error::other(join),
        }),
        Err(_) => Err(ExecError::Timeout {
            command: what,
            after: deadline,
        }),
    }
}

/// mount(8)'s failure on the staging point `staging`, told of `target` instead.
pub(super) fn on_target(e: ExecError, staging: &Path, target: &Path) -> ExecError {
    let (staging, target) = (staging.display().to_string(), target.display().to_string());
    match e {
        ExecError::Failed {
            command,
            status,
            output,
        } => ExecError::Failed {
            command: command.replace(&staging, &target),
            status,
            output: output.replace(&staging, &target),
        },
        other => other,
    }
}

/// A mount call on `target` that failed, in mount(8)'s words.
pub(super) fn syscall_failed(target: &CheckedTarget, e: SyscallError) -> ExecError {
    ExecError::Call {
        call: "mount",
        said: format!("mount: {}: {}.\n", target.path.display(), e.errno().desc()),
        target: target.path.clone(),
        source: Box::new(e),
    }
}
