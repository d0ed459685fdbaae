//! `sidemount check`: diagnoses whether this node can carry mounts from a volume
//! client to the host and the kubelet, each failure with the command that mends it.
//! On a running node it also asks the daemon about itself and its VCS containers,
//! and looks for the helpers of every type they serve.
mod daemon;
mod host;

use std::path::PathBuf;

use serde::Serialize;

use crate::api::wire::Status;
use crate::ns::mountinfo::{MountTable, ProcRoot};

pub use host::find_process;

use daemon::daemon;
use host::{capability, dockerd, host_peer_group, mount_api, mount_ids};

/// What the daemon answered on its socket, or why it could not be asked.
#[derive(Debug, Clone)]
pub struct DaemonAnswer {
    pub socket: PathBuf,
    pub status: Result<Status, String>,
}

/// Where to look.
#[derive(Debug, Clone)]
pub struct Node {
    pub kubelet_root: PathBuf,
    /// This process's own proc.
    pub proc: ProcRoot,
    /// The host's proc, whose pid 1 is the host's namespace.
    pub host_proc: ProcRoot,
    /// The daemon's answer; `None` checks the node alone (before the daemon runs).
    pub daemon: Option<DaemonAnswer>,
    /// Where mount(8) looks for `mount.TYPE` helpers.
    pub helper_dirs: Vec<PathBuf>,
    /// The sidemount binary the helpers must be (this one, as a rule).
    pub binary: PathBuf,
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
    let mut items = vec![capability(), mount_api(), mount_ids()];
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
    if let Some(answer) = &node.daemon {
        items.extend(daemon(answer, &node.helper_dirs, &node.binary));
    }
    Report::new(items)
}
