//! The daemon's record of what it mounted, which must survive a SIGKILL at any
//! instant and cost the same per request at 10 or 10,000 mounts. One small file
//! per mount, named by its mount id (`mounts/ID.json`), so stacked mounts never
//! share an entry and a request writes only its own; before an executor runs, an
//! intent (`intents/N.json`) is written durably, and it is turned into the mount's
//! file once the mount is verified, or removed once a failed one is undone. A
//! restart resolves each intent against the mount table: the mount it made is
//! adopted, an intent that made nothing is dropped. Files are written and
//! fsynced outside the lock that guards the in-memory index.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

use serde::{Deserialize, Serialize};

use crate::api::wire::{MountRecord, UniqueMount};
use crate::daemon::state_dir::{StateDir, StateDirError};
use crate::ns::mountinfo::{Mount, MountTable};

#[derive(Debug, thiserror::Error)]
pub enum RecordError {
    #[error(transparent)]
    Dir(#[from] StateDirError),
    #[error("cannot read the record in {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("the record {path} is not valid: {source}")]
    Parse {
        path: PathBuf,
        source: serde_json::Error,
    },
    #[error("cannot write the record {path}: {source}")]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
}

/// A mount the daemon made, or means to make: what the record files hold.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Entry {
    #[serde(flatten)]
    pub record: MountRecord,
    /// The type the caller asked for ("" for a bind, "nfs" for what became
    /// nfs4): with source and options, what makes a retry the same request.
    #[serde(default)]
    pub asked_fstype: String,
    /// In an intent: the mount on the target before the executor ran, so a
    /// restart tells the mount it made from one that was already there.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub before: Option<u32>,
}

/// A durable intent, until it is committed or abandoned.
#[derive(Debug)]
pub struct Intent {
    id: u64,
}

/// An intent a killed daemon left, for [`Record::resolve`].
#[derive(Debug)]
pub struct Pending {
    intent: Intent,
    entry: Entry,
}

/// What a restart found.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Recovery {
    /// Records whose mount vanished while the daemon was away: dropped.
    pub vanished: Vec<MountRecord>,
    /// Intents whose mount was found made: recorded.
    pub adopted: Vec<MountRecord>,
    /// Intents that made no mount: dropped (their `mount_id` is 0).
    pub abandoned: Vec<MountRecord>,
}

pub struct Record {
    mounts: StateDir,
    intents: StateDir,
    index: Mutex<Index>,
    next_intent: AtomicU64,
}

/// The records in memory, by mount id and by target.
#[derive(Default)]
struct Index {
    by_id: HashMap<u32, Entry>,
    by_target: HashMap<PathBuf, Vec<u32>>,
}

impl Index {
    fn insert(&mut self, entry: Entry) {
        let id = entry.record.mount_id;
        let ids = self
            .by_target
            .entry(entry.record.target.clone())
            .or_default();
        if !ids.contains(&id) {
            ids.push(id);
        }
        if let Some(old) = self.by_id.insert(id, entry) {
            if old.record.target != self.by_id[&id].record.target {
                self.unlink_target(&old.record.target, id);
            }
        }
    }

    fn remove(&mut self, id: u32) -> Option<Entry> {
        let entry = self.by_id.remove(&id)?;
        self.unlink_target(&entry.record.target, id);
        Some(entry)
    }

    fn unlink_target(&mut self, target: &Path, id: u32) {
        if let Some(ids) = self.by_target.get_mut(target) {
            ids.retain(|&i| i != id);
            if ids.is_empty() {
                self.by_target.remove(target);
            }
        }
    }
}

/// The whole-file record of earlier versions.
const LEGACY: &str = "mounts.json";

fn mount_file(id: u32) -> String {
    format!("{id}.json")
}

fn intent_file(id: u64) -> String {
    format!("{id}.json")
}

impl Record {
    /// Opens the record in the state directory (`mounts/` and `intents/`, created
    /// 0700), loading every mount and leaving the intents for [`Record::resolve`].
    /// A `mounts.json` of an older daemon is taken over and removed.
    pub fn open(state: &StateDir) -> Result<(Self, Vec<Pending>), RecordError> {
        let mounts = state.subdir("mounts")?;
        let intents = state.subdir("intents")?;
        let mut index = Index::default();
        for (_, entry) in read_all(&mounts)? {
            index.insert(entry);
        }
        let pending = read_all(&intents)?;
        let next = pending
            .iter()
            .filter_map(|(name, _)| name.strip_suffix(".json")?.parse::<u64>().ok())
            .max()
            .map_or(0, |n| n + 1);
        let record = Record {
            mounts,
            intents,
            index: Mutex::new(index),
            next_intent: AtomicU64::new(next),
        };
        record.take_over_legacy(state)?;
        let pending = pending
            .into_iter()
            .map(|(name, entry)| Pending {
                intent: Intent {
                    id: name
                        .strip_suffix(".json")
                        .and_then(|n| n.parse().ok())
                        .unwrap_or(0),
                },
                entry,
            })
            .collect();
        Ok((record, pending))
    }

