//! `sidemount check`: diagnoses whether this node can carry mounts from a volume
//! client to the host and the kubelet, each failure with the command that mends it.

use std::path::{Path, PathBuf};

use serde::Serialize;

use crate::mountinfo::{MountTable, ProcRoot};
use crate::propagation::{link, Link, Namespace};

/// Where to look.
#[derive(Debug, Clone)]
pub struct Node {
    pub kubelet_root: PathBuf,
    /// This process's own proc.
    pub proc: ProcRoot,
    /// The host's proc, whose pid 1 is the host's namespace.
    pub host_proc: ProcRoot,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Item {
    pub name: &'static str,
    pub ok: bool,
    pub detail: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub remedy: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Report {
    pub ok: bool,
    pub items: Vec<Item>,
}

impl Report {
    pub fn new(items: Vec<Item>) -> Self {
        Report {
            ok: items.iter().all(|i| i.ok),
            items,
        }
    }

    pub fn text(&self) -> String {
        let mut out = String::new();
        for item in &self.items {
            let mark = if item.ok { "ok  " } else { "FAIL" };
            out.push_str(&format!("{mark} {:<22} {}\n", item.name, item.detail));
            if let Some(remedy) = &item.remedy {
                out.push_str(&format!("     {:<22} fix: {remedy}\n", ""));
            }
        }
        out
    }
}

fn pass(name: &'static str, detail: String) -> Item {
    Item {
        name,
        ok: true,
        detail,
        remedy: None,
    }
}

fn fail(name: &'static str, detail: String, remedy: impl Into<String>) -> Item {
    Item {
        name,
        ok: false,
        detail,
        remedy: Some(remedy.into()),
    }
}

/// Runs every node check.
pub fn run(node: &Node) -> Report {
    let root = &node.kubelet_root;
    let share = format!("sidemount share {}", root.display());
    let mut items = vec![capability()];
    match MountTable::read(&node.proc, None) {
        Err(e) => items.push(fail(
            "kubelet root",
            e.to_string(),
            "run with access to /proc",
        )),
        Ok(table) => match table.by_target(root) {
            None => items.push(fail(
                "kubelet root",
                format!("{} is not a mount point in this namespace", root.display()),
                share.clone(),
            )),
            Some(m) if m.propagation.shared.is_none() => items.push(fail(
                "kubelet root",
                format!(
                    "{} is {} in this namespace (mount {})",
                    root.display(),
                    m.propagation,
                    m.id
                ),
                share.clone(),
            )),
            Some(m) => items.push(pass(
                "kubelet root",
                format!(
                    "{} is shared (peer group {}, mount {})",
                    root.display(),
                    m.propagation.shared.unwrap_or_default(),
                    m.id
                ),
            )),
        },
    }
    items.push(host_peer_group(node));
    items.push(dockerd(node));
    Report::new(items)
}

fn capability() -> Item {
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

fn host_peer_group(node: &Node) -> Item {
    const NAME: &str = "host peer group";
    let host = Namespace::new("host", node.host_proc.clone(), Some(1));
    let this = Namespace::new("this", node.proc.clone(), None);
    match link(&node.kubelet_root, &host, &this) {
        Ok(Link::SameMount { mount_id }) => pass(
            NAME,
            format!("this is the host's namespace (mount {mount_id})"),
        ),
        Ok(Link::PeerGroup { group }) => pass(
            NAME,
            format!("host and this namespace share peer group {group}"),
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
fn dockerd(node: &Node) -> Item {
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
