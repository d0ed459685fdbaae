//! Attacks on the one path, as a pod would make them: a thread swaps a directory
//! under the roots with a symlink to a directory outside them
//! (renameat2 RENAME_EXCHANGE) while the daemon (host executor) mounts, binds and
//! unmounts, hundreds of times. Nothing may be mounted, bound from or unmounted
//! outside the roots, and every mount left must be recorded.

mod common;

use std::os::unix::fs::symlink;
use std::path::{Path, PathBuf};
use std::time::Duration;

use common::swap::Swapper;
use common::{kubelet_root, mount_points_under, pod_volume, quote, sh, Daemon, Host};
use sidemount::api::client::Client;
use sidemount::api::wire::{self, MountRequest, MountResponse, UnmountRequest, UnmountResponse};

/// Tries per attack.
const TRIES: usize = 300;

/// The daemon's API, called directly (no process start per try).
struct Api {
    client: Client,
    runtime: tokio::runtime::Runtime,
}

impl Api {
    fn new(daemon: &Daemon) -> Api {
        Api {
            client: Client::new(&daemon.socket, Duration::from_secs(30)),
            runtime: tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap(),
        }
    }

    fn mount(&self, req: &MountRequest) -> Option<MountResponse> {
        let posted = self.client.post::<_, MountResponse>(wire::MOUNTS, req);
        self.runtime.block_on(posted).ok()
    }

    fn unmount(&self, target: &Path) -> bool {
        let req = UnmountRequest {
            target: target.to_owned(),
            ..Default::default()
        };
        let posted = self.client.post::<_, UnmountResponse>(wire::UNMOUNTS, &req);
        self.runtime.block_on(posted).is_ok()
    }
}

fn tmpfs(target: &Path) -> MountRequest {
    MountRequest {
        source: "race".into(),
        target: target.to_owned(),
        fstype: "tmpfs".into(),
        options: vec!["size=64k".into()],
        ..Default::default()
    }
}

/// A shared kubelet root, and a directory outside it holding `secret`.
fn node(host: &Host) -> (PathBuf, PathBuf) {
    let root = kubelet_root(host);
    let outside = host.dir("etc-outside");
    std::fs::write(outside.join("secret"), "outside the roots").unwrap();
    (root, outside)
}

/// Every mount point below `root` is in the daemon's record, and the other way round.
fn recorded_equals_mounted(daemon: &Daemon, root: &Path) {
    let mut mounted: Vec<String> = mount_points_under(None, &root.join("pods"))
        .iter()
        .map(|p| p.display().to_string())
        .collect();
    let mut recorded = daemon.recorded();
    mounted.sort();
    recorded.sort();
    assert_eq!(mounted, recorded, "mounts and record differ");
}

/// Mounts on `target` while `a` and `b` are swapped; then checks that nothing
/// reached `outside`.
fn race_mounts(host: &Host, target: &Path, a: &Path, b: &Path, outside: &Path, root: &Path) {
    let daemon = Daemon::start(host, root, &[]);
    let api = Api::new(&daemon);
    let swapper = Swapper::start(a, b);
    let mut made = 0;
    for _ in 0..TRIES {
        if api.mount(&tmpfs(target)).is_some() {
            made += 1;
            // Retried until the swap leaves the target's path whole.
            let mut tries = 0;
            while !api.unmount(target) {
                tries += 1;
                assert!(tries < 10_000, "cannot unmount {}", target.display());
            }
        }
        assert_eq!(
            mount_points_under(None, outside),
            Vec::<PathBuf>::new(),
            "a mount reached {}",
            outside.display()
        );
    }
    let swaps = swapper.stop();
    eprintln!("{TRIES} tries, {made} mounted, {swaps} swaps");
    assert!(swaps > 0, "the attack never ran");
    assert_eq!(mount_points_under(None, outside), Vec::<PathBuf>::new());
    recorded_equals_mounted(&daemon, root);
    assert!(daemon.recorded().is_empty());
}

privileged_test! {
    fn a_swapped_last_component_never_takes_a_mount_outside_the_roots(host: &Host) {
        let (root, outside) = node(host);
        let volumes = host.dir("var/lib/kubelet/pods/p/volumes/kubernetes.io~test");
        let target = volumes.join("v");
        std::fs::create_dir(&target).unwrap();
        let link = volumes.join("link");
        symlink(&outside, &link).unwrap();
        race_mounts(host, &target, &target, &link, &outside, &root);
    }
}

privileged_test! {
    fn a_swapped_middle_component_never_takes_a_mount_outside_the_roots(host: &Host) {
        let (root, outside) = node(host);
        let pod = host.dir("var/lib/kubelet/pods/p");
        let middle = pod.join("volumes");
        std::fs::create_dir_all(middle.join("v")).unwrap();
        std::fs::create_dir(outside.join("v")).unwrap();
        let link = pod.join("link");
        symlink(&outside, &link).unwrap();
        race_mounts(host, &middle.join("v"), &middle, &link, &outside, &root);
    }
}

