//! What the executors share about a mount step: it runs off the async threads
//! within its deadline, mount(8)'s failure on a staging point is told in the
//! target's name, which is the one the caller knows, and a step in another
//! mount namespace resolves the target there by the daemon's own rules.

use std::path::Path;
use std::time::Duration;

use super::ExecError;
use crate::mount::syscall::SyscallError;
use crate::ns::enter::EnterError;
use crate::policy::{CheckedTarget, Policy};

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

/// In another mount namespace (a thread that entered it): `target` resolved
/// beneath `root` there, by the rules of the daemon's own check (no symlink, no
/// `..`, strictly below).
pub(super) fn resolve_there(target: &Path, root: &Path) -> Result<CheckedTarget, ExecError> {
    Policy::resolve_target(target, &[root.to_owned()]).map_err(|e| ExecError::InContainer {
        executor: String::new(),
        step: "resolving the target beneath the kubelet root",
        source: Box::new(e),
    })
}

/// A failure to enter another mount namespace, on a thread that does not know
/// whose it is (the caller names it, see `DockerExec::named`).
pub(super) fn entering(e: EnterError) -> ExecError {
    ExecError::InContainer {
        executor: String::new(),
        step: "entering its mount namespace",
        source: Box::new(e),
    }
}
