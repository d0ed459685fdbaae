//! One operation at a time on a target: later ones wait their turn (kubelets
//! retry, and 50 mounts of one target must leave one mount, not fail), up to their
//! deadline. A target's lock lives only while someone holds or waits for it.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::OwnedMutexGuard;

#[derive(Default)]
pub struct Claims {
    held: Mutex<HashMap<PathBuf, Arc<tokio::sync::Mutex<()>>>>,
}

/// The turn on one target; released when dropped.
pub struct Claim<'a> {
    claims: &'a Claims,
    target: PathBuf,
    guard: Option<OwnedMutexGuard<()>>,
}

impl Claims {
    /// Waits for the turn on `target`, at most `wait`; `None` when it did not
    /// come in time.
    pub async fn claim(&self, target: &Path, wait: Duration) -> Option<Claim<'_>> {
        let lock = self
            .held
            .lock()
            .unwrap()
            .entry(target.to_owned())
            .or_default()
            .clone();
        let mut claim = Claim {
            claims: self,
            target: target.to_owned(),
            guard: None,
        };
        // On a timeout `claim` drops without a guard, and forgets an unused lock.
        claim.guard = Some(tokio::time::timeout(wait, lock.lock_owned()).await.ok()?);
        Some(claim)
    }
}

impl Drop for Claim<'_> {
    fn drop(&mut self) {
        drop(self.guard.take());
        let mut held = self.claims.held.lock().unwrap();
        // Only the map holds it now: nobody holds or waits for this target.
        if held
            .get(&self.target)
            .is_some_and(|l| Arc::strong_count(l) == 1)
        {
            held.remove(&self.target);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn later_claims_wait_their_turn_and_locks_are_forgotten() {
        let claims = Claims::default();
        let t = Path::new("/k/pods/a");
        let first = claims.claim(t, Duration::from_secs(1)).await.unwrap();
        // Another target is free.
        assert!(claims
            .claim(Path::new("/k/pods/b"), Duration::ZERO)
            .await
            .is_some());
        // The same target is not, until the first is released.
        assert!(claims.claim(t, Duration::from_millis(20)).await.is_none());
        let waiting = claims.claim(t, Duration::from_secs(5));
        let release = async {
            tokio::time::sleep(Duration::from_millis(20)).await;
            drop(first);
        };
        let (second, ()) = tokio::join!(waiting, release);
        assert!(second.is_some());
        drop(second);
        assert!(claims.held.lock().unwrap().is_empty());
    }
}
