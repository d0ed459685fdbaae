//! Which mount namespaces hold a mount of one filesystem: every process's
//! mountinfo under a proc root (the host's, with hostPID), one reading per
//! namespace. When a FUSE client dies, the binds pod containers made of its mount
//! keep the dead superblock; its device id finds them all.

use std::collections::HashSet;
use std::path::PathBuf;

use crate::ns::mountinfo::{Mount, MountTable, ProcRoot};

/// A mount of the filesystem in the namespace of `pid`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Holder {
    pub pid: u32,
    /// The namespace, as `/proc/PID/ns/mnt` links to it (`mnt:[4026532201]`).
    pub namespace: PathBuf,
    pub mount: Mount,
}

/// Every mount of device `major:minor` in every mount namespace of a process under
/// `proc`, except the namespaces in `skip` (as `/proc/PID/ns/mnt` links to them).
/// Processes that exit while they are read, or whose namespace cannot be named,
/// are passed over.
pub fn holders(proc: &ProcRoot, (major, minor): (u32, u32), skip: &[PathBuf]) -> Vec<Holder> {
    let Ok(entries) = std::fs::read_dir(proc.path()) else {
        return Vec::new();
    };
    let mut seen: HashSet<PathBuf> = skip.iter().cloned().collect();
    let mut found = Vec::new();
    for entry in entries.flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|n| n.parse::<u32>().ok())
        else {
            continue;
        };
        let Ok(namespace) = std::fs::read_link(proc.mount_namespace(Some(pid))) else {
            continue;
        };
        if !seen.insert(namespace.clone()) {
            continue;
        }
        let Ok(table) = MountTable::read(proc, Some(pid)) else {
            continue;
        };
        found.extend(
            table
                .mounts
                .into_iter()
                .filter(|m| (m.major, m.minor) == (major, minor))
                .map(|mount| Holder {
                    pid,
                    namespace: namespace.clone(),
                    mount,
                }),
        );
    }
    found
}

/// The namespace of `pid` under `proc` (`None`: this process), as
/// `/proc/PID/ns/mnt` links to it.
pub fn namespace_of(proc: &ProcRoot, pid: Option<u32>) -> Option<PathBuf> {
    std::fs::read_link(proc.mount_namespace(pid)).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_every_mount_of_the_device_once_per_namespace() {
        let dir = tempfile::tempdir().unwrap();
        let table = "20 1 0:50 / /k/v rw - fuse.sshfs h:/e rw\n21 1 0:50 /sub /data rw - fuse.sshfs h:/e rw\n22 1 0:51 / /other rw - tmpfs t rw\n";
        for (pid, ns) in [
            (10, "mnt:[1]"),
            (11, "mnt:[1]"),
            (12, "mnt:[2]"),
            (13, "mnt:[3]"),
        ] {
            let d = dir.path().join(pid.to_string());
            std::fs::create_dir_all(d.join("ns")).unwrap();
            std::fs::write(d.join("mountinfo"), table).unwrap();
            std::os::unix::fs::symlink(ns, d.join("ns/mnt")).unwrap();
        }
        let proc = ProcRoot::new(dir.path());
        let mut found = holders(&proc, (0, 50), &["mnt:[3]".into()]);
        found.sort_by_key(|h| (h.pid, h.mount.id));
        let got: Vec<_> = found
            .iter()
            .map(|h| {
                (
                    h.namespace.to_str().unwrap(),
                    h.mount.id,
                    h.mount.root.to_str().unwrap(),
                )
            })
            .collect();
        // Namespace 1 once (by pid 10 or 11), namespace 2, not the skipped 3.
        assert_eq!(got.len(), 4, "{got:?}");
        assert_eq!(got.iter().filter(|g| g.0 == "mnt:[1]").count(), 2);
        assert!(got.contains(&("mnt:[2]", 21, "/sub")));
        assert!(!got.iter().any(|g| g.0 == "mnt:[3]" || g.1 == 22));
        assert_eq!(namespace_of(&proc, Some(12)), Some("mnt:[2]".into()));
    }
}
