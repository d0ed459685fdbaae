//! The daemon's record of what it mounted, which must survive a SIGKILL at any
//! instant and cost the same per request at 10 or 10,000 mounts. Each mount has
//! its own small file (see [`store`]), so stacked mounts never share an entry and
//! a request writes only its own; before an executor runs, an intent
//! (`intents/N.json`) is written durably, and it is turned into the mount's file
//! once the mount is verified, or removed once a failed one is undone. A restart
//! resolves each record and intent against the mount table (see [`resolve`]).
//! Files are written and fsynced outside the lock that guards the in-memory index.

mod index;
mod resolve;
mod store;

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

use serde::{Deserialize, Serialize};

use crate::api::wire::{MountRecord, UniqueMount};
use crate::daemon::state_dir::{StateDir, StateDirError};
use index::Index;
pub use resolve::{Recovery, Seen};
use store::Store;

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

pub struct Record {
    store: Store,
    intents: StateDir,
    index: Mutex<Index>,
    next_intent: AtomicU64,
}

/// The whole-file record of earlier versions.
const LEGACY: &str = "mounts.json";

fn intent_file(id: u64) -> String {
    format!("{id}.json")
}

impl Record {
    /// Opens the record in the state directory (`mounts/` and `intents/`, created
    /// 0700), loading every mount and leaving the intents for [`Record::resolve`].
    /// A `mounts.json` of an older daemon is taken over and removed; its
    /// `mounts/ID.json` files, rewritten in place, take versioned names.
    pub fn open(state: &StateDir) -> Result<(Self, Vec<Pending>), RecordError> {
        let (store, loaded) = Store::open(state)?;
        let intents = state.subdir("intents")?;
        let mut index = Index::default();
        let older: Vec<_> = loaded
            .into_iter()
            .filter_map(|(version, entry)| index.insert(version, entry))
            .collect();
        store.remove_all(&older)?;
        index.renumber_legacy(|version| store.renumber(version))?;
        let pending = read_intents(&intents)?;
        let next = pending.iter().map(|p| p.intent.id + 1).max().unwrap_or(0);
        let record = Record {
            store,
            intents,
            index: Mutex::new(index),
            next_intent: AtomicU64::new(next),
        };
        record.take_over_legacy(state)?;
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

    /// Gives the record of the mount `old` on `target` the ids of the mount made
    /// in its place (a heal). The new entry's file is written durably before the
    /// old one is removed, so a kill between the two leaves both, and a restart
    /// drops the one whose mount is gone. False when there is no such record.
    pub fn replace_mount_id(
        &self,
        target: &Path,
        old: u32,
        new: u32,
        unique: Option<UniqueMount>,
    ) -> Result<bool, RecordError> {
        let Some(entry) = self.get(target, old) else {
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
                self.remove(target, old)?;
            }
        }
        Ok(true)
    }

    /// Drops the record of the mount `id` on `target` (its mount is gone).
    pub fn remove(&self, target: &Path, id: u32) -> Result<(), RecordError> {
        let Some(version) = self.index.lock().unwrap().get(target, id).map(|(v, _)| *v) else {
            return Ok(());
        };
        self.store.remove(version)?;
        // Unless a newer version was written meanwhile.
        self.index.lock().unwrap().remove(target, id, Some(version));
        self.changed();
        Ok(())
    }

    /// The record of the mount `id` on `target`.
    pub fn get(&self, target: &Path, id: u32) -> Option<Entry> {
        let index = self.index.lock().unwrap();
        index.get(target, id).map(|(_, e)| Entry::clone(e))
    }

    /// A record that holds the mount id `id`, whatever its target: one, unless
    /// a stale record (its mount gone with its namespace) holds it too.
    pub fn with_id(&self, id: u32) -> Option<Entry> {
        let index = self.index.lock().unwrap();
        index.with_id(id).map(|e| Entry::clone(e))
    }

    /// The recorded mounts on `target`, oldest first.
    pub fn on_target(&self, target: &Path) -> Vec<Entry> {
        let index = self.index.lock().unwrap();
        index.on_target(target).map(|e| Entry::clone(e)).collect()
    }

    /// Every record, by target.
    pub fn mounts(&self) -> Vec<MountRecord> {
        let mut all: Vec<MountRecord> = {
            let index = self.index.lock().unwrap();
            let all = index.snapshot();
            all.into_iter().map(|(_, e)| e.record.clone()).collect()
        };
        // By the targets' bytes: comparing them as paths, component by
        // component, takes most of a status's time at thousands of mounts.
        all.sort_unstable_by(|a, b| {
            let (ta, tb) = (a.target.as_os_str(), b.target.as_os_str());
            (ta.as_encoded_bytes(), a.mount_id).cmp(&(tb.as_encoded_bytes(), b.mount_id))
        });
        all
    }

    /// Writes what the next start reads first (the record's cache) now: for a
    /// daemon that stops.
    pub fn flush(&self) {
        let snapshot = self.index.lock().unwrap().snapshot();
        self.store.flush(snapshot);
    }

