//! util-linux's conventions kept on every path a caller takes (mounter path
//! `sidemount mount|umount`, and mount(8)/umount(8) -> helper): exit codes, the key
//! phrases callers match, `umount -R`, umount by device, `nofail`.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use common::{
    daemon_with_helpers, expect_success, external_vcs_config, kubelet_root, mount_points_under,
    quote, sh, volume, Daemon, Host, LoopDevice, SIDEMOUNT,
};

fn is_mounted(target: &Path) -> bool {
    mount_points_under(None, target).iter().any(|t| t == target)
}

privileged_test! {
    fn usage_errors_exit_1_and_failures_32_with_util_linux_phrases(host: &Host) {
        let (root, daemon) = daemon_with_helpers(host, "tmpfs");
        // Usage errors: 1 on the mounter path and in the helpers, as mount(8)'s.
        for line in [
            format!("{SIDEMOUNT} mount --no-such-flag a /b"),
            format!("{SIDEMOUNT} mount onlyone"),
            format!("{SIDEMOUNT} umount"),
            "/usr/sbin/mount.tmpfs tmpfs".to_string(),
            "/usr/sbin/umount.tmpfs -o x /b".to_string(),
        ] {
            let (code, err) = daemon.run(&line);
            assert_eq!(code, Some(1), "{line}: {err}");
        }
        let (code, _) = daemon.run(&format!("{SIDEMOUNT} --help"));
        assert_eq!(code, Some(0));

        // A directory that is not mounted: "not mounted", 32, both ways.
        let idle = volume(&root, "idle");
        for line in [format!("{SIDEMOUNT} umount {}", quote(&idle)), format!("umount -t tmpfs {}", quote(&idle))] {
            let (code, err) = daemon.run(&line);
            assert_eq!(code, Some(32), "{line}: {err}");
            assert!(err.contains("not mounted"), "{line}: {err}");
        }
        // A mount point that does not exist.
        let missing = root.join("pods/p1/volumes/kubernetes.io~test/missing");
        let (code, err) = daemon.run(&format!("{SIDEMOUNT} mount -t tmpfs tmpfs {}", quote(&missing)));
        assert_eq!(code, Some(32), "{err}");
        assert!(err.contains("mount point does not exist"), "{err}");
        // A busy target: umount(8)'s own words come through.
        let busy = volume(&root, "busy");
        expect_success("mount", daemon.client(["mount", "-t", "tmpfs", "tmpfs", busy.to_str().unwrap()]));
        let mut holder = Command::new("sh").arg("-c").arg("exec sleep 1000").current_dir(&busy).spawn().unwrap();
        let (code, err) = daemon.run(&format!("{SIDEMOUNT} umount {}", quote(&busy)));
        assert_eq!(code, Some(32), "{err}");
        assert!(err.contains("target is busy"), "{err}");
        holder.kill().unwrap();
        holder.wait().unwrap();
        expect_success("umount", daemon.client(["umount", busy.to_str().unwrap()]));
        assert!(daemon.recorded().is_empty());
    }
}