privileged_test! {
    fn a_swapped_bind_source_never_binds_from_outside_the_roots(host: &Host) {
        let (root, outside) = node(host);
        let plugins = host.dir("var/lib/kubelet/plugins/disk");
        let source = plugins.join("src");
        std::fs::create_dir(&source).unwrap();
        std::fs::write(source.join("secret"), "inside").unwrap();
        let link = plugins.join("link");
        symlink(&outside, &link).unwrap();
        let target = pod_volume(&root, "p", "v");
        let daemon = Daemon::start(host, &root, &[]);
        let api = Api::new(&daemon);
        let swapper = Swapper::start(&source, &link);
        let bind = MountRequest {
            source: source.display().to_string(),
            target: target.clone(),
            options: vec!["bind".into()],
            ..Default::default()
        };
        let (mut bound, mut leaked) = (0, 0);
        for _ in 0..TRIES {
            if let Some(done) = api.mount(&bind) {
                bound += 1;
                let seen = std::fs::read_to_string(target.join("secret")).unwrap();
                if seen != "inside" {
                    leaked += 1;
                }
                assert_eq!(done.record.target, target);
                assert!(api.unmount(&target), "unmount of a bind");
            }
        }
        let swaps = swapper.stop();
        eprintln!("{TRIES} tries, {bound} bound, {swaps} swaps");
        assert!(swaps > 0 && bound > 0, "the attack or the binds never ran");
        assert_eq!(leaked, 0, "binds of the directory outside the roots");
        recorded_equals_mounted(&daemon, &root);
    }
}

privileged_test! {
    fn a_swapped_loop_file_directory_never_mounts_a_file_outside_the_roots(host: &Host) {
        let (root, outside) = node(host);
        // Two ext4 images of one name, told apart by what they hold: one below the
        // roots, one outside them where a symlink in the roots points.
        let image = |dir: &Path, says: &str| {
            let content = host.dir(&format!("content-{says}"));
            std::fs::write(content.join("secret"), says).unwrap();
            sh(&format!(
                "truncate -s 8M {0} && mkfs.ext4 -q -d {1} {0}",
                quote(&dir.join("disk.img")),
                quote(&content)
            ));
        };
        let plugins = host.dir("var/lib/kubelet/plugins/images");
        let images = plugins.join("dir");
        std::fs::create_dir(&images).unwrap();
        image(&images, "inside");
        image(&outside, "outside");
        let link = plugins.join("link");
        symlink(&outside, &link).unwrap();
        let target = pod_volume(&root, "p", "v");
        let daemon = Daemon::start(host, &root, &[]);
        let api = Api::new(&daemon);
        let swapper = Swapper::start(&images, &link);
        let looped = MountRequest {
            source: images.join("disk.img").display().to_string(),
            target: target.clone(),
            fstype: "ext4".into(),
            options: vec!["loop,ro".into()],
            ..Default::default()
        };
        let (mut mounted, mut leaked) = (0, 0);
        for _ in 0..TRIES / 3 {
            if api.mount(&looped).is_some() {
                mounted += 1;
                let seen = std::fs::read_to_string(target.join("secret")).unwrap();
                if seen != "inside" {
                    leaked += 1;
                }
                assert!(api.unmount(&target), "unmount of a loop mount");
            }
        }
        let swaps = swapper.stop();
        eprintln!("{} tries, {mounted} mounted, {swaps} swaps", TRIES / 3);
        assert!(swaps > 0 && mounted > 0, "the attack or the mounts never ran");
        assert_eq!(leaked, 0, "loop mounts of the image outside the roots");
        recorded_equals_mounted(&daemon, &root);
        // Every loop device was released with its mount.
        for dir in [&images, &outside] {
            let attached = sh(&format!("losetup -n -j {}", quote(&dir.join("disk.img"))));
            assert_eq!(attached.trim(), "", "a loop device outlived its mount");
        }
    }
}

privileged_test! {
    fn a_swapped_unmount_target_never_unmounts_outside_the_roots(host: &Host) {
        let (root, outside) = node(host);
        let pod = host.dir("var/lib/kubelet/pods/p");
        let middle = pod.join("volumes");
        let target = middle.join("v");
        std::fs::create_dir_all(&target).unwrap();
        // A mount outside the roots that sidemount never made, where the swapped
        // path leads.
        std::fs::create_dir(outside.join("v")).unwrap();
        sh(&format!("mount -t tmpfs foreign {}", quote(&outside.join("v"))));
        let link = pod.join("link");
        symlink(&outside, &link).unwrap();
        let daemon = Daemon::start(host, &root, &[]);
        let api = Api::new(&daemon);
        let swapper = Swapper::start(&middle, &link);
        let (mut unmounted, mut refused) = (0, 0);
        for _ in 0..TRIES {
            let mut tries = 0;
            while api.mount(&tmpfs(&target)).is_none() {
                tries += 1;
                assert!(tries < 10_000, "cannot mount {}", target.display());
            }
            loop {
                if api.unmount(&target) {
                    unmounted += 1;
                    break;
                }
                refused += 1;
            }
            assert_eq!(
                mount_points_under(None, &outside),
                vec![outside.join("v")],
                "the foreign mount outside the roots was unmounted"
            );
        }
        let swaps = swapper.stop();
        eprintln!("{TRIES} tries, {unmounted} unmounted, {refused} refused, {swaps} swaps");
        assert!(swaps > 0, "the attack never ran");
        recorded_equals_mounted(&daemon, &root);
        assert!(daemon.recorded().is_empty());
    }
}
