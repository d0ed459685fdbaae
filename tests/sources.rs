//! What may be mounted, through the daemon with the host executor: the source
//! rules for every type (each refusal names its rule's configuration key), what a
//! peer other than root gets (nosuid,nodev: no setuid binary runs as root), and a
//! mount point whose name is not UTF-8, carried exactly.

mod common;

use std::ffi::OsString;
use std::os::unix::ffi::OsStringExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use common::{
    expect_success, kubelet_root, mount_points_under, quote, sh, volume, Daemon, Host, LoopDevice,
    SIDEMOUNT,
};

/// A daemon with this configuration (YAML) over `root`.
fn daemon(host: &Host, root: &Path, yaml: &str) -> Daemon {
    let config = host.dir("etc").join("sidemount.yaml");
    std::fs::write(&config, yaml).unwrap();
    Daemon::start(host, root, &["--config", config.to_str().unwrap()])
}

/// `sidemount ARGS` against `daemon`, as `uid` (0: root).
fn client(daemon: &Daemon, uid: u32, args: &[&str]) -> Output {
    if uid == 0 {
        return daemon.client(args);
    }
    Command::new("setpriv")
        .arg(format!("--reuid={uid}"))
        .arg(format!("--regid={uid}"))
        .arg("--clear-groups")
        .arg(SIDEMOUNT)
        .args(args)
        .env("SIDEMOUNT_SOCKET", &daemon.socket)
        .output()
        .unwrap()
}

/// Asserts the request is refused naming each of `names`, leaving nothing.
fn refused(daemon: &Daemon, uid: u32, args: &[&str], names: &[&str]) {
    let out = client(daemon, uid, args);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(32), "{args:?}: {err}");
    for name in names {
        assert!(err.contains(name), "{args:?}: want {name:?} in {err}");
    }
    assert!(daemon.recorded().is_empty(), "{args:?}: recorded");
}

/// Asserts the mount is made, of `fstype`, then unmounts it.
fn accepted(daemon: &Daemon, uid: u32, args: &[&str], target: &Path, fstype: &str) {
    expect_success(&format!("{args:?}"), client(daemon, uid, args));
    let seen = sh(&format!(
        "findmnt -n -o FSTYPE --mountpoint {}",
        quote(target)
    ));
    assert_eq!(seen.trim(), fstype, "{args:?}");
    expect_success(
        "umount",
        client(daemon, uid, &["umount", target.to_str().unwrap()]),
    );
    assert_eq!(mount_points_under(None, target), Vec::<PathBuf>::new());
}

privileged_test! {
    fn the_source_rules_refuse_what_reaches_outside_and_accept_volumes(host: &Host) {
        let root = kubelet_root(host);
        let daemon = daemon(host, &root, "block_device_patterns: [\"/dev/*\"]\n");
        let target = volume(&root, "v");
        let t = target.to_str().unwrap();
        let plugins = host.dir("var/lib/kubelet/plugins/overlay");
        for d in ["lower", "upper", "work"] {
            std::fs::create_dir_all(plugins.join(d)).unwrap();
        }
        let layers = |lower: &str| {
            format!("lowerdir={lower},upperdir={0}/upper,workdir={0}/work", plugins.display())
        };

        // Overlay layers outside the roots.
        let etc = layers("/etc");
        refused(&daemon, 0, &["mount", "-t", "overlay", "-o", &etc, "overlay", t],
            &["source /etc is outside the allowed roots", "bind_source_roots"]);
        // Inside: the layers are taken by their checked handles.
        std::fs::write(plugins.join("lower/hello"), "from the lower layer").unwrap();
        let inside = layers(plugins.join("lower").to_str().unwrap());
        expect_success("overlay", client(&daemon, 0, &["mount", "-t", "overlay", "-o", &inside, "overlay", t]));
        assert_eq!(std::fs::read_to_string(target.join("hello")).unwrap(), "from the lower layer");
        std::fs::write(target.join("new"), "written").unwrap();
        assert_eq!(std::fs::read_to_string(plugins.join("upper/new")).unwrap(), "written");
        expect_success("umount", client(&daemon, 0, &["umount", t]));
        assert_eq!(mount_points_under(None, &target), Vec::<PathBuf>::new());

        // The device backing / (when / is on a block device here).
        let backing = sh("findmnt -n -o SOURCE /").trim().to_owned();
        if Path::new(&backing).exists() && backing.starts_with("/dev/") {
            refused(&daemon, 0, &["mount", "-t", "ext4", &backing, t],
                &["backs / or the kubelet root", "allow_root_devices", "[source_not_allowed]"]);
        } else {
            eprintln!("/ is on {backing}, not a block device: that case cannot be made here");
        }
        // A block device the patterns allow.
        let disk = LoopDevice::ext4(host, "disk");
        accepted(&daemon, 0, &["mount", "-t", "ext4", &disk.device, t], &target, "ext4");

        // Loop files: outside the roots refused, inside accepted and released after.
        let elsewhere = host.dir("elsewhere").join("any.img");
        sh(&format!("truncate -s 16M {0} && mkfs.ext4 -q {0}", quote(&elsewhere)));
        refused(&daemon, 0, &["mount", "-t", "ext4", "-o", "loop", elsewhere.to_str().unwrap(), t],
            &["outside the allowed roots", "bind_source_roots"]);
        let image = host.dir("var/lib/kubelet/plugins/images").join("vol.img");
        sh(&format!("truncate -s 16M {0} && mkfs.ext4 -q {0}", quote(&image)));
        accepted(&daemon, 0, &["mount", "-t", "ext4", "-o", "loop", image.to_str().unwrap(), t], &target, "ext4");
        let loops = sh(&format!("losetup -n -j {}", quote(&image)));
        assert_eq!(loops.trim(), "", "the loop device is released with the mount");

        // Pseudo filesystems.
        for fstype in ["proc", "sysfs", "devtmpfs"] {
            refused(&daemon, 0, &["mount", "-t", fstype, fstype, t],
                &[&format!("filesystem type {fstype} exposes the kernel"), "allowed_pseudo_filesystems"]);
        }
        accepted(&daemon, 0, &["mount", "-t", "tmpfs", "tmpfs", t], &target, "tmpfs");
    }
}