    /// The whole-file record of earlier versions: each entry becomes a file.
    fn take_over_legacy(&self, state: &StateDir) -> Result<(), RecordError> {
        let path = state.path().join(LEGACY);
        let read = state.read(LEGACY).map_err(|source| RecordError::Read {
            path: path.clone(),
            source,
        })?;
        let Some(bytes) = read else {
            return Ok(());
        };
        let old: Vec<MountRecord> =
            serde_json::from_slice(&bytes).map_err(|source| RecordError::Parse {
                path: path.clone(),
                source,
            })?;
        for record in old {
            self.write(Entry {
                asked_fstype: record.fstype.clone(),
                record,
                before: None,
            })?;
        }
        state
            .remove(LEGACY)
            .map_err(|source| RecordError::Write { path, source })
    }

    /// Resolves what the last daemon left: each record is kept when its mount is
    /// still on its target in its executor's `table` (or when that table cannot be
    /// read now), and dropped otherwise; each intent is adopted when a mount it
    /// could have made is on its target (not the one that was there before, and
    /// not recorded), and dropped otherwise. Linear in records plus table sizes.
    /// Nothing is unmounted.
    pub fn resolve(
        &self,
        pending: Vec<Pending>,
        table_of: impl Fn(&str) -> Option<MountTable>,
    ) -> Result<Recovery, RecordError> {
        let mut tables: HashMap<String, Option<Lookup>> = HashMap::new();
        let mut lookup = |executor: &str| -> Option<Lookup> {
            tables
                .entry(executor.to_owned())
                .or_insert_with(|| table_of(executor).map(Lookup::new))
                .clone()
        };
        let mut recovery = Recovery::default();
        let recorded: Vec<Entry> = self.index.lock().unwrap().by_id.values().cloned().collect();
        for entry in recorded {
            let Some(table) = lookup(&entry.record.executor) else {
                continue;
            };
            let r = &entry.record;
            let there = table.by_id.get(&r.mount_id);
            if there.is_none_or(|m| m.target != r.target) {
                self.remove(r.mount_id)?;
                recovery.vanished.push(entry.record);
            }
        }
        for Pending { intent, entry } in pending {
            let Some(table) = lookup(&entry.record.executor) else {
                continue;
            };
            let made = table
                .top
                .get(&entry.record.target)
                .filter(|m| Some(m.id) != entry.before && self.get(m.id).is_none());
            match made {
                Some(m) => {
                    let record = MountRecord {
                        mount_id: m.id,
                        fstype: m.fstype.clone(),
                        ..entry.record
                    };
                    self.write(Entry {
                        record: record.clone(),
                        asked_fstype: entry.asked_fstype,
                        before: None,
                    })?;
                    recovery.adopted.push(record);
                }
                None => recovery.abandoned.push(entry.record),
            }
            self.abandon(intent)?;
        }
        Ok(recovery)
    }

    /// Writes `entry` durably as an intent, before the executor runs.
    pub fn intend(&self, entry: &Entry) -> Result<Intent, RecordError> {
        let id = self.next_intent.fetch_add(1, Ordering::Relaxed);
        let name = intent_file(id);
        let bytes = serde_json::to_vec(entry).expect("records serialize");
        self.intents
            .replace(&name, &bytes, 0o600)
            .map_err(|source| RecordError::Write {
                path: self.intents.path().join(&name),
                source,
            })?;
        Ok(Intent { id })
    }

    /// Records a verified mount, then forgets the intent that announced it. When
    /// the mount cannot be recorded, the intent is handed back.
    pub fn commit(&self, intent: Intent, entry: Entry) -> Result<(), (RecordError, Intent)> {
        if let Err(e) = self.write(entry) {
            return Err((e, intent));
        }
        // Recorded: a leftover intent is resolved as this mount at the next start.
        if let Err(e) = self.abandon(intent) {
            tracing::warn!(error = %e, "cannot forget the intent of a recorded mount");
        }
        Ok(())
    }

    /// Rewrites the record of a mount the daemon made, after a change to it (a
    /// remount, a propagation change): still one record, by its mount id.
    pub fn update(&self, entry: Entry) -> Result<(), RecordError> {
        self.write(entry)
    }

    /// Forgets an intent whose attempt left nothing.
    pub fn abandon(&self, intent: Intent) -> Result<(), RecordError> {
        let name = intent_file(intent.id);
        self.intents
            .remove(&name)
            .map_err(|source| RecordError::Write {
                path: self.intents.path().join(&name),
                source,
            })
    }

