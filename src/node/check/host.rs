//! What the node itself offers: the capability to mount, the kernel's way to mount
//! onto a handle, and a kubelet root whose mounts propagate between the host's
//! namespace, this one and dockerd's.

use std::path::Path;

use crate::ns::mountinfo::{MountTable, ProcRoot};
use crate::ns::namespace::Namespace;
use crate::ns::propagation::{link, Link};

use super::{fail, pass, Item, Node};

/// How messages name the namespace the check runs in.
const CHECKER: &str = "checker's";

pub(super) fn capability() -> Item {
    use caps::{CapSet, Capability};
    match caps::has_cap(None, CapSet::Effective, Capability::CAP_SYS_ADMIN) {
        Ok(true) => pass("capabilities", "CAP_SYS_ADMIN is effective".into()),
        Ok(false) => fail(
            "capabilities",
            "CAP_SYS_ADMIN is not effective: mounts will fail".into(),
            "run as root, or in a privileged container (securityContext.privileged: true)",
        ),
        Err(e) => fail(
            "capabilities",
            format!("cannot read capabilities: {e}"),
            "run on Linux with /proc mounted",
        ),
    }
}

/// How mounts reach a checked handle on this kernel: the new mount API, or
/// mount(2) onto `/proc/thread-self/fd/N` where it is missing.
pub(super) fn mount_api() -> Item {
    pass(
        "mount by handle",
        format!(
            "mounts land on checked handles by {}",
            crate::mount::by_handle::api()
        ),
    )
}

/// How an unmount knows the mount on its target is the one recorded: by its
/// unique id (statx `STATX_MNT_ID_UNIQUE`, Linux 6.8) in its namespace, itself
/// named by a unique id (`NS_GET_MNTNS_ID`, Linux 6.11), or by the reusable id
/// mountinfo shows, which a mount put there since may have been given again.
pub(super) fn mount_ids() -> Item {
    const NAME: &str = "mount identity";
    let root = crate::ns::beneath::open_root(Path::new("/"))
        .and_then(|fd| crate::ns::beneath::on_mount(std::os::fd::AsFd::as_fd(&fd)));
    let namespace = crate::ns::statmount::mount_namespace_id(&ProcRoot::default(), None);
    match root {
        Ok(on) if on.unique && namespace.is_ok() => pass(
            NAME,
            "unmounts check the recorded mount by its unique id (statx STATX_MNT_ID_UNIQUE)"
                .into(),
        ),
        _ => pass(
            NAME,
            "this kernel has no unique mount and namespace ids (Linux 6.11): unmounts check the reusable id seen a moment before, which a mount put on the target behind the daemon's back may share"
                .into(),
        ),
    }
}

pub(super) fn host_peer_group(node: &Node) -> Item {
    const NAME: &str = "host peer group";
    let host = Namespace::new("host", node.host_proc.clone(), Some(1));
    // Named for what it is: messages read "in the checker's namespace".
    let this = Namespace::new(CHECKER, node.proc.clone(), None);
    match link(&node.kubelet_root, &host, &this) {
        Ok(Link::SameMount { mount_id }) => pass(
            NAME,
            format!("this is the host's namespace (mount {mount_id})"),
        ),
        Ok(Link::PeerGroup { group }) => pass(
            NAME,
            format!("host and {CHECKER} namespace share peer group {group}"),
        ),
        Ok(Link::Broken(b)) => fail(NAME, b.to_string(), b.remedy()),
        Err(e) => fail(
            NAME,
            e.to_string(),
            "give the checker the host's pid namespace (hostPID: true) or its proc (--host-proc /host/proc)",
        ),
    }
}

/// dockerd started with systemd's `MountFlags=slave` lives in a namespace where the
/// kubelet root's parent is a slave: containers it starts never send mounts back.
pub(super) fn dockerd(node: &Node) -> Item {
    const NAME: &str = "dockerd propagation";
    let Some(pid) = find_process(&node.host_proc, "dockerd") else {
        return pass(NAME, "dockerd is not running".into());
    };
    let parent = node.kubelet_root.parent().unwrap_or(Path::new("/"));
    let table = match MountTable::read(&node.host_proc, Some(pid)) {
        Ok(t) => t,
        Err(e) => return fail(NAME, e.to_string(), "run the check as root with hostPID"),
    };
    match table.containing(parent) {
        Some(m) if m.propagation.master.is_some() && m.propagation.shared.is_none() => fail(
            NAME,
            format!(
                "dockerd (pid {pid}) sees {} as a slave (mount {}, {}): it runs with MountFlags=slave",
                m.target.display(),
                m.id,
                m.propagation
            ),
            "set MountFlags=shared for docker.service (`systemctl edit docker`), then `systemctl daemon-reload && systemctl restart docker`",
        ),
        Some(m) => pass(
            NAME,
            format!("dockerd (pid {pid}) sees {} as {}", m.target.display(), m.propagation),
        ),
        None => fail(
            NAME,
            format!("no mount holds {} for dockerd (pid {pid})", parent.display()),
            "check dockerd's mount namespace",
        ),
    }
}

/// The lowest pid whose command name is `comm`.
pub fn find_process(proc: &ProcRoot, comm: &str) -> Option<u32> {
    let mut pids: Vec<u32> = procfs::process::all_processes_with_root(proc.path())
        .ok()?
        .filter_map(Result::ok)
        .filter(|p| p.stat().is_ok_and(|s| s.comm == comm))
        .filter_map(|p| u32::try_from(p.pid()).ok())
        .collect();
    pids.sort_unstable();
    pids.first().copied()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ns::mountinfo::fixture::proc_with;

    #[test]
    fn a_break_names_the_checkers_namespace() {
        let host_dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(host_dir.path().join("1")).unwrap();
        std::fs::write(
            host_dir.path().join("1/mountinfo"),
            "27 1 254:0 / / rw shared:1 - ext4 /dev/vda rw\n",
        )
        .unwrap();
        let (_dir, proc) = proc_with("40 1 254:0 / / rw - ext4 /dev/vda rw\n");
        let node = Node {
            kubelet_root: "/var/lib/kubelet".into(),
            proc,
            host_proc: ProcRoot::new(host_dir.path()),
            daemon: None,
            helper_dirs: vec![],
            binary: "/usr/bin/sidemount".into(),
        };
        let item = host_peer_group(&node);
        assert!(!item.ok, "{item:?}");
        assert!(
            item.detail
                .contains("is private in the checker's namespace"),
            "{item:?}"
        );
        assert_eq!(
            item.remedy.as_deref(),
            Some("run `sidemount share /var/lib/kubelet` in the checker's namespace")
        );
    }
}
