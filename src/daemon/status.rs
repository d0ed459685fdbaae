//! What the daemon reports: its record, its executors and VCS health, in
//! /v1/status and in the status file kept equal to it.

use std::time::Duration;

use tracing::warn;

use crate::api::wire::{MountRecord, Status, VcsStatus};
use crate::daemon::Daemon;

/// The status file's name in the state directory; readable by all (0644).
pub const STATUS_FILE: &str = "status.json";

impl Daemon {
    pub fn mounts(&self) -> Vec<MountRecord> {
        self.record.mounts()
    }

    pub async fn status(&self) -> Status {
        self.status_with(self.vcs_status().await)
    }

    /// Asks each VCS how it is (its container, its agent).
    pub(super) async fn vcs_status(&self) -> Vec<VcsStatus> {
        futures_util::future::join_all(self.vcs.iter().map(|h| h.status())).await
    }

    pub(super) fn status_with(&self, vcs: Vec<VcsStatus>) -> Status {
        Status {
            version: env!("CARGO_PKG_VERSION").into(),
            kubelet_root: self.kubelet_root.clone(),
            executors: self.executors.iter().map(|e| e.name().to_owned()).collect(),
            vcs,
            mounts: self.mounts(),
            reconciled_away: self.recovery.vanished.clone(),
            adopted: self.recovery.adopted.clone(),
            abandoned: self.recovery.abandoned.clone(),
            health: self.mount_health(),
        }
    }

    /// Keeps the status file equal to what /v1/status answers: rewritten (whole, see
    /// [`StateDir::replace`](super::state_dir::StateDir::replace)) within `settle` of every change the daemon makes, once
    /// for a burst of them (a node starting its pods), with the VCS health found at
    /// most `every` ago (asking Docker and the agents on every mount would cost each
    /// mount their time), and after every such check. With many mounts the
    /// window grows so that the rewrites take at most a tenth of the time. Runs
    /// until dropped.
    pub async fn publish_status(&self, every: Duration, settle: Duration) {
        let mut last = Vec::new();
        // A daemon that starts answers its first requests before it lists
        // thousands of mounts.
        tokio::time::sleep(settle).await;
        let mut vcs = self.vcs_status().await;
        let mut checked = tokio::time::Instant::now();
        loop {
            let started = std::time::Instant::now();
            let status = self.status_with(vcs.clone());
            // Serializing thousands of records takes a while: off the workers
            // that serve requests.
            tokio::task::block_in_place(|| {
                let mut bytes = serde_json::to_vec_pretty(&status).expect("status serializes");
                bytes.push(b'\n');
                if bytes != last {
                    match self.state_dir.replace(STATUS_FILE, &bytes, 0o644) {
                        Ok(()) => last = bytes,
                        Err(e) => {
                            warn!(path = %self.state_dir.path().join(STATUS_FILE).display(), error = %e, "cannot write the status file")
                        }
                    }
                }
            });
            // A burst waits long enough that rewriting the file takes at most a
            // tenth of the time, however many mounts it lists.
            let settle = settle.max(started.elapsed() * 9);
            let next = checked + every;
            if tokio::time::timeout_at(next, self.changed.notified())
                .await
                .is_err()
            {
                vcs = self.vcs_status().await;
                checked = tokio::time::Instant::now();
            } else {
                tokio::time::sleep(settle).await;
            }
        }
    }
}