    /// Gives the record of the mount `old` the ids of the mount made in its place
    /// (a heal). The new entry's file is written durably before the old one is
    /// removed, so a kill between the two leaves both, and a restart drops the one
    /// whose mount is gone. False when no record has that id.
    pub fn replace_mount_id(
        &self,
        old: u32,
        new: u32,
        unique: Option<UniqueMount>,
    ) -> Result<bool, RecordError> {
        let Some(entry) = self.get(old) else {
            return Ok(false);
        };
        let record = MountRecord {
            mount_id: new,
            unique,
            ..entry.record.clone()
        };
        if record != entry.record {
            self.write(Entry { record, ..entry })?;
            if old != new {
                self.remove(old)?;
            }
        }
        Ok(true)
    }

    /// Drops the record of the mount `id` (its mount is gone).
    pub fn remove(&self, id: u32) -> Result<(), RecordError> {
        let name = mount_file(id);
        self.mounts
            .remove(&name)
            .map_err(|source| RecordError::Write {
                path: self.mounts.path().join(&name),
                source,
            })?;
        self.index.lock().unwrap().remove(id);
        Ok(())
    }

    pub fn get(&self, id: u32) -> Option<Entry> {
        self.index.lock().unwrap().by_id.get(&id).cloned()
    }

    /// The recorded mounts on `target`, oldest first.
    pub fn on_target(&self, target: &Path) -> Vec<Entry> {
        let index = self.index.lock().unwrap();
        index
            .by_target
            .get(target)
            .map(|ids| ids.iter().map(|id| index.by_id[id].clone()).collect())
            .unwrap_or_default()
    }

    /// Every record, by target.
    pub fn mounts(&self) -> Vec<MountRecord> {
        let mut all: Vec<MountRecord> = {
            let index = self.index.lock().unwrap();
            index.by_id.values().map(|e| e.record.clone()).collect()
        };
        all.sort_by(|a, b| a.target.cmp(&b.target).then(a.mount_id.cmp(&b.mount_id)));
        all
    }

    /// Writes the file of `entry`'s mount, then indexes it.
    fn write(&self, entry: Entry) -> Result<(), RecordError> {
        let name = mount_file(entry.record.mount_id);
        let bytes = serde_json::to_vec_pretty(&Entry {
            before: None,
            ..entry.clone()
        })
        .expect("records serialize");
        self.mounts
            .replace(&name, &bytes, 0o600)
            .map_err(|source| RecordError::Write {
                path: self.mounts.path().join(&name),
                source,
            })?;
        self.index.lock().unwrap().insert(entry);
        Ok(())
    }
}

/// A table indexed for a restart: by id, and the mount on top of each target.
#[derive(Clone)]
struct Lookup {
    by_id: std::rc::Rc<HashMap<u32, Mount>>,
    top: std::rc::Rc<HashMap<PathBuf, Mount>>,
}

impl Lookup {
    fn new(table: MountTable) -> Self {
        let mut by_id = HashMap::with_capacity(table.mounts.len());
        let mut top = HashMap::with_capacity(table.mounts.len());
        // Later lines are mounted later: the last mount on a target is on top.
        for m in table.mounts {
            top.insert(m.target.clone(), m.clone());
            by_id.insert(m.id, m);
        }
        Lookup {
            by_id: by_id.into(),
            top: top.into(),
        }
    }
}

