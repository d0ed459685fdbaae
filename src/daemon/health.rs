//! Watches the mounts of long-running volume clients (FUSE daemons that must
//! outlive the mount call): when such a client dies or its container restarts, its
//! mounts stay in the table but every access fails, usually with ENOTCONN. A stat
//! of each mount's root, on a blocking thread with a timeout and never in the
//! request path, on a timer and whenever a VCS may have restarted, classifies each
//! one with the kubelet's list of corrupted-mount errors.

use std::collections::{HashMap, HashSet};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use nix::errno::Errno;
use tracing::{info, warn};

use crate::api::wire::{Health, MountHealth, MountRecord};
use crate::daemon::Daemon;

/// The health label of a mount nobody watches (a kernel mount, or one of a VCS
/// that is not long-running).
pub const UNWATCHED: &str = "unwatched";

/// The errors the kubelet's `IsCorruptedMnt` takes for a mount whose client is
/// gone: the mount must be made again.
pub const CORRUPTED: [Errno; 7] = [
    Errno::ENOTCONN,
    Errno::ESTALE,
    Errno::EIO,
    Errno::EACCES,
    Errno::EHOSTDOWN,
    Errno::EWOULDBLOCK,
    Errno::ENODEV,
];

/// How often the agents of long-running VCS are asked whether they answer.
const AGENT_POLL: Duration = Duration::from_secs(1);

/// The longest one stat may take before its mount is called unresponsive.
pub(super) const STAT_TIMEOUT: Duration = Duration::from_secs(5);

/// The health of a stat's outcome, and the error it met.
pub fn classify(stat: Result<(), Errno>) -> (Health, String) {
    match stat {
        Ok(()) => (Health::Healthy, String::new()),
        Err(e) if CORRUPTED.contains(&e) => (Health::Corrupted, e.to_string()),
        Err(e) => (Health::Failed, e.to_string()),
    }
}

/// What the watch knows: the last finding per mount id, and the stats still
/// running (a hung one is not started again until it returns).
#[derive(Default)]
pub struct Board {
    found: Mutex<HashMap<u32, MountHealth>>,
    running: Arc<Mutex<HashSet<u32>>>,
    /// Asks for a check now (a VCS restarted or was replaced).
    wake: tokio::sync::Notify,
}

/// Stats `target` (not following a symlink) on a blocking thread; `None` when it
/// did not return within `timeout`. A stat still running for `id` is not doubled.
async fn probe(
    running: &Arc<Mutex<HashSet<u32>>>,
    id: u32,
    target: PathBuf,
    timeout: Duration,
) -> Option<Result<(), Errno>> {
    if !running.lock().unwrap().insert(id) {
        return None;
    }
    let running = running.clone();
    let stat = tokio::task::spawn_blocking(move || {
        let result = nix::sys::stat::lstat(&target).map(|_| ());
        running.lock().unwrap().remove(&id);
        result
    });
    match tokio::time::timeout(timeout, stat).await {
        Ok(Ok(result)) => Some(result),
        // The blocking pool is shutting down, or the stat has not returned.
        Ok(Err(_)) | Err(_) => None,
    }
}

pub(super) fn now() -> u64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

impl Daemon {
    /// The last finding for every watched mount, in record order.
    pub fn mount_health(&self) -> Vec<MountHealth> {
        let found = self.health.found.lock().unwrap();
        self.watched()
            .into_iter()
            .filter_map(|m| found.get(&m.mount_id).cloned())
            .map(|h| MountHealth {
                last_heal: self.healer.last(&h.target),
                ..h
            })
            .collect()
    }

    /// Checks the watched mounts every `every`, and at once when woken (see
    /// [`Daemon::wake_health`]). Runs until dropped.
    pub async fn watch_health(&self, every: Duration) {
        self.sweep_staging();
        let checks = async {
            loop {
                self.check_and_heal(STAT_TIMEOUT.min(every)).await;
                let _ = tokio::time::timeout(every, self.health.wake.notified()).await;
            }
        };
        tokio::join!(checks, self.watch_agents());
    }

    /// Wakes the watch when the agent of a long-running VCS answers again after it
    /// did not (its container or sidecar restarted): its mounts lost their client.
    async fn watch_agents(&self) {
        let agents: Vec<_> = self
            .vcs
            .iter()
            .filter(|h| h.vcs.long_running)
            .filter_map(|h| Some((h.vcs.name.clone(), h.agent.clone()?)))
            .collect();
        let mut up = vec![true; agents.len()];
        loop {
            tokio::time::sleep(AGENT_POLL).await;
            for ((name, agent), was_up) in agents.iter().zip(up.iter_mut()) {
                let is_up = agent.status(AGENT_POLL).await.is_ok();
                if is_up && !*was_up {
                    info!(vcs = %name, "the agent answers again: checking its mounts");
                    self.wake_health();
                }
                *was_up = is_up;
            }
        }
    }

