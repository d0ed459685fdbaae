//! `sidemount run`: an allowed command in a VCS container, the seed's
//! RunContainerInSidecarContainer.

use tracing::info;

use crate::api::wire::{self, ApiError, ErrorCode, Executed, Peer, RunRequest};
use crate::daemon::Daemon;

impl Daemon {
    /// Runs an allowed VCS command (`sidemount run`): the seed's
    /// RunContainerInSidecarContainer.
    pub async fn run(&self, peer: Peer, req: RunRequest) -> Result<Executed, ApiError> {
        self.policy.check_peer(peer.uid)?;
        let handle = self.handle(&req.vcs)?;
        let program = req.command.first().map(String::as_str).unwrap_or("");
        if !handle.vcs.allows(program) {
            return Err(ApiError::new(
                ErrorCode::NotAllowed,
                format!(
                    "vcs {:?} does not allow running {program:?}; its `run` list is {:?}",
                    handle.vcs.name, handle.vcs.run
                ),
            ));
        }
        let done = handle
            .executor
            .run(
                &req.command,
                wire::deadline(req.timeout_seconds, self.timeout),
            )
            .await
            .map_err(|e| {
                ApiError::new(e.code(ErrorCode::Internal), e.to_string()).with_output(e.output())
            })?;
        info!(vcs = %handle.vcs.name, command = %done.command, exit_code = done.exit_code, "ran");
        Ok(done)
    }
}
