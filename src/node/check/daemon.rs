//! What the running daemon says about itself: whether it answers, the health of
//! each VCS and of each watched mount, and whether every type a VCS serves has
//! sidemount's helpers where mount(8) looks.

use std::path::{Path, PathBuf};

use crate::api::fstype::FsType;
use crate::api::wire::{Health, MountHealth};
use crate::mount::helper::{installed_names, is_ours};

use super::{fail, pass, DaemonAnswer, Item};

/// The daemon answers; each VCS is healthy; every type a VCS serves has
/// sidemount's helpers where mount(8) looks.
pub(super) fn daemon(answer: &DaemonAnswer, helper_dirs: &[PathBuf], binary: &Path) -> Vec<Item> {
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
    items
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
        Health::Corrupted | Health::Vanished => match &h.last_heal {
            Some(heal) if heal.result == "not_healable" => format!(
                "the daemon cannot heal it ({}): unmount it (`umount {target}`) and let the kubelet mount it again (delete the pod using it)",
                heal.error
            ),
            _ => format!(
                "its volume client lost it (the {} container or its FUSE process restarted); the daemon heals it (see `last_heal` in `sidemount status`); if it stays so, unmount it (`umount {target}`) and let the kubelet mount it again (delete the pod using it)",
                h.executor
            ),
        },
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::wire::Status;
    use crate::api::wire::VcsStatus;

    fn vcs(name: &str, types: &[&str], healthy: bool, note: &str) -> VcsStatus {
        VcsStatus {
            name: name.into(),
            types: types.iter().map(|t| FsType::new(t).unwrap()).collect(),
            provider: "external".into(),
            mode: "agent".into(),
            reached_at: format!("/run/sidemount/agents/{name}.sock"),
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
    fn a_mount_that_cannot_be_healed_is_named_with_why_and_the_remedy() {
        let heal = |result: &str, error: &str| crate::api::wire::HealReport {
            at: 1,
            result: result.into(),
            stale_mount_id: 7,
            mount_id: None,
            touched: vec![],
            error: error.into(),
        };
        let health = |last_heal| MountHealth {
            target: "/k/pods/a/v".into(),
            mount_id: 7,
            executor: "vcs/sshfs".into(),
            health: Health::Corrupted,
            error: "ENOTCONN: Transport endpoint is not connected".into(),
            checked_at: Some(1),
            last_heal,
        };
        let lost = mount_health(&health(Some(heal("not_healable", "it needs secrets")))).unwrap();
        assert!(!lost.ok);
        let remedy = lost.remedy.unwrap();
        assert!(
            remedy.contains("cannot heal it (it needs secrets)"),
            "{remedy}"
        );
        assert!(remedy.contains("`umount /k/pods/a/v`"), "{remedy}");
        let healing = mount_health(&health(Some(heal("failed", "connection refused")))).unwrap();
        assert!(healing.remedy.unwrap().contains("the daemon heals it"));
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
            last_heal: None,
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
}
