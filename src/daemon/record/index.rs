//! The records in memory. A record is known by its target and its mount id
//! together: a reusable id the kernel gave again may be held both by a live
//! mount's record and by the stale record of a mount that went with its
//! namespace (a restarted VCS container), which must not be written over.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::daemon::record::store::{Snapshot, Version};
use crate::daemon::record::Entry;

#[derive(Default)]
pub(super) struct Index {
    /// By target, oldest first; one per mount id on a target.
    by_target: HashMap<PathBuf, Vec<(Version, Arc<Entry>)>>,
    /// The targets whose records hold each mount id: one, but for stale records.
    by_id: HashMap<u32, Vec<PathBuf>>,
    len: usize,
}

impl Index {
    /// Indexes `entry`, kept in the file of `version`, unless a newer version of
    /// its record is indexed; the version that lost, to be removed.
    pub(super) fn insert(&mut self, version: Version, entry: Entry) -> Option<Version> {
        let id = entry.record.mount_id;
        let target = entry.record.target.clone();
        let on_target = self.by_target.entry(target.clone()).or_default();
        if let Some(slot) = on_target.iter_mut().find(|(_, e)| e.record.mount_id == id) {
            if slot.0.seq > version.seq {
                return Some(version);
            }
            let (old, _) = std::mem::replace(slot, (version, Arc::new(entry)));
            return Some(old);
        }
        on_target.push((version, Arc::new(entry)));
        self.by_id.entry(id).or_default().push(target);
        self.len += 1;
        None
    }

    /// Drops the record of the mount `id` on `target`, when `version` (if
    /// given) is still its newest.
    pub(super) fn remove(&mut self, target: &Path, id: u32, version: Option<Version>) {
        let Some(on_target) = self.by_target.get_mut(target) else {
            return;
        };
        let found = on_target
            .iter()
            .position(|(v, e)| e.record.mount_id == id && version.is_none_or(|w| w == *v));
        let Some(at) = found else {
            return;
        };
        on_target.remove(at);
        if on_target.is_empty() {
            self.by_target.remove(target);
        }
        if let Some(targets) = self.by_id.get_mut(&id) {
            targets.retain(|t| t != target);
            if targets.is_empty() {
                self.by_id.remove(&id);
            }
        }
        self.len -= 1;
    }

    /// The record of the mount `id` on `target`, with the file it is in.
    pub(super) fn get(&self, target: &Path, id: u32) -> Option<&(Version, Arc<Entry>)> {
        let on_target = self.by_target.get(target)?;
        on_target.iter().find(|(_, e)| e.record.mount_id == id)
    }

    /// A record that holds the mount id `id`, whatever its target.
    pub(super) fn with_id(&self, id: u32) -> Option<&Arc<Entry>> {
        let target = self.by_id.get(&id)?.first()?;
        self.get(target, id).map(|(_, e)| e)
    }

    /// The records on `target`, oldest first.
    pub(super) fn on_target(&self, target: &Path) -> impl Iterator<Item = &Arc<Entry>> {
        let on_target = self.by_target.get(target).map(Vec::as_slice);
        on_target.unwrap_or_default().iter().map(|(_, e)| e)
    }

    /// Gives each record kept in a file of an earlier version (SEQ 0) the
    /// version `renumber` gives its file.
    pub(super) fn renumber_legacy<E>(
        &mut self,
        mut renumber: impl FnMut(Version) -> Result<Version, E>,
    ) -> Result<(), E> {
        for (version, _) in self.by_target.values_mut().flatten() {
            if version.seq == 0 {
                *version = renumber(*version)?;
            }
        }
        Ok(())
    }

    pub(super) fn len(&self) -> usize {
        self.len
    }

    /// Every record with the file it is in.
    pub(super) fn snapshot(&self) -> Snapshot {
        self.by_target.values().flatten().cloned().collect()
    }
}
