//! Replacing a stale mount by a fresh copy, on real mount namespaces: on the target
//! here, where a shared kubelet root carries the change to its peers, and in
//! another namespace that holds a private bind of a subdirectory of the stale
//! mount, as a pod container does.

mod common;

use std::fs::File;
use std::os::fd::AsFd;
use std::path::Path;

use common::{quote, sh, Host};
use sidemount::mount::rebind::{self, RebindError, Swap};
use sidemount::mount::syscall::Linux;
use sidemount::ns::enter::MountNamespace;
use sidemount::ns::holders::{holders, namespace_of};
use sidemount::ns::mountinfo::{Mount, MountTable, ProcRoot};

fn mount_on(pid: Option<u32>, target: &Path) -> Mount {
    MountTable::read(&ProcRoot::default(), pid)
        .unwrap()
        .by_target(target)
        .cloned()
        .unwrap_or_else(|| panic!("nothing on {}", target.display()))
}

/// A detached copy of the directory `root` of the mount on `mount_point`.
fn fresh_copy(mount_point: &Path, root: &Path) -> std::os::fd::OwnedFd {
    let dir = File::open(mount_point).unwrap();
    rebind::clone_subtree(&Linux, dir.as_fd(), root).unwrap()
}

/// Puts a copy of the mount on `staging` on `mount_point` here, in place of the
/// mount whose id is `stale`.
fn swap_here(mount_point: &Path, stale: u64, staging: &Path) -> Result<(), RebindError> {
    rebind::swap(
        &Linux,
        Swap {
            namespace: None,
            name: "here",
            mount_point,
            stale,
            fresh: fresh_copy(staging, Path::new("/")),
            propagation: None,
        },
    )
}

/// Replaces `stale`, a bind of the volume on `volume` in the namespace of `pid`, by
/// a copy of the same directory of it, propagating as `stale` did.
fn swap_in_pod(pid: u32, stale: &Mount, volume: &Path) {
    let ns = MountNamespace::of(Path::new("/proc"), pid, format!("pid {pid}")).unwrap();
    rebind::swap(
        &Linux,
        Swap {
            namespace: Some(&ns),
            name: "pod",
            mount_point: &stale.target,
            stale: stale.id.into(),
            fresh: fresh_copy(volume, &stale.root),
            propagation: rebind::propagation_like(&stale.propagation),
        },
    )
    .unwrap();
}