privileged_test! {
    fn umount_recursive_and_by_device(host: &Host) {
        let root = kubelet_root(host);
        let daemon = Daemon::start(host, &root, &[]);
        let mount = |args: &[&str], target: &Path| {
            let out = daemon.client([&["mount"], args, &[target.to_str().unwrap()]].concat());
            expect_success("mount", out);
        };
        // A tree: a tmpfs with two mounts inside, one of them with one of its own.
        let top = volume(&root, "tree");
        mount(&["-t", "tmpfs", "tmpfs"], &top);
        for sub in ["a", "b"] {
            std::fs::create_dir(top.join(sub)).unwrap();
            mount(&["-t", "tmpfs", "tmpfs"], &top.join(sub));
        }
        std::fs::create_dir(top.join("a/deep")).unwrap();
        mount(&["-t", "tmpfs", "tmpfs"], &top.join("a/deep"));
        assert_eq!(mount_points_under(None, &top).len(), 4);
        let (code, err) = daemon.run(&format!("{SIDEMOUNT} umount -R {}", quote(&top)));
        assert_eq!(code, Some(0), "{err}");
        assert_eq!(mount_points_under(None, &top), Vec::<PathBuf>::new());
        assert!(daemon.recorded().is_empty());

        // By device: the latest mount of /dev/loopN goes.
        let disk = LoopDevice::ext4(host, "disk");
        let ext4 = volume(&root, "disk");
        mount(&["-t", "ext4", &disk.device], &ext4);
        let (code, err) = daemon.run(&format!("{SIDEMOUNT} umount {}", disk.device));
        assert_eq!(code, Some(0), "{err}");
        assert!(!is_mounted(&ext4));
        assert!(daemon.recorded().is_empty());
        let (code, err) = daemon.run(&format!("{SIDEMOUNT} umount {}", disk.device));
        assert_eq!(code, Some(32), "{err}");
        assert!(err.contains(&format!("{}: not mounted", disk.device)), "{err}");
    }
}

privileged_test! {
    fn nofail_with_a_missing_source_succeeds_like_mount8(host: &Host) {
        let (root, daemon) = daemon_with_helpers(host, "ext4");
        let target = volume(&root, "v");
        let gone = host.scratch.join("no-such-disk");
        let direct = daemon.run(&format!("mount -i -t ext4 -o nofail {} {}", quote(&gone), quote(&target)));
        assert_eq!(direct.0, Some(0), "{}", direct.1);
        for line in [
            format!("{SIDEMOUNT} mount -t ext4 -o nofail {} {}", quote(&gone), quote(&target)),
            format!("mount -t ext4 -o nofail {} {}", quote(&gone), quote(&target)),
        ] {
            assert_eq!(daemon.run(&line), direct, "{line}");
        }
        // Without nofail it fails.
        let (code, _) = daemon.run(&format!("{SIDEMOUNT} mount -t ext4 {} {}", quote(&gone), quote(&target)));
        assert_eq!(code, Some(32));
        assert!(!is_mounted(&target));
        assert!(daemon.recorded().is_empty());
    }
}

privileged_test! {
    fn umount_through_a_symlink_below_the_roots_only(host: &Host) {
        let (root, daemon) = daemon_with_helpers(host, "tmpfs");
        let v = volume(&root, "v");
        let dir = v.parent().unwrap().to_owned();
        std::os::unix::fs::symlink(&v, dir.join("abs")).unwrap();
        std::os::unix::fs::symlink("../kubernetes.io~test/v", dir.join("rel")).unwrap();
        let mount = || {
            let (code, err) = daemon.run(&format!("{SIDEMOUNT} mount -t tmpfs tmpfs {}", quote(&v)));
            assert_eq!(code, Some(0), "{err}");
        };
        for line in [
            format!("{SIDEMOUNT} umount {}", quote(&dir.join("abs"))),
            format!("{SIDEMOUNT} umount {}", quote(&dir.join("rel"))),
            format!("umount -t tmpfs {}", quote(&dir.join("abs"))),
        ] {
            mount();
            let (code, err) = daemon.run(&line);
            assert_eq!(code, Some(0), "{line}: {err}");
            assert!(!is_mounted(&v), "{line}");
            assert!(daemon.recorded().is_empty(), "{line}");
        }
        // A link that leads out of the roots, to a mount sidemount did not make.
        let outside = host.dir("outside");
        sh(&format!("mount -i -t tmpfs outside {}", quote(&outside)));
        std::os::unix::fs::symlink(&outside, dir.join("out")).unwrap();
        let (code, err) = daemon.run(&format!("{SIDEMOUNT} umount {}", quote(&dir.join("out"))));
        assert_eq!(code, Some(32), "{err}");
        assert!(err.contains("outside"), "{err}");
        assert!(is_mounted(&outside));
        sh(&format!("umount -i {}", quote(&outside)));
    }
}

