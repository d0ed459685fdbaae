//! `sidemount check`: diagnoses whether this node can carry mounts from a volume
//! client to the host and the kubelet, each failure with the command that mends it.
//! On a running node it also asks the daemon about itself and its VCS containers,
//! and looks for the helpers of every type they serve and checks that every command
//! shim has a VCS to run in.

use std::path::{Path, PathBuf};

use serde::Serialize;

use crate::api::fstype::FsType;
use crate::api::wire::{Health, MountHealth, Status};
use crate::mount::helper::{installed_names, is_ours, is_shim_name};
use crate::ns::mountinfo::{MountTable, ProcRoot};
use crate::ns::namespace::Namespace;
use crate::ns::propagation::{link, Link};

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
    if let Some(answer) = &node.daemon {
        items.extend(daemon(answer, &node.helper_dirs, &node.binary));
    }
    Report::new(items)
}

/// The daemon answers; each VCS is healthy; every type a VCS serves has
/// sidemount's helpers where mount(8) looks.
fn daemon(answer: &DaemonAnswer, helper_dirs: &[PathBuf], binary: &Path) -> Vec<Item> {
    let status = match &answer.status {
        Ok(s) => s,
        Err(e) => return vec![fail(
            "daemon",
            e.clone(),
            format!("start `sidemount serve --socket {}` (the sidemount DaemonSet, or the node's unit), and bind its directory into this container", answer.socket.display()),
        )],
    };
    let mut items = vec![pass(
        "daemon",
        format!(
            "sidemount {} answers on {}: {} mount(s), executors {}",
            status.version,
            answer.socket.display(),
            status.mounts.len(),
            status.executors.join(", ")
        ),
    )];
    for v in &status.vcs {
        let what = format!(
            "{} ({} {}, {}) at {}",
            v.name,
            v.provider,
            v.mode,
            v.types
                .iter()
                .map(FsType::as_str)
                .collect::<Vec<_>>()
                .join(","),
            v.reached_at
        );
        items.push(match (v.healthy, v.note.is_empty()) {
            (true, true) => pass("vcs", format!("{what}: healthy")),
            (true, false) => pass("vcs", format!("{what}: healthy; {}", v.note)),
            (false, _) => fail(
                "vcs",
                format!("{what}: {}", v.note),
                match v.provider.as_str() {
                    "docker" => format!(
                        "see `docker logs {}`; `sidemount upgrade {}` makes it again",
                        crate::vcs::container_name(&v.name),
                        v.name
                    ),
                    _ => format!(
                        "see the logs of the {} sidecar of the sidemount pod on this node",
                        v.name
                    ),
                },
            ),
        });
    }
    items.extend(status.health.iter().filter_map(mount_health));
    let types: Vec<&FsType> = status.vcs.iter().flat_map(|v| &v.types).collect();
    items.push(helpers(&types, helper_dirs, binary));
    let run: Vec<&str> = status
        .vcs
        .iter()
        .flat_map(|v| &v.run)
        .map(String::as_str)
        .collect();
    items.push(shims(&run, helper_dirs, binary));
    items
}

/// Every command shim (a link to `binary` under a program's name, see
/// `install-helpers --commands`) in `dirs` has a VCS whose `run` list allows it.
fn shims(run: &[&str], dirs: &[PathBuf], binary: &Path) -> Item {
    const NAME: &str = "shims";
    let mut found: Vec<String> = dirs
        .iter()
        .filter_map(|d| std::fs::read_dir(d).ok())
        .flatten()
        .filter_map(|e| {
            let e = e.ok()?;
            let name = e.file_name().into_string().ok()?;
            let link = e.file_type().ok()?.is_symlink();
            (link && is_shim_name(&name) && is_ours(&e.path(), binary)).then_some(name)
        })
        .collect();
    found.sort();
    found.dedup();
    let orphans: Vec<&str> = found
        .iter()
        .map(String::as_str)
        .filter(|s| !run.contains(s))
        .collect();
    match (found.is_empty(), orphans.is_empty()) {
        (true, _) => pass(NAME, "no command shims".into()),
        (false, true) => pass(NAME, format!("{} run in the VCS that allows them", found.join(", "))),
        (false, false) => fail(
            NAME,
            format!("no VCS allows {}: their shims exit 127", orphans.join(", ")),
            format!("add them to the `run` list of the VCS whose image has them, or remove the shims ({})", orphans.join(", ")),
        ),
    }
}