privileged_test!(
    fn a_stale_mount_is_replaced_here_and_in_a_pods_private_bind(host: &Host) {
        // A shared kubelet root with a stale volume, a peer namespace (the
        // kubelet's), and a pod that binds a subdirectory of the volume rprivate.
        let root = host.dir("kubelet");
        let volume = host.dir("kubelet/pods/p/v");
        let staging = host.dir("staging");
        let data = host.dir("pod-data");
        sh(&format!(
            "mount --bind {root} {root} && mount --make-rshared {root}
             mount -t tmpfs stale {volume} && mkdir {volume}/sub && echo stale > {volume}/sub/which
             mount -t tmpfs fresh {staging} && mkdir {staging}/sub && echo fresh > {staging}/sub/which",
            root = quote(&root),
            volume = quote(&volume),
            staging = quote(&staging),
        ));
        let kubelet = host.namespace("kubelet", "true");
        let pod = host.namespace(
            "pod",
            &format!(
                "mount --bind {}/sub {d} && mount --make-private {d}",
                quote(&volume),
                d = quote(&data)
            ),
        );
        let which = Path::new("sub/which");
        let stale = mount_on(None, &volume);

        // A wrong mount id is refused and nothing changes.
        let refused = swap_here(&volume, u64::from(stale.id) + 100_000, &staging);
        assert!(
            matches!(refused, Err(RebindError::Moved { .. })),
            "{refused:?}"
        );
        assert_eq!(
            std::fs::read_to_string(volume.join(which)).unwrap(),
            "stale\n"
        );

        // Here: the fresh copy takes the target's place, in the kubelet's peer too.
        swap_here(&volume, stale.id.into(), &staging).unwrap();
        assert_eq!(
            std::fs::read_to_string(volume.join(which)).unwrap(),
            "fresh\n"
        );
        let cat = format!("cat {}", quote(&volume.join(which)));
        assert_eq!(kubelet.sh(&cat), "fresh\n");
        let on_target = |pid| {
            MountTable::read(&ProcRoot::default(), pid)
                .unwrap()
                .mounts
                .iter()
                .filter(|m| m.target == volume)
                .count()
        };
        assert_eq!((on_target(None), on_target(Some(kubelet.pid))), (1, 1));
        // The pod's private bind still holds the stale superblock.
        assert_eq!(pod.sh(&format!("cat {}/which", quote(&data))), "stale\n");

        // Found by the stale device id, replaced in the pod's namespace by a copy
        // of the same subdirectory.
        let own = namespace_of(&ProcRoot::default(), None).unwrap();
        let found = holders(&ProcRoot::default(), (stale.major, stale.minor), &[own]);
        assert_eq!(found.len(), 1, "{found:#?}");
        let bind = &found[0];
        assert_eq!(bind.mount.target, data);
        assert_eq!(bind.mount.root, Path::new("/sub"));
        swap_in_pod(bind.pid, &bind.mount, &volume);
        assert_eq!(pod.sh(&format!("cat {}/which", quote(&data))), "fresh\n");
        assert!(holders(&ProcRoot::default(), (stale.major, stale.minor), &[]).is_empty());
        let in_pod = mount_on(Some(pod.pid), &data);
        assert_eq!(in_pod.root, Path::new("/sub"));
        assert!(in_pod.propagation.is_private(), "{:?}", in_pod.propagation);
    }
);

privileged_test!(
    fn a_slave_bind_is_replaced_by_a_copy_that_propagates_nothing_back(host: &Host) {
        let root = host.dir("kubelet");
        let volume = host.dir("kubelet/pods/p/v");
        let staging = host.dir("staging");
        let data = host.dir("pod-data");
        sh(&format!(
            "mount --bind {root} {root} && mount --make-rshared {root}
             mount -t tmpfs stale {volume} && echo stale > {volume}/which
             mount -t tmpfs fresh {staging} && echo fresh > {staging}/which",
            root = quote(&root),
            volume = quote(&volume),
            staging = quote(&staging),
        ));
        let pod = host.namespace(
            "pod",
            &format!(
                "mount --bind {} {d} && mount --make-slave {d}",
                quote(&volume),
                d = quote(&data)
            ),
        );
        let before = mount_on(Some(pod.pid), &data);
        assert!(before.propagation.master.is_some(), "{before:?}");
        let stale = mount_on(None, &volume);
        swap_here(&volume, stale.id.into(), &staging).unwrap();
        assert_eq!(before.root, Path::new("/"), "{before:?}");
        swap_in_pod(pod.pid, &before, &volume);
        assert_eq!(pod.sh(&format!("cat {}/which", quote(&data))), "fresh\n");
        // A slave of the fresh mount's peer group: it receives, never sends.
        let after = mount_on(Some(pod.pid), &data);
        let group = mount_on(None, &volume).propagation.shared;
        assert!(group.is_some());
        assert_eq!(
            (after.propagation.shared, after.propagation.master),
            (None, group)
        );
    }
);

privileged_test!(
    fn a_symlink_planted_where_a_binds_root_was_is_not_followed(host: &Host) {
        let volume = host.dir("v");
        let outside = host.dir("outside");
        sh(&format!(
            "mount -t tmpfs vol {v} && ln -s {o} {v}/sub",
            v = quote(&volume),
            o = quote(&outside)
        ));
        let dir = File::open(&volume).unwrap();
        let refused = rebind::clone_subtree(&Linux, dir.as_fd(), Path::new("/sub"));
        assert!(
            matches!(refused, Err(RebindError::Open { errno, .. }) if errno == nix::errno::Errno::ELOOP),
            "{refused:?}"
        );
    }
);
