//! What healing remembers between heals: each mount's request with its secrets (in
//! memory only, never on disk, so a restarted daemon cannot remount what needs
//! them), a backoff per target and a rate limit over all of them (a VCS that
//! cannot mount must not be asked in a loop), the targets already reported not
//! healable, and each target's last heal for the status.

use std::collections::{HashMap, HashSet, VecDeque};
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::api::wire::{HealReport, MountRecord, MountRequest};
use crate::mount::options::REDACTED;

/// The wait after a first failed heal; it doubles with each failure after that.
const BACKOFF_FIRST: Duration = Duration::from_secs(1);
/// The longest wait between two heals of one target.
const BACKOFF_MAX: Duration = Duration::from_secs(30);
/// At most this many heals start within [`RATE_WINDOW`], over all targets.
const RATE_LIMIT: usize = 30;
const RATE_WINDOW: Duration = Duration::from_secs(60);

/// Failures in a row and when the next attempt may start, per target; the starts
/// of recent heals.
#[derive(Debug, Default)]
pub struct Schedule {
    failures: HashMap<PathBuf, (u32, Instant)>,
    recent: VecDeque<Instant>,
}

impl Schedule {
    /// Whether a heal of `target` may start `now`; if so it is counted.
    pub fn may_start(&mut self, target: &Path, now: Instant) -> bool {
        if self
            .failures
            .get(target)
            .is_some_and(|&(_, next)| now < next)
        {
            return false;
        }
        while self
            .recent
            .front()
            .is_some_and(|&t| now.duration_since(t) >= RATE_WINDOW)
        {
            self.recent.pop_front();
        }
        if self.recent.len() >= RATE_LIMIT {
            return false;
        }
        self.recent.push_back(now);
        true
    }

    /// A heal of `target` failed at `now`: the next waits twice as long as the last.
    pub fn failed(&mut self, target: &Path, now: Instant) {
        let n = self.failures.get(target).map_or(0, |&(n, _)| n) + 1;
        let wait = BACKOFF_FIRST
            .saturating_mul(1 << (n - 1).min(16))
            .min(BACKOFF_MAX);
        self.failures.insert(target.to_owned(), (n, now + wait));
    }

    /// A heal of `target` succeeded (or the target is gone): no more backoff.
    pub fn forget(&mut self, target: &Path) {
        self.failures.remove(target);
    }
}

#[derive(Default)]
pub struct Healer {
    /// The request of each mount made since the daemon started, secrets included.
    requests: Mutex<HashMap<PathBuf, MountRequest>>,
    pub(super) schedule: Mutex<Schedule>,
    /// Targets already reported not healable: reported once, never retried.
    reported: Mutex<HashSet<PathBuf>>,
    last: Mutex<HashMap<PathBuf, HealReport>>,
    /// The device id of the mount on each target, to find binds of it elsewhere
    /// once its client has unmounted it.
    devices: Mutex<HashMap<PathBuf, (u32, u32)>>,
}

impl Healer {
    /// Keeps the request of a mount just made, to make it again.
    pub fn remember(&self, req: &MountRequest) {
        self.requests
            .lock()
            .unwrap()
            .insert(req.target.clone(), req.clone());
    }

    /// Keeps the device id of the mount on `target`.
    pub fn set_device(&self, target: &Path, device: (u32, u32)) {
        self.devices
            .lock()
            .unwrap()
            .insert(target.to_owned(), device);
    }

    pub fn device(&self, target: &Path) -> Option<(u32, u32)> {
        self.devices.lock().unwrap().get(target).copied()
    }

    /// Forgets the mount on `target` (unmounted): its secrets leave memory.
    pub fn forget(&self, target: &Path) {
        self.devices.lock().unwrap().remove(target);
        self.requests.lock().unwrap().remove(target);
        self.schedule.lock().unwrap().forget(target);
        self.reported.lock().unwrap().remove(target);
        self.last.lock().unwrap().remove(target);
    }