/// A failed item for a watched mount that is not healthy, with what mends it.
fn mount_health(h: &MountHealth) -> Option<Item> {
    let target = h.target.display();
    let what = format!(
        "{target} (mount {}, {}) is {}: {}",
        h.mount_id,
        h.executor,
        h.health.as_str(),
        h.error
    );
    let remedy = match h.health {
        Health::Healthy | Health::Unknown => return None,
        Health::Corrupted => format!(
            "its volume client lost it (the {} container or its FUSE process restarted): unmount it (`umount {target}`) and let the kubelet mount it again (delete the pod using it)",
            h.executor
        ),
        Health::Unresponsive => {
            "its server does not answer: check the volume server and the network to it".to_owned()
        }
        Health::Failed => format!("see the error; `sidemount list --target {target}` shows what is mounted there"),
    };
    Some(fail("mount", what, remedy))
}

/// Every helper of every type (see [`installed_names`]) is sidemount's in one of
/// `dirs`: it is `binary` (see [`is_ours`]).
fn helpers(types: &[&FsType], dirs: &[PathBuf], binary: &Path) -> Item {
    const NAME: &str = "helpers";
    let find = |name: &str| {
        dirs.iter()
            .map(|d| d.join(name))
            .find(|p| p.symlink_metadata().is_ok())
    };
    let names: Vec<&str> = types.iter().map(|t| t.as_str()).collect();
    let mut missing = Vec::new();
    let mut foreign = Vec::new();
    for fstype in types {
        for name in installed_names(fstype) {
            match find(&name) {
                None => missing.push(name),
                Some(path) if !is_ours(&path, binary) => foreign.push(path.display().to_string()),
                Some(_) => {}
            }
        }
    }
    let install = format!(
        "sidemount install-helpers --dir {} --types {}",
        dirs.first()
            .map_or("/sbin".into(), |d| d.display().to_string()),
        names.join(",")
    );
    match (missing.is_empty(), foreign.is_empty()) {
        _ if types.is_empty() => pass(NAME, "no VCS is configured: the host executor serves every type".into()),
        (true, true) => pass(NAME, format!("sidemount's helpers serve {}", names.join(", "))),
        (_, false) => fail(
            NAME,
            format!("{} belong to another program: mount(8) would run them instead of forwarding to the daemon", foreign.join(", ")),
            format!("remove them (the client software the VCS containers replace), then {install}"),
        ),
        (false, true) => fail(
            NAME,
            format!("{} missing from {}: mount(8) cannot forward those types", missing.join(", "),
                dirs.iter().map(|d| d.display().to_string()).collect::<Vec<_>>().join(", ")),
            install,
        ),
    }
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::wire::VcsStatus;

    fn vcs(name: &str, types: &[&str], healthy: bool, note: &str) -> VcsStatus {
        VcsStatus {
            name: name.into(),
            types: types.iter().map(|t| FsType::new(t).unwrap()).collect(),
            provider: "external".into(),
            mode: "agent".into(),
            reached_at: format!("/run/sidemount/agents/{name}.sock"),
            run: vec![],
            healthy,
            note: note.into(),
        }
    }

    fn answer(vcs: Vec<VcsStatus>) -> DaemonAnswer {
        DaemonAnswer {
            socket: "/run/sidemount/sidemount.sock".into(),
            status: Ok(Status {
                version: "1".into(),
                vcs,
                ..Status::default()
            }),
        }
    }

    /// A helpers directory with `names` linked to a file named `binary`.
    fn helper_dir(binary: &str, names: &[&str]) -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        let bin = dir.path().join(binary);
        std::fs::write(&bin, "").unwrap();
        for n in names {
            std::os::unix::fs::symlink(&bin, dir.path().join(n)).unwrap();
        }
        dir
    }

    #[test]
    fn corrupted_mounts_fail_with_the_remedy_and_healthy_ones_pass() {
        let health = |target: &str, health: Health, error: &str| MountHealth {
            target: target.into(),
            mount_id: 7,
            executor: "vcs/sshfs".into(),
            health,
            error: error.into(),
            checked_at: Some(1),
        };
        let mut a = answer(vec![]);
        if let Ok(s) = &mut a.status {
            s.health = vec![
                health("/k/pods/a/v", Health::Healthy, ""),
                health("/k/pods/b/v", Health::Unknown, ""),
                health(
                    "/k/pods/c/v",
                    Health::Corrupted,
                    "ENOTCONN: Transport endpoint is not connected",
                ),
            ];
        }
        let items = daemon(&a, &[], Path::new("/usr/bin/sidemount"));
        let mounts: Vec<&Item> = items.iter().filter(|i| i.name == "mount").collect();
        assert_eq!(mounts.len(), 1, "{items:?}");
        assert!(!mounts[0].ok);
        assert!(
            mounts[0]
                .detail
                .contains("/k/pods/c/v (mount 7, vcs/sshfs) is corrupted: ENOTCONN"),
            "{mounts:?}"
        );
        assert!(
            mounts[0]
                .remedy
                .as_ref()
                .unwrap()
                .contains("`umount /k/pods/c/v`"),
            "{mounts:?}"
        );
    }

    #[test]
    fn an_absent_daemon_fails_with_how_to_start_it() {
        let a = DaemonAnswer {
            socket: "/run/s.sock".into(),
            status: Err("cannot reach the sidemount daemon at /run/s.sock".into()),
        };
        let items = daemon(&a, &[], Path::new("/usr/bin/sidemount"));
        assert_eq!(items.len(), 1);
        assert!(!items[0].ok);
        assert!(items[0]
            .remedy
            .as_ref()
            .unwrap()
            .contains("sidemount serve --socket /run/s.sock"));
    }

    #[test]
    fn each_vcs_is_reported_and_an_unhealthy_one_fails() {
        let dir = helper_dir(
            "sidemount",
            &[
                "mount.fuse.sshfs",
                "umount.fuse.sshfs",
                "umount.fuse",
                "mount.nfs",
                "umount.nfs",
            ],
        );
        let dirs = [dir.path().to_owned()];
        let binary = dir.path().join("sidemount");
        let items = daemon(
            &answer(vec![
                vcs("sshfs", &["fuse.sshfs"], true, ""),
                vcs("nfs", &["nfs"], true, ""),
            ]),
            &dirs,
            &binary,
        );
        assert!(items.iter().all(|i| i.ok), "{items:?}");
        assert_eq!(items.iter().filter(|i| i.name == "vcs").count(), 2);
        let items = daemon(
            &answer(vec![vcs(
                "nfs",
                &["nfs"],
                false,
                "the agent does not answer",
            )]),
            &dirs,
            &binary,
        );
        let bad = items.iter().find(|i| i.name == "vcs").unwrap();
        assert!(
            !bad.ok
                && bad.detail.contains("nfs (external agent, nfs)")
                && bad.detail.contains("does not answer"),
            "{bad:?}"
        );
        assert!(bad.remedy.as_ref().unwrap().contains("nfs sidecar"));
    }

    #[test]
    fn helpers_must_exist_and_be_sidemount() {
        let ours = helper_dir("sidemount", &["mount.fuse.sshfs"]);
        let dirs = [ours.path().to_owned()];
        let binary = ours.path().join("sidemount");
        let t = |t: &str| FsType::new(t).unwrap();
        let item = helpers(&[&t("fuse.sshfs")], &dirs, &binary);
        assert!(
            !item.ok
                && item
                    .detail
                    .contains("umount.fuse.sshfs, umount.fuse missing"),
            "{item:?}"
        );
        assert_eq!(
            item.remedy.unwrap(),
            format!(
                "sidemount install-helpers --dir {} --types fuse.sshfs",
                ours.path().display()
            )
        );
        let theirs = helper_dir("mount.nfs.real", &["mount.nfs"]);
        let dirs = [theirs.path().to_owned(), ours.path().to_owned()];
        let item = helpers(&[&t("nfs")], &dirs, &binary);
        assert!(
            !item.ok && item.detail.contains("belong to another program"),
            "{item:?}"
        );
        assert!(helpers(&[], &dirs, &binary).ok);
    }

    #[test]
    fn every_shim_needs_a_vcs_that_runs_it() {
        let dir = helper_dir("sidemount", &["iscsiadm", "rbd", "mount.nfs"]);
        let binary = dir.path().join("sidemount");
        let other = dir.path().join("gluster");
        std::os::unix::fs::symlink("/bin/true", &other).unwrap();
        let dirs = [dir.path().to_owned()];
        let item = shims(&["iscsiadm", "rbd", "mkfs.ext4"], &dirs, &binary);
        assert!(
            item.ok && item.detail == "iscsiadm, rbd run in the VCS that allows them",
            "{item:?}"
        );
        let item = shims(&["iscsiadm"], &dirs, &binary);
        assert!(
            !item.ok && item.detail == "no VCS allows rbd: their shims exit 127",
            "{item:?}"
        );
        assert!(item.remedy.unwrap().contains("`run` list"));
        let empty = tempfile::tempdir().unwrap();
        assert!(shims(&[], &[empty.path().to_owned()], &binary).ok);
    }
}
