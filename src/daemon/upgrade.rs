//! `sidemount upgrade`: replaces a docker-provided VCS container by one made from
//! the current configuration.

use std::path::PathBuf;
use std::time::Duration;

use tracing::warn;

use crate::api::wire::{ApiError, ErrorCode, Peer, UpgradeRequest, UpgradeResponse};
use crate::daemon::Daemon;

impl Daemon {
    /// configuration; refused while long-running mounts depend on it, unless forced.
    pub async fn upgrade(
        &self,
        peer: Peer,
        req: UpgradeRequest,
    ) -> Result<UpgradeResponse, ApiError> {
        self.policy.check_peer(peer.uid)?;
        let handle = self.handle(&req.vcs)?;
        let Some((docker, spec)) = &handle.docker else {
            return Err(ApiError::new(
                ErrorCode::BadRequest,
                format!(
                    "vcs {:?} is run by someone else (provider external): upgrade it there",
                    req.vcs
                ),
            ));
        };
        let unavailable = |e: crate::vcs::docker::DockerError| {
            ApiError::new(ErrorCode::ExecutorUnavailable, e.to_string())
        };
        let name = handle.vcs.executor_name();
        let mounts: Vec<PathBuf> = self
            .mounts()
            .into_iter()
            .filter(|m| m.executor == name)
            .map(|m| m.target)
            .collect();
        if handle.vcs.long_running && !mounts.is_empty() && !req.force {
            return Err(ApiError::new(
                ErrorCode::InUse,
                format!(
                    "{} long-running mount(s) of vcs {:?} depend on its container ({}); unmount them first, or pass --force to replace it anyway (they will break)",
                    mounts.len(),
                    req.vcs,
                    mounts.iter().map(|m| m.display().to_string()).collect::<Vec<_>>().join(", ")
                ),
            ));
        }
        let current = docker.find(spec).await.map_err(unavailable)?;
        let up_to_date = current.as_ref().is_some_and(|c| c.running && !c.outdated);
        if up_to_date && !req.force {
            return Ok(UpgradeResponse {
                vcs: req.vcs,
                container: spec.container_name(),
                replaced: false,
                mounts,
            });
        }
        docker.replace(spec).await.map_err(unavailable)?;
        if let Some(agent) = &handle.agent {
            agent
                .wait(Duration::from_secs(30))
                .await
                .map_err(|e| ApiError::new(ErrorCode::ExecutorUnavailable, e.to_string()))?;
        }
        warn!(vcs = %req.vcs, container = %spec.container_name(), mounts = mounts.len(), "volume-client container replaced");
        // Its long-running mounts lost their client: healed now, by the path the
        // health watch takes.
        self.check_and_heal(crate::daemon::health::STAT_TIMEOUT)
            .await;
        self.changed.notify_one();
        Ok(UpgradeResponse {
            vcs: req.vcs,
            container: spec.container_name(),
            replaced: true,
            mounts,
        })
    }
}
