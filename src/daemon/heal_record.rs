//! Which mount a heal may act on, and what it records. A record's reusable mount
//! id names another mount once the kernel has given it again (a restarted client
//! frees its ids, and the next mount anywhere takes the lowest), so a heal knows
//! its mount by the record's unique id where the record has one in the
//! executor's namespace (else, as an unmount does, by the target), acts only
//! while the record of that id is still the one it set out to heal, and never
//! writes over the record of another mount.

use tracing::warn;

use crate::api::wire::{MountRecord, UniqueMount};
use crate::daemon::error::HealError;
use crate::daemon::mount::lookup_error;
use crate::daemon::Daemon;
use crate::ns::mountinfo::Mount;
use crate::ns::namespace::Namespace;

impl Daemon {
    /// Whether the record of `record`'s mount id is still `record`: not
    /// forgotten, and not the record of another mount that was given its id.
    pub(super) fn still_recorded(&self, record: &MountRecord) -> bool {
        self.record
            .get(&record.target, record.mount_id)
            .is_some_and(|e| e.record == *record)
    }

    /// Checks that `stale`, the mount on the record's target in the daemon's
    /// namespace, is a copy of the recorded mount: when the record holds a
    /// unique id of the executor's namespace `ns`, the mount on the target there
    /// has it and the same superblock. Otherwise (a kernel without unique ids,
    /// or a namespace made again) the mount on the target is taken for it.
    pub(super) fn is_recorded_mount(
        &self,
        record: &MountRecord,
        ns: &Namespace,
        stale: &Mount,
    ) -> Result<(), HealError> {
        let Some(unique) = ns.recorded_unique(record.unique) else {
            return Ok(());
        };
        let target = record.target.as_path();
        let theirs = ns
            .mount_at(target)
            .map_err(|source| lookup_error(target, ns, source))?;
        let same = theirs.is_some_and(|m| {
            (m.major, m.minor) == (stale.major, stale.minor)
                && ns.unique_mount_at(target, m.id).map(|u| u.id) == Some(unique)
        });
        match same {
            true => Ok(()),
            false => Err(HealError::NotRecorded {
                target: target.to_owned(),
                mount_id: record.mount_id,
            }),
        }
    }

    /// Gives the record of the healed mount `record` the ids of the mount made in
    /// its place: `id`, unless another record holds it (the kernel gave that
    /// mount's id to this one), which is kept; then the record keeps its own
    /// reusable id and takes the `unique` one, which tells the mount from now on.
    /// Returns the id recorded.
    pub(super) fn rerecord(
        &self,
        record: &MountRecord,
        id: u32,
        unique: Option<UniqueMount>,
    ) -> Result<u32, HealError> {
        let target = record.target.as_path();
        if !self.still_recorded(record) {
            return Err(HealError::RecordChanged {
                target: target.to_owned(),
                mount_id: record.mount_id,
            });
        }
        let held = self.record.with_id(id).filter(|_| id != record.mount_id);
        let recorded = match held {
            Some(other) => {
                warn!(target = %target.display(), mount_id = id, held_by = %other.record.target.display(),
                    "the healed mount's id is recorded for another mount: the record keeps its own id");
                record.mount_id
            }
            None => id,
        };
        self.record
            .replace_mount_id(target, record.mount_id, recorded, unique)
            .map_err(|source| HealError::Record {
                target: target.to_owned(),
                source,
            })?;
        Ok(recorded)
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::api::wire::MountRequest;
    use crate::daemon::pipeline_tests::{Fake, Node, ROOT};
    use crate::mount::syscall::fake::Recording;

    #[tokio::test]
    async fn a_heal_never_writes_over_the_record_of_another_mount() {
        let node = Node::new();
        let exec = Fake::new(&node, &["exec", "host", "own"], false);
        let d = node.daemon(exec, Arc::new(Recording::default())).await;
        let other = node.target.with_file_name("w");
        std::fs::create_dir_all(&other).unwrap();
        let healed = d.mount(ROOT, node.request("tmpfs")).await.unwrap().record;
        let req = MountRequest {
            target: other,
            ..node.request("tmpfs")
        };
        let secret = d.mount(ROOT, req).await.unwrap().record;
        assert_eq!((healed.mount_id, secret.mount_id), (100, 101));

        // The fresh mount was given the id another record holds (its mount is
        // gone): that record stays whole, the healed one keeps its own id and
        // takes the fresh mount's unique id.
        let fresh = UniqueMount {
            id: 7,
            namespace: 1,
        };
        let kept = d.rerecord(&healed, 101, Some(fresh)).unwrap();
        assert_eq!(kept, 100);
        let now = MountRecord {
            unique: Some(fresh),
            ..healed.clone()
        };
        assert_eq!(d.mounts(), vec![now.clone(), secret.clone()]);
        // A free id it takes.
        assert_eq!(d.rerecord(&now, 300, None).unwrap(), 300);
        let moved = MountRecord {
            mount_id: 300,
            unique: None,
            ..healed.clone()
        };
        assert_eq!(d.mounts(), vec![moved.clone(), secret.clone()]);

        // What a check found on this target, whose id the record gives another
        // mount now: no heal starts on it, and none re-records that mount.
        let found = MountRecord {
            mount_id: 101,
            ..moved.clone()
        };
        assert!(d.still_recorded(&moved));
        assert!(!d.still_recorded(&found));
        let err = d.rerecord(&found, 400, None).unwrap_err();
        assert!(matches!(err, HealError::RecordChanged { .. }), "{err}");
        assert_eq!(d.mounts(), vec![moved, secret]);
    }
}
