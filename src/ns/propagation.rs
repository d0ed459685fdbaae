//! Mount propagation between namespaces: making the kubelet root `rshared`, and
//! telling whether a path in one namespace reaches another (same peer group), or
//! which mount breaks the chain.

use std::fmt;
use std::path::{Path, PathBuf};
use std::rc::Rc;

use serde::Serialize;
use tracing::debug;

use crate::mount::syscall::{MntFlags, MsFlags, Syscall, SyscallError};
use crate::ns::mountinfo::{normalize, Mount, MountTable, MountinfoError, ProcRoot, Propagation};
use crate::ns::statmount;

#[derive(Debug, thiserror::Error)]
pub enum PropagationError {
    #[error(transparent)]
    Mountinfo(#[from] MountinfoError),
    #[error(transparent)]
    Syscall(#[from] SyscallError),
    #[error("{path} is not shared after mount(MS_SHARED|MS_REC): {propagation}")]
    NotShared {
        path: PathBuf,
        propagation: Propagation,
    },
    #[error("no mount holds {path} in {namespace}")]
    NoMount { path: PathBuf, namespace: String },
}

/// What `share` did and the peer group the path is in now.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Shared {
    pub path: PathBuf,
    pub peer_group: u32,
    /// The path was not a mount point and was bound onto itself first.
    pub bound: bool,
    /// It was already a shared mount point: nothing was changed.
    pub unchanged: bool,
}

/// kubelet's MakeRShared: makes `path` a mount point (a bind onto itself) when it is
/// not one, then `MS_SHARED|MS_REC`. Idempotent. `path` must be canonical.
pub fn share(sys: &dyn Syscall, proc: &ProcRoot, path: &Path) -> Result<Shared, PropagationError> {
    let table = MountTable::read(proc, None)?;
    // 1. Already a shared mount point: nothing to do.
    if let Some(group) = table.by_target(path).and_then(|m| m.propagation.shared) {
        return Ok(Shared {
            path: path.to_owned(),
            peer_group: group,
            bound: false,
            unchanged: true,
        });
    }
    // 2. Not a mount point: bind it onto itself (with its submounts) so it has its
    //    own propagation setting.
    let bound = !table.is_mount_point(path);
    if bound {
        sys.mount(Some(path), path, MsFlags::MS_BIND | MsFlags::MS_REC)?;
    }
    // 3. Make it and every mount below it shared; undo our bind if that fails.
    if let Err(e) = sys.mount(None, path, MsFlags::MS_SHARED | MsFlags::MS_REC) {
        if bound {
            let _ = sys.umount(path, MntFlags::MNT_DETACH);
        }
        return Err(e.into());
    }
    // 4. Prove it from mountinfo.
    let table = MountTable::read(proc, None)?;
    let mount = table
        .by_target(path)
        .ok_or_else(|| PropagationError::NoMount {
            path: path.to_owned(),
            namespace: "this namespace".into(),
        })?;
    let peer_group = mount
        .propagation
        .shared
        .ok_or(PropagationError::NotShared {
            path: path.to_owned(),
            propagation: mount.propagation,
        })?;
    Ok(Shared {
        path: path.to_owned(),
        peer_group,
        bound,
        unchanged: false,
    })
}

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

