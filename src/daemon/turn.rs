//! What the mount and unmount pipelines (and a change, which is a mount) do first
//! on their checked target: wait for its turn (one operation at a time on a
//! target), read its newest record once, under that turn, pick the executor
//! with it, wait until that executor is ready, and open the namespaces the
//! outcome must be proved in.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use crate::api::wire::MountRecord;
use crate::daemon::claims::Claim;
use crate::daemon::error::PipelineError;
use crate::daemon::verify::Views;
use crate::daemon::Daemon;
use crate::executor::Executor;

/// A target's turn, and what an operation on it needs.
pub(super) struct Turn<'a> {
    /// Held until the operation ends.
    pub(super) claim: Claim<'a>,
    /// The newest recorded mount on the target when the turn came.
    pub(super) recorded: Option<MountRecord>,
    pub(super) exec: Arc<dyn Executor>,
    pub(super) views: Views,
}

impl Daemon {
    /// Waits for the turn on `target` until `deadline`, then takes the executor
    /// `pick` chooses by the target's newest record, waits until it is ready,
    /// and opens its namespace, the host's and the `caller`'s.
    pub(super) async fn turn(
        &self,
        target: &Path,
        deadline: Duration,
        caller: Option<u32>,
        pick: impl FnOnce(Option<&MountRecord>) -> Result<Arc<dyn Executor>, PipelineError>,
    ) -> Result<Turn<'_>, PipelineError> {
        let claim = self.claim(target, deadline).await?;
        let recorded = self.record.on_target(target).pop().map(|e| e.record);
        let exec = pick(recorded.as_ref())?;
        exec.ready().await.map_err(PipelineError::NotReady)?;
        let views = self
            .views(exec.as_ref(), caller)
            .await
            .map_err(PipelineError::Namespaces)?;
        Ok(Turn {
            claim,
            recorded,
            exec,
            views,
        })
    }
}
