//! A mount namespace as verification and check see it: named for messages, read
//! through the mountinfo of one of its processes, asked about one target by
//! statx(2) and statmount(2), and told apart from another by its `ns/mnt`.

use std::collections::HashSet;
use std::path::Path;
use std::rc::Rc;

use tracing::debug;

use crate::api::wire::UniqueMount;
use crate::ns::mountinfo::{Mount, MountTable, MountinfoError, ProcRoot};
use crate::ns::{listmount, statmount};

/// A mount namespace, seen through the mountinfo of one of its processes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Namespace {
    /// How messages name it: "host", "caller (pid 4242)".
    pub name: String,
    pub proc: ProcRoot,
    pub pid: Option<u32>,
}

impl Namespace {
    pub fn new(name: impl Into<String>, proc: ProcRoot, pid: Option<u32>) -> Self {
        Namespace {
            name: name.into(),
            proc,
            pid,
        }
    }

    pub fn table(&self) -> Result<MountTable, MountinfoError> {
        MountTable::read(&self.proc, self.pid)
    }

    /// The visible mount on exactly `target` here, or `None`. Looked up by statx(2)
    /// and statmount(2), at a cost independent of the table's size, and read from
    /// the table when the kernel cannot answer so.
    pub fn mount_at(&self, target: &Path) -> Result<Option<Mount>, MountinfoError> {
        let looked_up = statmount::mount_at(&self.proc, self.pid, target).or_else(|e| {
            // A process whose root and ns/mnt the daemon may not open (pid 1
            // holding capabilities the daemon lacks) may share the daemon's
            // namespace, where the lookup needs no access to it.
            match e.refused() && self.is_own() {
                true => statmount::mount_at(&self.proc, None, target),
                false => Err(e),
            }
        });
        match looked_up {
            Ok(found) => Ok(found),
            Err(e) => {
                debug!(namespace = %self.name, error = %e, "reading mountinfo instead of statmount(2)");
                Ok(self.table()?.by_target(target).cloned())
            }
        }
    }

    /// The mount `id` on exactly `target` here by its unique id, for the record;
    /// `None` where the kernel has no unique mount or namespace ids, or when `id`
    /// is no longer there.
    pub fn unique_mount_at(&self, target: &Path, id: u32) -> Option<UniqueMount> {
        let unique = statmount::unique_id_at(&self.proc, self.pid, target, id);
        Some(UniqueMount {
            id: unique.ok().flatten()?,
            namespace: self.unique_id()?,
        })
    }

    /// The unique id of a recorded mount when it names a mount of this namespace:
    /// a namespace made again (a restarted container) holds copies of the mount
    /// under ids of their own. `None`: compare by the reusable id and the target.
    pub fn recorded_unique(&self, recorded: Option<UniqueMount>) -> Option<u64> {
        recorded
            .filter(|u| self.unique_id() == Some(u.namespace))
            .map(|u| u.id)
    }

    /// This namespace's own id (`NS_GET_MNTNS_ID`, Linux 6.11), never given to
    /// another one while the machine runs.
    pub fn unique_id(&self) -> Option<u64> {
        statmount::mount_namespace_id(&self.proc, self.pid).ok()
    }

    /// This namespace's own id with the unique ids of every mount in it (Linux
    /// 6.11), or `None`.
    pub fn unique_mount_ids(&self) -> Option<(u64, HashSet<u64>)> {
        let id = self.unique_id()?;
        Some((id, listmount::unique_ids(id).ok()?))
    }

    /// Whether this is the reading process's own mount namespace: the same ns/mnt
    /// or, when that may not be opened, the same first mount (a mount belongs to
    /// exactly one namespace).
    pub fn is_own(&self) -> bool {
        let own = Namespace::new("self", self.proc.clone(), None);
        match (self.identity(), own.identity()) {
            (Some(a), Some(b)) => a == b,
            _ => {
                let first = first_mount_id(&self.proc, self.pid);
                first.is_some() && first == first_mount_id(&self.proc, None)
            }
        }
    }