    /// Whether this is the reading process's own mount namespace: the same ns/mnt
    /// or, when that may not be opened, the same first mount (a mount belongs to
    /// exactly one namespace).
    fn is_own(&self) -> bool {
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

/// Whether mounts made below a path in one namespace appear in another.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "status", rename_all = "snake_case")]
pub enum Link {
    /// Both namespaces see the very same mount (they are one namespace).
    SameMount {
        mount_id: u32,
    },
    /// Both hold the path in mounts of one peer group: mounts propagate both ways.
    PeerGroup {
        group: u32,
    },
    Broken(Break),
}

impl Link {
    pub fn is_ok(&self) -> bool {
        !matches!(self, Link::Broken(_))
    }
}

/// The mount (holding `path`) whose propagation stops mounts from travelling between two namespaces.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Break {
    /// The path whose propagation was asked about.
    pub path: PathBuf,
    /// The namespace that holds the offending mount.
    pub namespace: String,
    pub mount_id: u32,
    pub target: PathBuf,
    pub propagation: String,
    pub reason: BreakReason,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum BreakReason {
    /// Neither shared nor a slave: nothing propagates in or out.
    Private,
    /// A slave only: it receives, it does not send back.
    SlaveOnly,
    /// Shared, but in a peer group of its own.
    OtherPeerGroup {
        other_namespace: String,
        other_group: u32,
    },
}

impl fmt::Display for Break {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (path, target) = (self.path.display(), self.target.display());
        if self.path == self.target {
            write!(f, "{path}")?;
        } else {
            write!(f, "{path} lies in mount {target}, which")?;
        }
        match &self.reason {
            BreakReason::Private => write!(
                f,
                " is private in the {} namespace (mount {})",
                self.namespace, self.mount_id
            ),
            BreakReason::SlaveOnly => write!(
                f,
                " is a slave in the {} namespace (mount {}, {}): mounts do not propagate back",
                self.namespace, self.mount_id, self.propagation
            ),
            BreakReason::OtherPeerGroup {
                other_namespace,
                other_group,
            } => write!(
                f,
                " in the {} namespace (mount {}, {}) is not in peer group {other_group} of the {other_namespace} namespace",
                self.namespace, self.mount_id, self.propagation
            ),
        }
    }
}

impl Break {
    /// The command that mends this break.
    pub fn remedy(&self) -> String {
        match self.reason {
            BreakReason::Private => format!(
                "run `sidemount share {}` in the {} namespace",
                self.path.display(),
                self.namespace
            ),
            BreakReason::SlaveOnly | BreakReason::OtherPeerGroup { .. } => format!(
                "bind {} into the {} namespace with `rshared` propagation (docker: `-v {0}:{0}:rshared`; Kubernetes: mountPropagation: Bidirectional), after `sidemount share {0}` on the host",
                self.path.display(),
                self.namespace
            ),
        }
    }
}

/// Compares `path` across two namespaces: do mounts below it in one reach the other?
pub fn link(path: &Path, a: &Namespace, b: &Namespace) -> Result<Link, PropagationError> {
    let path = normalize(path);
    let (ta, tb) = (a.table()?, b.table()?);
    let holder = |t: &MountTable, ns: &Namespace| -> Result<Mount, PropagationError> {
        t.containing(&path)
            .cloned()
            .ok_or_else(|| PropagationError::NoMount {
                path: path.clone(),
                namespace: ns.name.clone(),
            })
    };
    Ok(link_mounts(&path, &holder(&ta, a)?, a, &holder(&tb, b)?, b))
}

/// The decision of `link`, for the two mounts that hold `path`.
pub fn link_mounts(path: &Path, ma: &Mount, a: &Namespace, mb: &Mount, b: &Namespace) -> Link {
    // Mount ids are unique across namespaces: the same id is the same mount.
    if ma.id == mb.id {
        return Link::SameMount { mount_id: ma.id };
    }
    let broken = |m: &Mount, ns: &Namespace, reason| {
        Link::Broken(Break {
            path: path.to_owned(),
            namespace: ns.name.clone(),
            mount_id: m.id,
            target: m.target.clone(),
            propagation: m.propagation.to_string(),
            reason,
        })
    };
    let kind = |m: &Mount| match (m.propagation.shared, m.propagation.master) {
        (Some(_), _) => None,
        (None, Some(_)) => Some(BreakReason::SlaveOnly),
        (None, None) => Some(BreakReason::Private),
    };
    // The side that cannot send is named first: a private host root before a
    // private caller root, since the host is where `share` must run first.
    if let Some(reason) = kind(ma) {
        return broken(ma, a, reason);
    }
    if let Some(reason) = kind(mb) {
        return broken(mb, b, reason);
    }
    let (ga, gb) = (
        ma.propagation.shared.unwrap(),
        mb.propagation.shared.unwrap(),
    );
    if ga == gb {
        Link::PeerGroup { group: ga }
    } else {
        broken(
            mb,
            b,
            BreakReason::OtherPeerGroup {
                other_namespace: a.name.clone(),
                other_group: ga,
            },
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mount::syscall::fake::{Call, Recording};
    use std::io::Write;

    /// A proc root whose `self/mountinfo` is `table`.
    fn proc_with(table: &str) -> (tempfile::TempDir, ProcRoot) {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("self")).unwrap();
        let mut f = std::fs::File::create(dir.path().join("self/mountinfo")).unwrap();
        f.write_all(table.as_bytes()).unwrap();
        let proc = ProcRoot::new(dir.path());
        (dir, proc)
    }

    const PLAIN: &str = "27 1 254:0 / / rw - ext4 /dev/vda rw\n";

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

    #[test]
    fn share_binds_a_plain_directory_then_makes_it_rshared() {
        let (_d, proc) = proc_with(PLAIN);
        let sys = Recording::default();
        // The fake changes nothing, so the final proof must fail: that is the point
        // of proving from mountinfo.
        let err = share(&sys, &proc, Path::new("/var/lib/kubelet")).unwrap_err();
        assert!(matches!(err, PropagationError::NoMount { .. }), "{err}");
        let kubelet = PathBuf::from("/var/lib/kubelet");
        assert_eq!(
            *sys.calls.borrow(),
            vec![
                Call::Mount {
                    source: Some(kubelet.clone()),
                    target: kubelet.clone(),
                    flags: MsFlags::MS_BIND | MsFlags::MS_REC
                },
                Call::Mount {
                    source: None,
                    target: kubelet,
                    flags: MsFlags::MS_SHARED | MsFlags::MS_REC
                },
            ]
        );
    }

    #[test]
    fn share_of_a_private_mount_point_only_changes_propagation() {
        let (_d, proc) = proc_with(&format!(
            "{PLAIN}30 27 0:40 / /var/lib/kubelet rw - tmpfs tmpfs rw\n"
        ));
        let sys = Recording::default();
        let err = share(&sys, &proc, Path::new("/var/lib/kubelet")).unwrap_err();
        assert!(matches!(err, PropagationError::NotShared { .. }), "{err}");
        assert_eq!(sys.calls.borrow().len(), 1);
    }

    #[test]
    fn share_of_a_shared_mount_point_does_nothing() {
        let (_d, proc) = proc_with(&format!(
            "{PLAIN}30 27 0:40 / /var/lib/kubelet rw shared:5 - tmpfs tmpfs rw\n"
        ));
        let sys = Recording::default();
        let done = share(&sys, &proc, Path::new("/var/lib/kubelet")).unwrap();
        assert_eq!((done.peer_group, done.unchanged), (5, true));
        assert!(sys.calls.borrow().is_empty());
    }

    #[test]
    fn share_undoes_its_bind_when_making_it_shared_fails() {
        let (_d, proc) = proc_with(PLAIN);
        let sys = Recording {
            fail_at: Some(1),
            ..Default::default()
        };
        let err = share(&sys, &proc, Path::new("/k")).unwrap_err();
        assert!(err.to_string().contains("EPERM"), "{err}");
        assert_eq!(
            sys.calls.borrow().last(),
            Some(&Call::Umount {
                target: "/k".into(),
                flags: MntFlags::MNT_DETACH
            })
        );
    }

    fn mount(id: u32, propagation: &str) -> Mount {
        let line = format!("{id} 1 0:40 / /var/lib/kubelet rw {propagation} - tmpfs tmpfs rw")
            .replace("  ", " ");
        MountTable::parse(line.as_bytes()).unwrap().mounts.remove(0)
    }

    fn ns(name: &str) -> Namespace {
        Namespace::new(name, ProcRoot::default(), None)
    }

    #[test]
    fn link_decides_from_ids_and_peer_groups() {
        let (host, caller) = (ns("host"), ns("caller"));
        let kubelet = Path::new("/var/lib/kubelet");
        let decide =
            |a: &str, b: &str| link_mounts(kubelet, &mount(30, a), &host, &mount(40, b), &caller);
        assert_eq!(decide("shared:7", "shared:7"), Link::PeerGroup { group: 7 });
        assert_eq!(
            decide("shared:7", "shared:7 master:2"),
            Link::PeerGroup { group: 7 }
        );
        let brk = |l: Link| match l {
            Link::Broken(b) => b,
            other => panic!("expected a break, got {other:?}"),
        };
        let b = brk(decide("", "shared:7"));
        assert_eq!(
            (b.namespace.as_str(), b.reason.clone()),
            ("host", BreakReason::Private)
        );
        assert!(b.remedy().contains("sidemount share /var/lib/kubelet"));
        let b = brk(decide("shared:7", "master:7"));
        assert_eq!(
            (b.namespace.as_str(), b.reason.clone()),
            ("caller", BreakReason::SlaveOnly)
        );
        assert!(b.to_string().contains("do not propagate back"), "{b}");
        let b = brk(decide("shared:7", "shared:9"));
        assert_eq!(b.mount_id, 40);
        assert!(matches!(
            b.reason,
            BreakReason::OtherPeerGroup { other_group: 7, .. }
        ));
        // One namespace: the same mount, whatever its propagation.
        assert_eq!(
            link_mounts(
                Path::new("/var/lib/kubelet"),
                &mount(30, ""),
                &host,
                &mount(30, ""),
                &caller
            ),
            Link::SameMount { mount_id: 30 }
        );
    }
}