    /// Checks the watched mounts, then heals the corrupted ones (see
    /// [`Daemon::heal_corrupted`]).
    pub(super) async fn check_and_heal(&self, timeout: Duration) {
        self.check_health(timeout).await;
        self.heal_corrupted().await;
    }

    /// Asks for a check now: a volume client may have restarted.
    pub(super) fn wake_health(&self) {
        self.health.wake.notify_one();
    }

    /// Whether a mount of the record's type is still on its target, as the daemon
    /// sees it (statx and statmount: nothing reaches the filesystem's server).
    fn still_mounted(&self, m: &MountRecord) -> bool {
        match self.own_namespace().mount_at(&m.target) {
            Ok(found) => found.is_some_and(|f| f.fstype == m.fstype),
            Err(_) => true,
        }
    }

    /// The records of mounts made by long-running VCS.
    fn watched(&self) -> Vec<MountRecord> {
        let long_running: Vec<String> = self
            .vcs
            .iter()
            .filter(|h| h.vcs.long_running)
            .map(|h| h.vcs.executor_name())
            .collect();
        self.mounts()
            .into_iter()
            .filter(|m| long_running.contains(&m.executor))
            .collect()
    }

    /// Stats every watched mount at once, records what each showed, logs each
    /// change and forgets mounts no longer recorded.
    async fn check_health(&self, timeout: Duration) {
        let watched = self.watched();
        let running = &self.health.running;
        let found = futures_util::future::join_all(watched.iter().map(|m| async move {
            let stat = probe(running, m.mount_id, m.target.clone(), timeout).await;
            let (health, error) = match stat {
                Some(Ok(())) if !self.still_mounted(m) => (
                    Health::Vanished,
                    format!("no {} mount is on the target any more", m.fstype),
                ),
                Some(result) => classify(result),
                None => (
                    Health::Unresponsive,
                    format!("a stat did not return within {timeout:?}"),
                ),
            };
            MountHealth {
                target: m.target.clone(),
                mount_id: m.mount_id,
                executor: m.executor.clone(),
                health,
                error,
                checked_at: Some(now()),
                last_heal: None,
            }
        }))
        .await;
        let mut changed = false;
        {
            let mut board = self.health.found.lock().unwrap();
            board.retain(|id, _| watched.iter().any(|m| m.mount_id == *id));
            for h in found {
                let before = board.get(&h.mount_id).map(|b| b.health);
                if before != Some(h.health) {
                    changed = true;
                    log_change(before, &h);
                }
                board.insert(h.mount_id, h);
            }
        }
        if changed {
            self.changed.notify_one();
        }
    }
}

fn log_change(before: Option<Health>, h: &MountHealth) {
    let target = h.target.display();
    match h.health {
        Health::Healthy if before.is_none() => {}
        Health::Healthy => info!(target = %target, mount_id = h.mount_id, executor = %h.executor,
            "mount is healthy again"),
        Health::Corrupted | Health::Vanished => {
            warn!(target = %target, mount_id = h.mount_id, executor = %h.executor,
            error = %h.error, "mount is corrupted: its volume client lost it")
        }
        _ => warn!(target = %target, mount_id = h.mount_id, executor = %h.executor,
            health = h.health.as_str(), error = %h.error, "mount does not answer as it should"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_kubelets_errors_are_corrupted_others_are_failures() {
        assert_eq!(classify(Ok(())), (Health::Healthy, String::new()));
        for e in CORRUPTED {
            assert_eq!(classify(Err(e)).0, Health::Corrupted, "{e}");
        }
        let (health, error) = classify(Err(Errno::ENOTCONN));
        assert_eq!(health, Health::Corrupted);
        assert_eq!(error, "ENOTCONN: Transport endpoint is not connected");
        assert_eq!(classify(Err(Errno::ENOENT)).0, Health::Failed);
        assert_eq!(classify(Err(Errno::ELOOP)).0, Health::Failed);
    }

    #[tokio::test]
    async fn a_stat_answers_once_and_a_running_one_is_not_doubled() {
        let running = Arc::new(Mutex::new(HashSet::new()));
        let dir = tempfile::tempdir().unwrap();
        let t = Duration::from_secs(5);
        assert_eq!(probe(&running, 1, dir.path().into(), t).await, Some(Ok(())));
        let gone = dir.path().join("gone");
        assert_eq!(probe(&running, 1, gone, t).await, Some(Err(Errno::ENOENT)));
        assert!(running.lock().unwrap().is_empty());
        // A stat of mount 7 that has not returned: no second one is started.
        running.lock().unwrap().insert(7);
        assert_eq!(probe(&running, 7, dir.path().into(), t).await, None);
    }
}