privileged_test! {
    fn a_file_binds_onto_a_file_and_never_through_a_link(host: &Host) {
        let root = kubelet_root(host);
        let daemon = Daemon::start(host, &root, &[]);
        let source = root.join("plugins/subpath/file");
        std::fs::create_dir_all(source.parent().unwrap()).unwrap();
        std::fs::write(&source, "one file").unwrap();
        let dir = volume(&root, "files");
        let target = dir.join("target");
        std::fs::write(&target, "").unwrap();
        let (code, err) = daemon.run(&format!("{SIDEMOUNT} mount -o bind,ro {} {}", quote(&source), quote(&target)));
        assert_eq!(code, Some(0), "{err}");
        assert_eq!(std::fs::read_to_string(&target).unwrap(), "one file");
        assert!(std::fs::write(&target, "x").is_err(), "read-only");
        assert_eq!(daemon.recorded(), vec![target.display().to_string()]);
        let (code, err) = daemon.run(&format!("{SIDEMOUNT} umount {}", quote(&target)));
        assert_eq!(code, Some(0), "{err}");
        assert!(!is_mounted(&target));
        // A target file that is a link to a file outside the roots is refused.
        let outside = host.dir("outside").join("file");
        std::fs::write(&outside, "outside").unwrap();
        let link = dir.join("link");
        std::os::unix::fs::symlink(&outside, &link).unwrap();
        let (code, err) = daemon.run(&format!("{SIDEMOUNT} mount -o bind {} {}", quote(&source), quote(&link)));
        assert_eq!(code, Some(32), "{err}");
        assert!(err.contains("symbolic link") || err.contains("symlink"), "{err}");
        assert_eq!(std::fs::read_to_string(&outside).unwrap(), "outside");
        assert!(!is_mounted(&outside));
        assert!(daemon.recorded().is_empty());
    }
}

privileged_test! {
    fn a_type_left_to_probe_is_found_by_libblkid_never_by_sidemounts_own_helper(host: &Host) {
        // mount(8) probing by itself would call this helper, which asks the daemon
        // for the target it is busy with.
        let (root, daemon) = daemon_with_helpers(host, "ext4");
        let disk = LoopDevice::ext4(host, "disk");
        let v = volume(&root, "v");
        for types in ["", "-t auto ", "-t xfs,ext4 "] {
            let line = format!("{SIDEMOUNT} mount {types}{} {}", disk.device, quote(&v));
            let (code, err) = daemon.run(&line);
            assert_eq!(code, Some(0), "{line}: {err}");
            let fstype = sh(&format!("findmnt -n -o FSTYPE {}", quote(&v)));
            assert_eq!(fstype.trim(), "ext4", "{line}");
            let (code, err) = daemon.run(&format!("{SIDEMOUNT} umount {}", quote(&v)));
            assert_eq!(code, Some(0), "{err}");
        }
        // A loop file is probed through the daemon's handle on it.
        let image = host.dir("var/lib/kubelet/plugins/images").join("vol.img");
        sh(&format!("truncate -s 16M {0} && mkfs.ext4 -q {0}", quote(&image)));
        let line = format!("{SIDEMOUNT} mount -o loop {} {}", quote(&image), quote(&v));
        let (code, err) = daemon.run(&line);
        assert_eq!(code, Some(0), "{line}: {err}");
        let fstype = sh(&format!("findmnt -n -o FSTYPE {}", quote(&v)));
        assert_eq!(fstype.trim(), "ext4", "{line}");
        let (code, err) = daemon.run(&format!("{SIDEMOUNT} umount {}", quote(&v)));
        assert_eq!(code, Some(0), "{err}");
        // A list without the type found: mount(8)'s "wrong fs type", nothing mounted.
        let line = format!("{SIDEMOUNT} mount -t xfs,btrfs {} {}", disk.device, quote(&v));
        let (code, err) = daemon.run(&line);
        assert_eq!(code, Some(32), "{err}");
        assert!(err.contains("wrong fs type"), "{err}");
        assert!(!is_mounted(&v));
        assert!(daemon.recorded().is_empty());
    }
}

