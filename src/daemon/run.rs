//! `sidemount run`: an allowed command in a VCS container, the seed's
//! RunContainerInSidecarContainer.

use tracing::info;

use crate::api::wire::{self, ApiError, ErrorCode, Executed, Peer, RunRequest};
use crate::daemon::provider::Handle;
use crate::daemon::Daemon;

impl Daemon {
    /// Runs an allowed VCS command (`sidemount run`): the seed's
    /// RunContainerInSidecarContainer.
    pub async fn run(&self, peer: Peer, req: RunRequest) -> Result<Executed, ApiError> {
        self.policy.check_peer(peer.uid)?;
        let program = req.command.first().map(String::as_str).unwrap_or("");
        let handle = match req.vcs.as_str() {
            "" => self.handle_allowing(program)?,
            name => self.handle(name)?,
        };
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
                req.stdin.as_deref(),
                wire::deadline(req.timeout_seconds, self.timeout),
            )
            .await
            .map_err(|e| {
                ApiError::new(e.code(ErrorCode::Internal), e.to_string()).with_output(e.output())
            })?;
        info!(vcs = %handle.vcs.name, command = %done.command, exit_code = done.exit_code, "ran");
        Ok(done)
    }

    /// The VCS whose `run` list allows `program`: a command shim names no VCS.
    fn handle_allowing(&self, program: &str) -> Result<&Handle, ApiError> {
        self.vcs
            .iter()
            .find(|h| h.vcs.allows(program))
            .ok_or_else(|| {
                ApiError::new(
                    ErrorCode::NotAllowed,
                    format!(
                        "no vcs allows running {program:?}: add it to the `run` list of the vcs whose image has it"
                    ),
                )
            })
    }
}
