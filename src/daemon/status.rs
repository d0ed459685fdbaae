//! What the daemon reports: its record, its executors and VCS health, in
//! /v1/status and in the status file kept equal to it.

use std::time::Duration;

use tracing::warn;

use crate::api::wire::{MountRecord, Status, VcsStatus};
use crate::daemon::{state_file, Daemon};

impl Daemon {
    pub fn mounts(&self) -> Vec<MountRecord> {
        self.record.lock().unwrap().mounts().to_vec()
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
            reconciled_away: self.reconciled_away.clone(),
            health: self.mount_health(),
        }
    }

    /// Keeps the status file equal to what /v1/status answers: rewritten (whole, see
    /// [`state_file::replace`]) within `settle` of every change the daemon makes, once
    /// for a burst of them (a node starting its pods), with the VCS health found at
    /// most `every` ago (asking Docker and the agents on every mount would cost each
    /// mount their time), and after every such check. Runs until dropped.
    pub async fn publish_status(&self, every: Duration, settle: Duration) {
        let mut last = Vec::new();
        let mut vcs = self.vcs_status().await;
        let mut checked = tokio::time::Instant::now();
        loop {
            let mut bytes = serde_json::to_vec_pretty(&self.status_with(vcs.clone()))
                .expect("status serializes");
            bytes.push(b'\n');
            if bytes != last {
                match state_file::replace(&self.status_file, &bytes) {
                    Ok(()) => last = bytes,
                    Err(e) => {
                        warn!(path = %self.status_file.display(), error = %e, "cannot write the status file")
                    }
                }
            }
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