privileged_test! {
    fn a_relative_mount_point_is_taken_from_the_callers_directory(host: &Host) {
        let root = kubelet_root(host);
        let daemon = Daemon::start(host, &root, &[]);
        let v = volume(&root, "v");
        let pod = v.parent().unwrap();
        let (code, err) = daemon.run(&format!("cd {} && {SIDEMOUNT} mount -t tmpfs -o size=1m tmpfs v", quote(pod)));
        assert_eq!(code, Some(0), "{err}");
        assert!(is_mounted(&v));
        assert_eq!(daemon.recorded(), [v.display().to_string()]);
        let (code, err) = daemon.run(&format!("cd {} && {SIDEMOUNT} umount v", quote(pod)));
        assert_eq!(code, Some(0), "{err}");
        assert!(!is_mounted(&v));
        // Relative to a directory outside the roots: refused as outside them.
        let (code, err) = daemon.run(&format!("cd {} && {SIDEMOUNT} mount -t tmpfs tmpfs x", quote(&host.scratch)));
        assert_eq!(code, Some(32), "{err}");
        assert!(err.contains("outside the allowed roots"), "{err}");
        assert!(daemon.recorded().is_empty());
    }
}

privileged_test! {
    fn x_mount_mkdir_makes_the_mount_point_below_the_roots_only(host: &Host) {
        let root = kubelet_root(host);
        let daemon = Daemon::start(host, &root, &[]);
        let pod = volume(&root, "v").parent().unwrap().to_owned();
        let deep = pod.join("new/deeper");
        let line = format!("{SIDEMOUNT} mount -t tmpfs -o X-mount.mkdir,size=1m tmpfs {}", quote(&deep));
        let (code, err) = daemon.run(&line);
        assert_eq!(code, Some(0), "{err}");
        assert!(is_mounted(&deep));
        let (code, err) = daemon.run(&format!("{SIDEMOUNT} umount {}", quote(&deep)));
        assert_eq!(code, Some(0), "{err}");
        // Never through a symlink a pod planted, never outside the roots.
        let outside = host.dir("outside");
        std::os::unix::fs::symlink(&outside, pod.join("link")).unwrap();
        for target in [pod.join("link/made"), host.scratch.join("elsewhere/made")] {
            let line = format!("{SIDEMOUNT} mount -t tmpfs -o X-mount.mkdir tmpfs {}", quote(&target));
            let (code, err) = daemon.run(&line);
            assert_eq!(code, Some(32), "{err}");
        }
        assert!(!outside.join("made").exists(), "a directory was made through the link");
        assert!(!host.scratch.join("elsewhere").exists(), "a directory was made outside the roots");
        assert!(daemon.recorded().is_empty());
    }
}

privileged_test! {
    fn a_network_source_without_a_type_goes_where_mount8_would_send_it(host: &Host) {
        let root = kubelet_root(host);
        // A volume client for nfs and cifs whose agent is not running: a request
        // routed there fails at once, naming it.
        let config = external_vcs_config(host, &root, "net", "[nfs, cifs]");
        let daemon = Daemon::start(host, &root, &["--config", config.to_str().unwrap()]);
        let v = volume(&root, "v");
        for source in ["server:/export", "//server/share"] {
            let line = format!("{SIDEMOUNT} mount {source} {}", quote(&v));
            let (code, err) = daemon.run(&line);
            assert_eq!(code, Some(32), "{line}: {err}");
            assert!(err.contains("[executor_unavailable]") && err.contains("net"), "{line}: {err}");
        }
        // A name mount(8) cannot guess from stays with the host, as before.
        let (code, err) = daemon.run(&format!("{SIDEMOUNT} mount tmpfs {}", quote(&v)));
        assert_eq!(code, Some(32), "{err}");
        assert!(err.contains("special device tmpfs does not exist"), "{err}");
        assert!(!is_mounted(&v));
        assert!(daemon.recorded().is_empty());
    }
}