    /// The device and inode of its `ns/mnt`, which are the same for two processes
    /// exactly when they share a mount namespace.
    fn identity(&self) -> Option<NamespaceId> {
        use std::os::unix::fs::MetadataExt;
        let meta = std::fs::metadata(self.proc.mount_namespace(self.pid)).ok()?;
        Some((meta.dev(), meta.ino()))
    }
}

/// The id of the first mount in the mountinfo of `pid`, read alone: the kernel
/// renders only as many lines as the read asks for.
fn first_mount_id(proc: &ProcRoot, pid: Option<u32>) -> Option<u32> {
    use std::io::Read;
    let mut head = [0u8; 16];
    let n = std::fs::File::open(proc.mountinfo(pid))
        .and_then(|mut f| f.read(&mut head))
        .ok()?;
    let digits = head[..n].split(|&b| b == b' ').next()?;
    std::str::from_utf8(digits).ok()?.parse().ok()
}

/// A mount namespace's `ns/mnt` device and inode.
type NamespaceId = (u64, u64);

/// The tables of `namespaces`, in order, reading each mount namespace once: the
/// host's and a kubelet's on the host, or the daemon's and its host executor's,
/// are one.
pub fn tables(namespaces: &[&Namespace]) -> Result<Vec<Rc<MountTable>>, MountinfoError> {
    let mut read: Vec<(Option<NamespaceId>, Rc<MountTable>)> = Vec::new();
    namespaces
        .iter()
        .map(|ns| {
            let id = ns.identity();
            if let Some((_, table)) = read.iter().find(|(seen, _)| id.is_some() && *seen == id) {
                return Ok(table.clone());
            }
            let table = Rc::new(ns.table()?);
            read.push((id, table.clone()));
            Ok(table)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ns::mountinfo::fixture::{proc_with, PLAIN};

    #[test]
    fn one_mount_namespace_is_read_once() {
        let me = Namespace::new("daemon", ProcRoot::default(), None);
        let by_pid = Namespace::new("caller", ProcRoot::default(), Some(std::process::id()));
        // No ns/mnt under this proc root: it cannot be told the same, so it is read.
        let (_d, proc) = proc_with(PLAIN);
        let unknown = Namespace::new("other", proc, None);
        let t = tables(&[&me, &unknown, &by_pid]).unwrap();
        assert!(Rc::ptr_eq(&t[0], &t[2]), "this process, by pid and as self");
        assert!(!Rc::ptr_eq(&t[0], &t[1]));
        assert_eq!(t[1].mounts.len(), 1);
        assert!(t[0].containing(Path::new("/")).is_some());
    }

    #[test]
    fn a_namespace_the_kernel_cannot_be_asked_about_is_read_from_its_table() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("4242")).unwrap();
        let table =
            format!("{PLAIN}31 27 0:40 / /var/lib/kubelet/pods/v rw shared:7 - tmpfs t rw\n");
        std::fs::write(dir.path().join("4242/mountinfo"), table).unwrap();
        // No ns/mnt and no root under this proc: statmount(2) has nothing to ask.
        let ns = Namespace::new("other", ProcRoot::new(dir.path()), Some(4242));
        let found = ns
            .mount_at(Path::new("/var/lib/kubelet/pods/v"))
            .unwrap()
            .unwrap();
        assert_eq!((found.id, found.propagation.shared), (31, Some(7)));
        assert_eq!(
            ns.mount_at(Path::new("/var/lib/kubelet/pods")).unwrap(),
            None
        );
    }

    #[test]
    fn a_namespace_whose_ns_mnt_is_closed_is_told_by_its_first_mount() {
        let (dir, proc) = proc_with(PLAIN);
        for (pid, table) in [
            ("1", PLAIN),
            ("2", "28 1 254:0 / / rw - ext4 /dev/vda rw\n"),
        ] {
            std::fs::create_dir(dir.path().join(pid)).unwrap();
            std::fs::write(dir.path().join(pid).join("mountinfo"), table).unwrap();
        }
        assert!(Namespace::new("host", proc.clone(), Some(1)).is_own());
        assert!(!Namespace::new("other", proc, Some(2)).is_own());
    }
}