    /// Writes the file of `entry`'s mount, then indexes it; the version it
    /// replaces is removed.
    fn write(&self, entry: Entry) -> Result<(), RecordError> {
        let entry = Entry {
            before: None,
            ..entry
        };
        let version = self.store.write(&entry)?;
        let replaced = self.index.lock().unwrap().insert(version, entry);
        if let Some(old) = replaced {
            self.store.remove(old)?;
        }
        self.changed();
        Ok(())
    }

    /// Counts a change toward the next rewrite of the cache.
    fn changed(&self) {
        let records = self.index.lock().unwrap().len();
        self.store
            .changed(records, || self.index.lock().unwrap().snapshot());
    }
}

/// The intents a killed daemon left.
fn read_intents(dir: &StateDir) -> Result<Vec<Pending>, RecordError> {
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
            let id = name
                .strip_suffix(".json")
                .and_then(|n| n.parse().ok())
                .unwrap_or(0);
            Ok(Pending {
                intent: Intent { id },
                entry,
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ns::mountinfo::MountTable;
    use std::collections::HashSet;
    use std::sync::atomic::AtomicBool;

    /// An executor's namespace seen only through `table`.
    fn by_table(table: &MountTable) -> Option<Seen<'_>> {
        Some(Seen {
            listed: None,
            table: Box::new(|| Some(table.clone())),
        })
    }

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
        r.remove(Path::new("/k/pods/a"), 45).unwrap();
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
        let found = r.resolve(pending, |_| by_table(&table)).unwrap();
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
        let (pa, pb) = (Path::new("/k/pods/a"), Path::new("/k/pods/b"));
        assert!(r.replace_mount_id(pa, 40, 77, None).unwrap());
        assert!(!r.replace_mount_id(pa, 40, 78, None).unwrap());
        // The same id again (the kernel reused it): the record stays.
        assert!(r.replace_mount_id(pb, 41, 41, None).unwrap());
        let healed = MountRecord {
            mount_id: 77,
            ..a.record.clone()
        };
        assert_eq!(r.get(pa, 40), None);
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

    fn unique(id: u64, namespace: u64) -> Option<UniqueMount> {
        Some(UniqueMount { id, namespace })
    }

    #[test]
    fn a_restart_checks_unique_ids_by_listing_and_reads_the_table_only_for_others() {
        let dir = tempfile::tempdir().unwrap();
        let (r, _) = open(dir.path());
        let mut records = Vec::new();
        for (i, (u, ns)) in [(3_000_000_001, 5), (3_000_000_002, 5), (3_000_000_003, 6)]
            .into_iter()
            .enumerate()
        {
            let mut e = entry(&format!("/k/pods/{i}"), 40 + i as u32);
            e.record.unique = unique(u, ns);
            r.commit(r.intend(&e).unwrap(), e.clone()).unwrap();
            records.push(e.record);
        }
        drop(r);
        let (r, pending) = open(dir.path());
        // Namespace 5 lists one of its two; the record from namespace 6 (a
        // container made again) is looked up in the table, where 42 is.
        let table = MountTable::parse(
            b"27 1 0:1 / / rw - ext4 /dev/vda rw\n\
              42 27 0:50 / /k/pods/2 rw - tmpfs tmpfs rw\n",
        )
        .unwrap();
        let read = AtomicBool::new(false);
        let seen = || Seen {
            listed: Some((5, HashSet::from([3_000_000_002, 7]))),
            table: Box::new(|| {
                read.store(true, Ordering::Relaxed);
                Some(table.clone())
            }),
        };
        let found = r.resolve(pending, |_| Some(seen())).unwrap();
        assert_eq!(found.vanished, vec![records[0].clone()]);
        assert!(read.load(Ordering::Relaxed));
        assert_eq!(r.mounts(), records[1..].to_vec());

        // Every record listed: the table is not read.
        let (r, pending) = open(dir.path());
        r.remove(Path::new("/k/pods/2"), 42).unwrap();
        read.store(false, Ordering::Relaxed);
        let found = r.resolve(pending, |_| Some(seen())).unwrap();
        assert_eq!(found, Recovery::default());
        assert!(!read.load(Ordering::Relaxed), "the table was read");
    }

    /// The names in `mounts/`, sorted.
    fn files(dir: &Path) -> Vec<String> {
        let mut names: Vec<String> = std::fs::read_dir(dir.join("state/mounts"))
            .unwrap()
            .map(|f| f.unwrap().file_name().into_string().unwrap())
            .collect();
        names.sort();
        names
    }

    #[test]
    fn a_start_takes_what_the_cache_holds_and_reads_the_rest() {
        let dir = tempfile::tempdir().unwrap();
        let (r, _) = open(dir.path());
        for id in [40, 41, 42] {
            let e = entry(&format!("/k/pods/{id}"), id);
            r.commit(r.intend(&e).unwrap(), e).unwrap();
        }
        r.flush();
        // Changed after the cache was written: one written, one removed, one
        // changed (a new file, the old one gone).
        let e = entry("/k/pods/43", 43);
        r.commit(r.intend(&e).unwrap(), e).unwrap();
        r.remove(Path::new("/k/pods/41"), 41).unwrap();
        let mut changed = entry("/k/pods/42", 42);
        changed.record.options = vec!["size=2m".into()];
        r.update(changed.clone()).unwrap();
        let expected = r.mounts();
        assert_eq!(files(dir.path()), ["40-1.json", "42-5.json", "43-4.json"]);
        drop(r);
        // What the cache holds is not read again: a file it holds may be garbled
        // without the start noticing.
        let cached = dir.path().join("state/mounts/40-1.json");
        let kept = std::fs::read(&cached).unwrap();
        std::fs::write(&cached, "garbled").unwrap();
        let (r, _) = open(dir.path());
        assert_eq!(r.mounts(), expected);
        assert_eq!(r.get(Path::new("/k/pods/42"), 42), Some(changed));
        drop(r);
        std::fs::write(&cached, kept).unwrap();

        // Two versions of one mount (killed between writing one and removing the
        // other): the newer is kept, the older removed.
        let state = dir.path().join("state");
        std::fs::copy(
            state.join("mounts/43-4.json"),
            state.join("mounts/43-2.json"),
        )
        .unwrap();
        // A cache that is not usable: every file is read.
        std::fs::write(state.join("mounts-cache.json"), "{torn").unwrap();
        let (r, _) = open(dir.path());
        assert_eq!(r.mounts(), expected);
        assert_eq!(files(dir.path()), ["40-1.json", "42-5.json", "43-4.json"]);
        // New versions go on after every one seen.
        let e = entry("/k/pods/44", 44);
        r.commit(r.intend(&e).unwrap(), e).unwrap();
        assert!(files(dir.path()).contains(&"44-6.json".to_string()));
    }

    #[test]
    fn the_cache_is_rewritten_every_so_many_changes() {
        let dir = tempfile::tempdir().unwrap();
        let (r, _) = open(dir.path());
        let cache = dir.path().join("state/mounts-cache.json");
        for id in 0..300 {
            r.update(entry(&format!("/k/pods/{id}"), id)).unwrap();
        }
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while !cache.exists() {
            assert!(std::time::Instant::now() < deadline, "no cache written");
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        let text = std::fs::read_to_string(&cache).unwrap();
        assert!(
            text.contains("\"0-1.json\""),
            "{}",
            &text[..200.min(text.len())]
        );
    }

    #[test]
    fn a_reused_mount_id_never_writes_over_the_record_of_another_target() {
        let dir = tempfile::tempdir().unwrap();
        let (r, _) = open(dir.path());
        // 40's mount went with its namespace; the kernel gives 40 again.
        let (stale, fresh) = (entry("/k/pods/a", 40), entry("/k/pods/b", 40));
        for e in [&stale, &fresh] {
            r.commit(r.intend(e).unwrap(), e.clone()).unwrap();
        }
        let both = vec![stale.record.clone(), fresh.record.clone()];
        assert_eq!(r.mounts(), both);
        assert_eq!(r.with_id(40).map(|e| e.record.mount_id), Some(40));
        drop(r);
        let (r, _) = open(dir.path());
        assert_eq!(r.mounts(), both);
        r.remove(Path::new("/k/pods/b"), 40).unwrap();
        assert_eq!(r.mounts(), vec![stale.record.clone()]);
        assert_eq!(r.with_id(40), Some(stale));
    }

    #[test]
    fn an_older_daemons_files_take_versioned_names_once() {
        let dir = tempfile::tempdir().unwrap();
        let mounts = dir.path().join("state/mounts");
        std::fs::create_dir_all(&mounts).unwrap();
        let (a, b) = (entry("/k/pods/a", 40), entry("/k/pods/b", 41));
        for e in [&a, &b] {
            let name = format!("{}.json", e.record.mount_id);
            std::fs::write(mounts.join(name), serde_json::to_vec(e).unwrap()).unwrap();
        }
        let (r, _) = open(dir.path());
        let both = vec![a.record.clone(), b.record.clone()];
        assert_eq!(r.mounts(), both);
        let renamed = files(dir.path());
        assert_eq!(renamed.len(), 2);
        assert!(renamed.iter().all(|n| n.contains('-')), "{renamed:?}");
        // Cached from now on, like any version.
        r.flush();
        drop(r);
        let (r, _) = open(dir.path());
        assert_eq!(r.mounts(), both);
        assert_eq!(files(dir.path()), renamed);
        let cache = std::fs::read_to_string(dir.path().join("state/mounts-cache.json")).unwrap();
        assert!(
            renamed.iter().all(|n| cache.contains(n.as_str())),
            "{cache}"
        );
    }
}
