//! The record on disk. Each version of a mount's record is a file of its own,
//! `mounts/ID-SEQ.json`, written once and never rewritten (SEQ only grows), so a
//! request writes and fsyncs one small file, and the files listed are the record.
//! A start would still open and parse every file; so a cache of their contents
//! keyed by file name (`mounts-cache.json`) is rewritten off the request path
//! every so many changes, and a start reads only the files the cache lacks. A
//! name never stands for other contents, so the cache cannot be wrong about a
//! name it holds; an old, torn or missing cache only costs reads.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::mpsc::{sync_channel, SyncSender, TrySendError};
use std::sync::{Arc, Mutex};

use serde::{Deserialize, Serialize};
use tracing::warn;

use crate::api::wire::MountRecord;
use crate::daemon::record::{Entry, RecordError};
use crate::daemon::state_dir::StateDir;

/// The cache's file, in the state directory (beside `mounts/`).
const CACHE: &str = "mounts-cache.json";

/// Changes between two rewrites of the cache: an eighth of the records, so a
/// rewrite costs a few records' worth per change, and at least this many.
const REWRITE_AFTER: usize = 256;

/// One file's version of a record: which file holds it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Version {
    pub id: u32,
    pub seq: u64,
}

impl Version {
    fn file(self) -> String {
        match self.seq {
            // What earlier versions wrote: rewritten in place, so never cached.
            0 => format!("{}.json", self.id),
            seq => format!("{}-{seq}.json", self.id),
        }
    }

    /// The version a file name holds; `None` for another name.
    fn of_file(name: &str) -> Option<Version> {
        let stem = name.strip_suffix(".json")?;
        let (id, seq) = stem.split_once('-').unwrap_or((stem, "0"));
        let version = Version {
            id: id.parse().ok()?,
            seq: seq.parse().ok()?,
        };
        // Only the canonical spelling: "07-1.json" is not the file of 7-1.
        (version.file() == name).then_some(version)
    }
}

/// What the cache file holds: by file name, each file's record and asked type
/// (`&` when written). Not an [`Entry`], whose flattened fields take serde_json
/// twice as long to read.
#[derive(Serialize, Deserialize)]
struct Cache<R, S> {
    /// Above every SEQ given out when it was written.
    next: u64,
    files: HashMap<String, (R, S)>,
}

impl Cache<MountRecord, String> {
    fn empty() -> Self {
        Cache {
            next: 0,
            files: HashMap::new(),
        }
    }
}

/// A snapshot of the record for the cache: each entry with the file it is in.
pub type Snapshot = Vec<(Version, Arc<Entry>)>;

pub struct Store {
    mounts: StateDir,
    next: AtomicU64,
    /// Changes since the cache was last asked to be rewritten.
    changes: AtomicUsize,
    /// To the thread that rewrites the cache: one snapshot waits at most.
    rewrite: SyncSender<Snapshot>,
    /// The state directory, where the cache is.
    state: Arc<StateDir>,
    /// Serializes the cache's writers (the thread, and a stop).
    writing: Arc<Mutex<()>>,
}

impl Store {
    /// Opens `mounts/` in `state` and loads every file's record: from the cache
    /// when it holds the file, from the file otherwise. Two files of one record
    /// are possible (a kill between writing the new and removing the old).
    pub fn open(state: &StateDir) -> Result<(Store, Vec<(Version, Entry)>), RecordError> {
        let mounts = state.subdir("mounts")?;
        let read_err = |source| RecordError::Read {
            path: mounts.path().to_owned(),
            source,
        };
        let mut cache = read_cache(state);
        let mut versions = Vec::new();
        let mut missing = Vec::new();
        for name in mounts.names().map_err(read_err)? {
            let Some(version) = Version::of_file(&name) else {
                warn!(file = %mounts.path().join(&name).display(), "not a record's file; left alone");
                continue;
            };
            match cache.files.remove(&name) {
                Some((record, asked_fstype)) if version.seq != 0 => {
                    let entry = Entry {
                        record,
                        asked_fstype,
                        before: None,
                    };
                    versions.push((version, entry));
                }
                _ => missing.push(name),
            }
        }
        for (name, bytes) in mounts.read_many(&missing).map_err(read_err)? {
            let entry = serde_json::from_slice(&bytes).map_err(|source| RecordError::Parse {
                path: mounts.path().join(&name),
                source,
            })?;
            versions.push((Version::of_file(&name).expect("listed as one"), entry));
        }
        let next = versions
            .iter()
            .map(|(v, _)| v.seq + 1)
            .chain([cache.next, 1])
            .max()
            .unwrap_or(1);
        let state = Arc::new(state.try_clone().map_err(|source| RecordError::Read {
            path: state.path().to_owned(),
            source,
        })?);
        let writing = Arc::new(Mutex::new(()));
        let (rewrite, snapshots) = sync_channel::<Snapshot>(1);
        let (dir, lock) = (state.clone(), writing.clone());
        std::thread::Builder::new()
            .name("record-cache".into())
            .spawn(move || {
                for snapshot in snapshots {
                    write_cache(&dir, &lock, snapshot, 0);
                }
            })
            .map_err(|source| RecordError::Write {
                path: state.path().join(CACHE),
                source,
            })?;
        let store = Store {
            mounts,
            next: AtomicU64::new(next),
            changes: AtomicUsize::new(0),
            rewrite,
            state,
            writing,
        };
        Ok((store, versions))
    }