fn read_all(dir: &StateDir) -> Result<Vec<(String, Entry)>, RecordError> {
    let files = dir.files().map_err(|source| RecordError::Read {
        path: dir.path().to_owned(),
        source,
    })?;
    files
        .into_iter()
        .map(|(name, bytes)| {
            let entry = serde_json::from_slice(&bytes).map_err(|source| RecordError::Parse {
                path: dir.path().join(&name),
                source,
            })?;
            Ok((name, entry))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(target: &str, id: u32) -> Entry {
        Entry {
            record: MountRecord {
                target: target.into(),
                executor: "host".into(),
                source: "tmpfs".into(),
                fstype: "tmpfs".into(),
                options: vec!["size=1m".into()],
                mount_id: id,
                unique: None,
            },
            asked_fstype: "tmpfs".into(),
            before: None,
        }
    }

    fn open(dir: &Path) -> (Record, Vec<Pending>) {
        Record::open(&StateDir::open(&dir.join("state")).unwrap()).unwrap()
    }

    #[test]
    fn a_restart_keeps_drops_and_adopts_each_by_the_mount_table() {
        let dir = tempfile::tempdir().unwrap();
        let (r, _) = open(dir.path());
        let (a, b) = (entry("/k/pods/a", 40), entry("/k/pods/b", 41));
        for e in [&a, &b] {
            let intent = r
                .intend(&Entry {
                    record: MountRecord {
                        mount_id: 0,
                        ..e.record.clone()
                    },
                    ..e.clone()
                })
                .unwrap();
            r.commit(intent, e.clone()).unwrap();
        }
        // Stacked on a: its own record, not a replacement of a's.
        let stacked = entry("/k/pods/a", 45);
        r.commit(r.intend(&stacked).unwrap(), stacked.clone())
            .unwrap();
        assert_eq!(
            r.on_target(Path::new("/k/pods/a")),
            vec![a.clone(), stacked.clone()]
        );
        r.remove(45).unwrap();
        // Killed with two intents out: one made its mount (50 on c), one did not.
        r.intend(&Entry {
            before: Some(7),
            ..entry("/k/pods/c", 0)
        })
        .unwrap();
        r.intend(&entry("/k/pods/d", 0)).unwrap();
        drop(r);

        let (r, pending) = open(dir.path());
        assert_eq!(r.mounts(), vec![a.record.clone(), b.record.clone()]);
        assert_eq!(pending.len(), 2);
        // 41 vanished; 40 is there; 50 is on c, over 7 that was there before.
        let table = MountTable::parse(
            b"27 1 0:1 / / rw - ext4 /dev/vda rw\n\
              40 27 0:50 / /k/pods/a rw - tmpfs tmpfs rw\n\
              7 27 0:51 / /k/pods/c rw - tmpfs tmpfs rw\n\
              50 7 0:52 / /k/pods/c rw - tmpfs tmpfs rw\n",
        )
        .unwrap();
        let found = r.resolve(pending, |_| Some(table.clone())).unwrap();
        assert_eq!(found.vanished, vec![b.record.clone()]);
        assert_eq!(found.adopted.len(), 1);
        assert_eq!(
            (found.adopted[0].mount_id, found.adopted[0].target.as_path()),
            (50, Path::new("/k/pods/c"))
        );
        assert_eq!(found.abandoned.len(), 1);
        assert_eq!(found.abandoned[0].target, Path::new("/k/pods/d"));
        drop(r);

        // Resolved for good: nothing pending, the adopted mount recorded.
        let (r, pending) = open(dir.path());
        assert!(pending.is_empty());
        assert_eq!(
            r.mounts().iter().map(|m| m.mount_id).collect::<Vec<_>>(),
            vec![40, 50]
        );
        // An executor that cannot be read now keeps its records.
        assert_eq!(
            r.resolve(Vec::new(), |_| None).unwrap(),
            Recovery::default()
        );
        assert_eq!(r.mounts().len(), 2);
    }

    #[test]
    fn a_heal_gives_the_record_the_new_mount_id_durably() {
        let dir = tempfile::tempdir().unwrap();
        let (r, _) = open(dir.path());
        let (a, b) = (entry("/k/pods/a", 40), entry("/k/pods/b", 41));
        for e in [&a, &b] {
            r.commit(r.intend(e).unwrap(), e.clone()).unwrap();
        }
        assert!(r.replace_mount_id(40, 77, None).unwrap());
        assert!(!r.replace_mount_id(40, 78, None).unwrap());
        // The same id again (the kernel reused it): the record stays.
        assert!(r.replace_mount_id(41, 41, None).unwrap());
        let healed = MountRecord {
            mount_id: 77,
            ..a.record.clone()
        };
        assert_eq!(r.get(40), None);
        assert_eq!(
            r.on_target(Path::new("/k/pods/a"))
                .into_iter()
                .map(|e| e.record)
                .collect::<Vec<_>>(),
            vec![healed.clone()]
        );
        drop(r);
        let (r, _) = open(dir.path());
        assert_eq!(r.mounts(), vec![healed, b.record]);
    }

    #[test]
    fn an_older_daemons_record_is_taken_over() {
        let dir = tempfile::tempdir().unwrap();
        let state = StateDir::open(&dir.path().join("state")).unwrap();
        let old = serde_json::to_vec(&vec![entry("/k/pods/a", 40).record]).unwrap();
        state.replace(LEGACY, &old, 0o600).unwrap();
        let (r, _) = Record::open(&state).unwrap();
        assert_eq!(r.mounts(), vec![entry("/k/pods/a", 40).record]);
        assert_eq!(state.read(LEGACY).unwrap(), None);
    }

    #[test]
    fn a_corrupt_record_is_an_error_naming_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let state = StateDir::open(&dir.path().join("state")).unwrap();
        state
            .subdir("mounts")
            .unwrap()
            .replace("40.json", b"{not json", 0o600)
            .unwrap();
        let err = Record::open(&state).err().unwrap().to_string();
        assert!(err.contains("mounts/40.json is not valid"), "{err}");
    }
}
