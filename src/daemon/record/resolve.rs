//! What a restart does with what the last daemon left. Each record is checked in
//! the namespace of the executor that made it: by its unique id among the ids
//! listmount(2) gives, where it has one from that namespace, and in the mount
//! table otherwise; each intent is resolved against the table. The table, which
//! grows with every mount and is read whole twice, is read only when a record or
//! an intent needs it. Linear in records plus what is read; nothing is unmounted.

use std::collections::{HashMap, HashSet};
use std::path::PathBuf;

use crate::api::wire::MountRecord;
use crate::daemon::record::{Entry, Pending, Record, RecordError};
use crate::ns::mountinfo::{Mount, MountTable};

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

/// How a restart sees the namespace of one executor.
pub struct Seen<'a> {
    /// The namespace's id (`NS_GET_MNTNS_ID`) and the unique ids of every mount
    /// in it, when the kernel lists them.
    pub listed: Option<(u64, HashSet<u64>)>,
    /// Reads its table (`None`: it cannot be read now); called at most once.
    pub table: Box<dyn FnOnce() -> Option<MountTable> + 'a>,
}

impl Record {
    /// Resolves what the last daemon left: each record is kept when its mount is
    /// still there in its executor's namespace as `seen_of` shows it (or when that
    /// cannot be told now), and dropped otherwise; each intent is adopted when a
    /// mount it could have made is on its target (not the one that was there
    /// before, and not recorded), and dropped otherwise.
    pub fn resolve<'a>(
        &self,
        pending: Vec<Pending>,
        mut seen_of: impl FnMut(&str) -> Option<Seen<'a>>,
    ) -> Result<Recovery, RecordError> {
        let mut executors = HashMap::new();
        let mut recovery = Recovery::default();
        let recorded = self.index.lock().unwrap().snapshot();
        for (_, entry) in recorded {
            let r = &entry.record;
            if executor(&mut executors, &mut seen_of, &r.executor).and_then(|e| e.holds(r))
                == Some(false)
            {
                self.remove(&r.target, r.mount_id)?;
                recovery.vanished.push(r.clone());
            }
        }
        for Pending { intent, entry } in pending {
            let seen = executor(&mut executors, &mut seen_of, &entry.record.executor);
            let Some(table) = seen.and_then(Executor::table) else {
                continue;
            };
            let made = table
                .top(&entry.record.target)
                .filter(|m| Some(m.id) != entry.before && self.get(&m.target, m.id).is_none());
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
}

/// The executor `name`, seen when first asked for; `None` when it cannot be.
fn executor<'m, 'a>(
    executors: &'m mut HashMap<String, Option<Executor<'a>>>,
    seen_of: &mut impl FnMut(&str) -> Option<Seen<'a>>,
    name: &str,
) -> Option<&'m mut Executor<'a>> {
    if !executors.contains_key(name) {
        executors.insert(name.to_owned(), seen_of(name).map(Executor::new));
    }
    executors.get_mut(name)?.as_mut()
}

/// One executor's namespace during a restart; its table read when first needed.
struct Executor<'a> {
    listed: Option<(u64, HashSet<u64>)>,
    read: Option<Box<dyn FnOnce() -> Option<MountTable> + 'a>>,
    table: Option<Lookup>,
}

impl<'a> Executor<'a> {
    fn new(seen: Seen<'a>) -> Self {
        Executor {
            listed: seen.listed,
            read: Some(seen.table),
            table: None,
        }
    }

    fn table(&mut self) -> Option<&Lookup> {
        if let Some(read) = self.read.take() {
            self.table = read().map(Lookup::new);
        }
        self.table.as_ref()
    }

    /// Whether the mount of `r` is still there; `None` when it cannot be told.
    /// A unique id is never given to another mount: its presence answers. A
    /// reusable id must also still be on the recorded target.
    fn holds(&mut self, r: &MountRecord) -> Option<bool> {
        if let (Some(unique), Some((namespace, ids))) = (r.unique, &self.listed) {
            if unique.namespace == *namespace {
                return Some(ids.contains(&unique.id));
            }
        }
        let table = self.table()?;
        Some(
            table
                .by_id(r.mount_id)
                .is_some_and(|m| m.target == r.target),
        )
    }
}

/// A table indexed for a restart: by id, and the mount on top of each target.
struct Lookup {
    mounts: Vec<Mount>,
    by_id: HashMap<u32, usize>,
    top: HashMap<PathBuf, usize>,
}

impl Lookup {
    fn new(table: MountTable) -> Self {
        let mut by_id = HashMap::with_capacity(table.mounts.len());
        let mut top = HashMap::with_capacity(table.mounts.len());
        // Later lines are mounted later: the last mount on a target is on top.
        for (i, m) in table.mounts.iter().enumerate() {
            top.insert(m.target.clone(), i);
            by_id.insert(m.id, i);
        }
        Lookup {
            mounts: table.mounts,
            by_id,
            top,
        }
    }

    fn by_id(&self, id: u32) -> Option<&Mount> {
        self.by_id.get(&id).map(|&i| &self.mounts[i])
    }

    fn top(&self, target: &std::path::Path) -> Option<&Mount> {
        self.top.get(target).map(|&i| &self.mounts[i])
    }
}