    /// Writes `entry` durably to a file of its own: its new version.
    pub fn write(&self, entry: &Entry) -> Result<Version, RecordError> {
        let version = Version {
            id: entry.record.mount_id,
            seq: self.next.fetch_add(1, Ordering::Relaxed),
        };
        let name = version.file();
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
        Ok(version)
    }

    /// Removes the file of `version` durably.
    pub fn remove(&self, version: Version) -> Result<(), RecordError> {
        remove_file(&self.mounts, &version.file(), true)
    }

    /// Gives the file of `version`, written by an earlier version under the name
    /// it rewrote in place (`ID.json`, so never cached), the name of a version of
    /// its own, without rewriting it. A kill before the directory is synced
    /// leaves the old name, renamed again at the next start.
    pub fn renumber(&self, version: Version) -> Result<Version, RecordError> {
        let new = Version {
            id: version.id,
            seq: self.next.fetch_add(1, Ordering::Relaxed),
        };
        self.mounts
            .rename(&version.file(), &new.file())
            .map_err(|source| RecordError::Write {
                path: self.mounts.path().join(new.file()),
                source,
            })?;
        Ok(new)
    }

    /// Removes the files of `versions` (older versions of records), durably.
    pub fn remove_all(&self, versions: &[Version]) -> Result<(), RecordError> {
        for version in versions {
            remove_file(&self.mounts, &version.file(), false)?;
        }
        match versions.is_empty() {
            true => Ok(()),
            false => self.mounts.sync().map_err(|source| RecordError::Write {
                path: self.mounts.path().to_owned(),
                source,
            }),
        }
    }

    /// Counts a change; once enough have been made since the last rewrite of the
    /// cache (for `records` records), `snapshot` is taken and handed to the
    /// thread that rewrites it. A rewrite still under way keeps the count going.
    pub fn changed(&self, records: usize, snapshot: impl FnOnce() -> Snapshot) {
        let changes = self.changes.fetch_add(1, Ordering::Relaxed) + 1;
        if changes < REWRITE_AFTER.max(records / 8) {
            return;
        }
        match self.rewrite.try_send(snapshot()) {
            Ok(()) => self.changes.store(0, Ordering::Relaxed),
            Err(TrySendError::Full(_) | TrySendError::Disconnected(_)) => {}
        }
    }

    /// Rewrites the cache now, from `snapshot` (a daemon that stops).
    pub fn flush(&self, snapshot: Snapshot) {
        write_cache(
            &self.state,
            &self.writing,
            snapshot,
            self.next.load(Ordering::Relaxed),
        );
    }
}

/// The cache, or an empty one when it is missing or cannot be read (said).
fn read_cache(state: &StateDir) -> Cache<MountRecord, String> {
    let read = state.read(CACHE).map_err(|e| e.to_string());
    let parsed = read.and_then(|bytes| match bytes {
        None => Ok(Cache::empty()),
        Some(bytes) => serde_json::from_slice(&bytes).map_err(|e| e.to_string()),
    });
    parsed.unwrap_or_else(|error| {
        warn!(file = %state.path().join(CACHE).display(), %error,
            "the record's cache is not usable; reading every record's file");
        Cache::empty()
    })
}

/// Writes `snapshot` as the cache; `next` is the SEQ given out next (0: above
/// every version in it). A failure is only said: the files stay the record.
fn write_cache(state: &StateDir, writing: &Mutex<()>, snapshot: Snapshot, next: u64) {
    let next = snapshot
        .iter()
        .map(|(v, _)| v.seq + 1)
        .chain([next])
        .max()
        .unwrap_or(0);
    // No version is SEQ 0 by now: a start renames those files first.
    let files: HashMap<String, (&MountRecord, &String)> = snapshot
        .iter()
        .map(|(v, e)| (v.file(), (&e.record, &e.asked_fstype)))
        .collect();
    let bytes = serde_json::to_vec(&Cache { next, files }).expect("records serialize");
    let _one_writer = writing.lock().unwrap_or_else(|e| e.into_inner());
    if let Err(error) = state.replace(CACHE, &bytes, 0o600) {
        warn!(file = %state.path().join(CACHE).display(), %error,
            "cannot rewrite the record's cache; the next start reads more files");
    }
}

/// Removes the file `name` of `mounts`, durably when `sync`.
fn remove_file(mounts: &StateDir, name: &str, sync: bool) -> Result<(), RecordError> {
    let removed = match sync {
        true => mounts.remove(name),
        false => mounts.unlink(name),
    };
    removed.map_err(|source| RecordError::Write {
        path: mounts.path().join(name),
        source,
    })
}
