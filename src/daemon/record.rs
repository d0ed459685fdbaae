//! The daemon's record of what it mounted, in a state file written atomically, so a
//! daemon killed at any moment restarts knowing its mounts.

use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};

use crate::api::wire::MountRecord;
use crate::daemon::state_file;
use crate::ns::mountinfo::MountTable;

#[derive(Debug, thiserror::Error)]
pub enum RecordError {
    #[error("cannot read the record {path}: {source}")]
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

#[derive(Debug)]
pub struct Record {
    path: PathBuf,
    mounts: Vec<MountRecord>,
}

impl Record {
    /// Opens the record in `state_dir` (created 0700 if missing); an absent file is
    /// an empty record.
    pub fn open(state_dir: &Path) -> Result<Self, RecordError> {
        let path = state_dir.join("mounts.json");
        let write_err = |source| RecordError::Write {
            path: path.clone(),
            source,
        };
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(state_dir)
            .map_err(write_err)?;
        let mounts = match std::fs::read(&path) {
            Ok(bytes) => serde_json::from_slice(&bytes).map_err(|source| RecordError::Parse {
                path: path.clone(),
                source,
            })?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
            Err(source) => return Err(RecordError::Read { path, source }),
        };
        Ok(Record { path, mounts })
    }

    pub fn mounts(&self) -> &[MountRecord] {
        &self.mounts
    }

    pub fn find(&self, target: &Path) -> Option<&MountRecord> {
        self.mounts.iter().find(|m| m.target == target)
    }

    /// Adds (or replaces, for the same target) a mount and saves.
    pub fn insert(&mut self, record: MountRecord) -> Result<(), RecordError> {
        let mut mounts = self.mounts.clone();
        mounts.retain(|m| m.target != record.target);
        mounts.push(record);
        self.replace(mounts)
    }

    /// Gives the record of the mount `old` the id of the mount made in its place
    /// (a heal) and saves; false when no record has that id.
    pub fn replace_mount_id(&mut self, old: u32, new: u32) -> Result<bool, RecordError> {
        let mut mounts = self.mounts.clone();
        let Some(m) = mounts.iter_mut().find(|m| m.mount_id == old) else {
            return Ok(false);
        };
        m.mount_id = new;
        self.replace(mounts)?;
        Ok(true)
    }

    /// Drops the mount on `target` and saves.
    pub fn remove(&mut self, target: &Path) -> Result<(), RecordError> {
        let mut mounts = self.mounts.clone();
        mounts.retain(|m| m.target != target);
        self.replace(mounts)
    }

    /// Keeps the records whose mount still exists (same id on the same target in
    /// `table`, the executor's namespace) or whose executor cannot be read now;
    /// returns the ones dropped. Nothing is unmounted.
    pub fn reconcile(
        &mut self,
        table_of: impl Fn(&str) -> Option<MountTable>,
    ) -> Result<Vec<MountRecord>, RecordError> {
        let (kept, dropped): (Vec<_>, Vec<_>) = self.mounts.iter().cloned().partition(|r| {
            table_of(&r.executor)
                .is_none_or(|t| t.by_id(r.mount_id).is_some_and(|m| m.target == r.target))
        });
        if !dropped.is_empty() {
            self.replace(kept)?;
        }
        Ok(dropped)
    }

    /// Saves `mounts` (see [`state_file::replace`]), then adopts them: on failure
    /// the record is unchanged.
    fn replace(&mut self, mounts: Vec<MountRecord>) -> Result<(), RecordError> {
        let mut bytes = serde_json::to_vec_pretty(&mounts).expect("records serialize");
        bytes.push(b'\n');
        state_file::replace(&self.path, &bytes).map_err(|source| RecordError::Write {
            path: self.path.clone(),
            source,
        })?;
        self.mounts = mounts;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(target: &str, id: u32) -> MountRecord {
        MountRecord {
            target: target.into(),
            executor: "host".into(),
            source: "tmpfs".into(),
            fstype: "tmpfs".into(),
            options: vec!["size=1m".into()],
            mount_id: id,
        }
    }

    #[test]
    fn survives_reopening_and_reconciles_against_mountinfo() {
        let dir = tempfile::tempdir().unwrap();
        let state = dir.path().join("state");
        let mut r = Record::open(&state).unwrap();
        r.insert(rec("/k/pods/a", 40)).unwrap();
        r.insert(rec("/k/pods/b", 41)).unwrap();
        r.insert(rec("/k/pods/c", 42)).unwrap();
        r.remove(Path::new("/k/pods/c")).unwrap();

        let mut r = Record::open(&state).unwrap();
        assert_eq!(r.mounts(), &[rec("/k/pods/a", 40), rec("/k/pods/b", 41)]);
        // Mount 41 vanished; 40 is still there.
        let table = MountTable::parse(b"40 1 0:50 / /k/pods/a rw - tmpfs tmpfs rw\n").unwrap();
        let dropped = r.reconcile(|_| Some(table.clone())).unwrap();
        assert_eq!(dropped, vec![rec("/k/pods/b", 41)]);
        assert_eq!(
            Record::open(&state).unwrap().mounts(),
            &[rec("/k/pods/a", 40)]
        );
        // An executor that cannot be read now (its container is down) keeps its
        // records: they are not known to be gone.
        assert!(r.reconcile(|_| None).unwrap().is_empty());
        assert_eq!(r.mounts(), &[rec("/k/pods/a", 40)]);
        // A heal gives the record the new mount's id, durably.
        assert!(r.replace_mount_id(40, 77).unwrap());
        assert!(!r.replace_mount_id(40, 78).unwrap());
        assert_eq!(
            Record::open(&state).unwrap().mounts(),
            &[rec("/k/pods/a", 77)]
        );
    }

    #[test]
    fn a_corrupt_record_is_an_error_naming_the_file() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("mounts.json"), "{not json").unwrap();
        let err = Record::open(dir.path()).unwrap_err().to_string();
        assert!(err.contains("mounts.json is not valid"), "{err}");
    }
}