privileged_test! {
    fn a_peer_other_than_root_cannot_run_a_setuid_binary_as_root(host: &Host) {
        let root = kubelet_root(host);
        let daemon = daemon(host, &root, "allowed_uids: [65534]\nblock_device_patterns: [\"/dev/loop*\"]\n");
        sh(&format!("chmod 0666 {} && chmod 0755 {}", quote(&daemon.socket), quote(daemon.socket.parent().unwrap())));
        // A setuid-root `id` in a directory the peer may bind.
        let tools = host.dir("var/lib/kubelet/plugins/tools");
        sh(&format!("cp /usr/bin/id {0}/id && chown root:root {0}/id && chmod 4755 {0}/id", quote(&tools)));
        let euid = |binary: &Path| {
            let out = Command::new("setpriv")
                .args(["--reuid=65534", "--regid=65534", "--clear-groups"])
                .arg(binary)
                .arg("-u")
                .output()
                .unwrap();
            String::from_utf8_lossy(&out.stdout).trim().to_owned()
        };
        assert_eq!(euid(&tools.join("id")), "0", "the setuid bit takes effect where it lies");
        let target = volume(&root, "v");
        let t = target.to_str().unwrap();

        // A bind by the peer: nosuid,nodev forced, the binary runs as the peer.
        expect_success("bind", client(&daemon, 65534, &["mount", "-o", "bind", tools.to_str().unwrap(), t]));
        let options = sh(&format!("findmnt -n -o VFS-OPTIONS --mountpoint {}", quote(&target)));
        assert!(options.contains("nosuid") && options.contains("nodev"), "{options}");
        assert_eq!(euid(&target.join("id")), "65534");
        expect_success("umount", client(&daemon, 65534, &["umount", t]));

        // The same bind asked with `suid,dev`: still nosuid,nodev.
        expect_success("bind", client(&daemon, 65534, &["mount", "-o", "bind,suid,dev", tools.to_str().unwrap(), t]));
        assert_eq!(euid(&target.join("id")), "65534");
        expect_success("umount", client(&daemon, 65534, &["umount", t]));

        // Its own ext4 image (with the setuid binary) by loop or as a device: refused.
        let image = host.dir("var/lib/kubelet/plugins/images").join("own.img");
        sh(&format!("truncate -s 16M {0} && mkfs.ext4 -q {0}", quote(&image)));
        refused(&daemon, 65534, &["mount", "-t", "ext4", "-o", "loop", image.to_str().unwrap(), t],
            &["may not mount the loop file", "allow_non_root_devices"]);
        let disk = LoopDevice::attach(&image);
        refused(&daemon, 65534, &["mount", "-t", "ext4", &disk.device, t],
            &["may not mount the block device", "allow_non_root_devices"]);
        // Root may: the rule is the peer's, not the device's.
        accepted(&daemon, 0, &["mount", "-t", "ext4", &disk.device, t], &target, "ext4");
    }
}

privileged_test! {
    fn a_mount_point_that_is_not_utf8_is_carried_exactly(host: &Host) {
        let root = kubelet_root(host);
        let daemon = daemon(host, &root, "");
        let volumes = root.join("pods/p/volumes/kubernetes.io~test");
        let mut bytes = volumes.clone().into_os_string().into_vec();
        bytes.extend_from_slice(b"/bad\xff");
        let exact = PathBuf::from(OsString::from_vec(bytes));
        std::fs::create_dir_all(&exact).unwrap();
        // The name a lossy conversion would make, there too: it must stay empty.
        let lossy = volumes.join("bad\u{fffd}");
        std::fs::create_dir_all(&lossy).unwrap();

        let run = |args: &[&std::ffi::OsStr]| daemon.client(args);
        expect_success("mount", run(&["mount".as_ref(), "-t".as_ref(), "tmpfs".as_ref(), "tmpfs".as_ref(), exact.as_os_str()]));
        assert_eq!(mount_points_under(None, &volumes), vec![exact.clone()]);
        let mounts = daemon.get("/v1/mounts").unwrap();
        let mut want = volumes.clone().into_os_string().into_vec();
        want.extend_from_slice(b"/bad\xff");
        assert_eq!(mounts[0]["target"]["bytes"], serde_json::json!(want), "{mounts}");

        expect_success("umount", run(&["umount".as_ref(), exact.as_os_str()]));
        assert_eq!(mount_points_under(None, &volumes), Vec::<PathBuf>::new());
        assert_eq!(mounts_recorded(&daemon), 0);

        // A source that is not UTF-8 is refused, clearly.
        let source = OsString::from_vec(b"/x/src\xfe".to_vec());
        let out = run(&["mount".as_ref(), "-o".as_ref(), "bind".as_ref(), source.as_os_str(), exact.as_os_str()]);
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(32), "{err}");
        assert!(err.contains("is not UTF-8"), "{err}");
    }
}

fn mounts_recorded(daemon: &Daemon) -> usize {
    daemon.get("/v1/mounts").unwrap().as_array().unwrap().len()
}