    /// The request that makes `record` again: the one kept in memory, else one
    /// rebuilt from the record when it lost nothing to redaction. `None`: the
    /// mount needs secrets this daemon does not hold (it was made before a restart).
    pub fn request(&self, record: &MountRecord) -> Option<MountRequest> {
        if let Some(req) = self.requests.lock().unwrap().get(&record.target) {
            return Some(req.clone());
        }
        let redacted = |s: &str| s.contains(REDACTED);
        if redacted(&record.source) || record.options.iter().any(|o| redacted(o)) {
            return None;
        }
        Some(MountRequest {
            source: record.source.clone(),
            target: record.target.clone(),
            fstype: record.fstype.clone(),
            options: record.options.clone(),
            ..MountRequest::default()
        })
    }

    /// Whether `target` is reported not healable for the first time.
    pub fn first_report(&self, target: &Path) -> bool {
        self.reported.lock().unwrap().insert(target.to_owned())
    }

    pub fn set_last(&self, target: &Path, report: HealReport) {
        self.last.lock().unwrap().insert(target.to_owned(), report);
    }

    pub fn last(&self, target: &Path) -> Option<HealReport> {
        self.last.lock().unwrap().get(target).cloned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_up_to_its_bound_and_a_success_clears_it() {
        let mut s = Schedule::default();
        let t = Path::new("/k/pods/a/v");
        let t0 = Instant::now();
        assert!(s.may_start(t, t0));
        s.failed(t, t0);
        assert!(!s.may_start(t, t0 + Duration::from_millis(999)));
        assert!(s.may_start(t, t0 + Duration::from_secs(1)));
        s.failed(t, t0 + Duration::from_secs(1));
        assert!(!s.may_start(t, t0 + Duration::from_millis(2999)));
        assert!(s.may_start(t, t0 + Duration::from_secs(3)));
        for _ in 0..20 {
            s.failed(t, t0);
        }
        assert!(!s.may_start(t, t0 + Duration::from_secs(29)));
        assert!(s.may_start(t, t0 + BACKOFF_MAX));
        // Another target is not held back by this one.
        s.failed(t, t0);
        assert!(s.may_start(Path::new("/k/pods/b/v"), t0));
        s.forget(t);
        assert!(s.may_start(t, t0));
    }

    #[test]
    fn at_most_the_rate_limit_start_within_the_window() {
        let mut s = Schedule::default();
        let t0 = Instant::now();
        for i in 0..RATE_LIMIT {
            assert!(s.may_start(Path::new(&format!("/t/{i}")), t0));
        }
        assert!(!s.may_start(Path::new("/t/more"), t0 + Duration::from_secs(59)));
        assert!(s.may_start(Path::new("/t/more"), t0 + RATE_WINDOW));
    }

    #[test]
    fn a_mount_with_secrets_is_healable_only_from_memory() {
        let h = Healer::default();
        let req = MountRequest {
            source: "root@h:/e".into(),
            target: "/k/pods/a/v".into(),
            fstype: "fuse.sshfs".into(),
            options: vec!["port=22".into(), "password=hunter2".into()],
            ..MountRequest::default()
        };
        let record = MountRecord {
            target: req.target.clone(),
            executor: "vcs/sshfs".into(),
            source: req.source.clone(),
            fstype: req.fstype.clone(),
            options: vec!["port=22".into(), "password=<redacted>".into()],
            mount_id: 9,
            unique: None,
        };
        // After a restart nothing is remembered: not healable.
        assert_eq!(h.request(&record), None);
        h.remember(&req);
        assert_eq!(h.request(&record), Some(req.clone()));
        h.forget(&req.target);
        assert_eq!(h.request(&record), None);
        // A record that lost nothing to redaction is its own request.
        let plain = MountRecord {
            options: vec!["port=22".into()],
            ..record
        };
        let rebuilt = h.request(&plain).unwrap();
        assert_eq!(
            (rebuilt.source, rebuilt.options),
            (req.source, vec!["port=22".to_owned()])
        );
        assert!(h.first_report(&req.target));
        assert!(!h.first_report(&req.target));
    }
}
