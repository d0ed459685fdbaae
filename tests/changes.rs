//! Changes to mounts already on a target, as mount(8) makes them: remounts (with
//! and without bind), the kubelet's read-only bind pair, propagation changes
//! (`--make-*`, `-o private`), on the mounter path and through mount(8) ->
//! helper; the same mount afterwards, one record brought up to date; targets
//! outside the roots or reached through a symlink are refused; a caller's copy
//! that cannot take the flags asked fails the change, naming its namespace.

mod common;

use std::path::Path;

use common::{
    daemon_with_helpers, has_option, kubelet_root, quote, sh, volume, Daemon, Host, SIDEMOUNT,
};

fn ok(daemon: &Daemon, line: &str) {
    let (code, err) = daemon.run(line);
    assert_eq!(code, Some(0), "{line}: {err}");
}

/// findmnt's ID, VFS-OPTIONS and PROPAGATION of the mount on top of `target`,
/// and how many mounts are stacked there.
fn seen(target: &Path) -> (String, String, String, usize) {
    let out = sh(&format!(
        "findmnt -n -o ID,VFS-OPTIONS,PROPAGATION --mountpoint {}",
        quote(target)
    ));
    let lines: Vec<&str> = out.lines().collect();
    let top: Vec<&str> = lines.last().expect("mounted").split_whitespace().collect();
    (top[0].into(), top[1].into(), top[2].into(), lines.len())
}

/// The daemon's records on `target`: their mount ids and options.
fn records(daemon: &Daemon, target: &Path) -> Vec<(String, Vec<String>)> {
    let on = daemon.records_on(target);
    on.into_iter()
        .map(|(_, id, options)| (id, options))
        .collect()
}

privileged_test! {
    fn remounts_change_the_same_mount_and_its_record(host: &Host) {
        let (root, daemon) = daemon_with_helpers(host, "tmpfs");
        let v = volume(&root, "v");
        let q = quote(&v);
        ok(&daemon, &format!("{SIDEMOUNT} mount -t tmpfs -o size=1m,nosuid tmpfs {q}"));
        let (id, options, _, stacked) = seen(&v);
        assert!(has_option(&options, "rw") && has_option(&options, "nosuid") && stacked == 1, "{options}");
        // Another new mount there is refused in mount(8)'s words.
        let (code, err) = daemon.run(&format!("{SIDEMOUNT} mount -t tmpfs -o size=2m tmpfs {q}"));
        assert_eq!(code, Some(32), "{err}");
        assert!(err.contains(&format!("tmpfs already mounted on {}", v.display())), "{err}");

        // The mounter path, with and without a source: read-only, still nosuid.
        ok(&daemon, &format!("{SIDEMOUNT} mount -t tmpfs -o remount,ro tmpfs {q}"));
        let (now, options, _, stacked) = seen(&v);
        assert_eq!((now.as_str(), stacked), (id.as_str(), 1));
        assert!(has_option(&options, "ro") && has_option(&options, "nosuid"), "{options}");
        assert_eq!(records(&daemon, &v), vec![(id.clone(), vec!["size=1m".into(), "nosuid".into(), "ro".into()])]);
        // mount(8) -> helper: back to read-write.
        ok(&daemon, &format!("mount -o remount,rw {q}"));
        let (now, options, _, stacked) = seen(&v);
        assert_eq!((now.as_str(), stacked), (id.as_str(), 1));
        assert!(has_option(&options, "rw") && has_option(&options, "nosuid"), "{options}");
        ok(&daemon, &format!("{SIDEMOUNT} mount -o remount,ro {q}"));
        assert!(has_option(&seen(&v).1, "ro"));
        assert_eq!(records(&daemon, &v).len(), 1);

        // No mount there: mount(8)'s words, exit 32, nothing made.
        let idle = volume(&root, "idle");
        let (code, err) = daemon.run(&format!("{SIDEMOUNT} mount -o remount,ro {}", quote(&idle)));
        assert_eq!(code, Some(32), "{err}");
        assert!(err.contains("not mounted"), "{err}");
        let (code, err) = daemon.run(&format!("{SIDEMOUNT} mount --make-private {}", quote(&idle)));
        assert_eq!(code, Some(32), "{err}");
        assert!(err.contains("not mounted"), "{err}");
        // One positional without a change is a usage error.
        let (code, err) = daemon.run(&format!("{SIDEMOUNT} mount -o ro {}", quote(&idle)));
        assert_eq!(code, Some(1), "{err}");
        ok(&daemon, &format!("{SIDEMOUNT} umount {q}"));
        assert!(daemon.recorded().is_empty());
    }
}

privileged_test! {
    fn the_kubelet_read_only_bind_pair_and_propagation_changes(host: &Host) {
        let root = kubelet_root(host);
        let daemon = Daemon::start(host, &root, &[]);
        let source = root.join("plugins/data");
        std::fs::create_dir_all(&source).unwrap();
        let v = volume(&root, "ro-bind");
        let (s, q) = (quote(&source), quote(&v));
        ok(&daemon, &format!("{SIDEMOUNT} mount -o bind {s} {q}"));
        let (id, options, propagation, _) = seen(&v);
        assert!(has_option(&options, "rw"), "{options}");
        assert_eq!(propagation, "shared");
        ok(&daemon, &format!("{SIDEMOUNT} mount -o bind,remount,ro {s} {q}"));
        let (now, options, _, stacked) = seen(&v);
        assert_eq!((now.as_str(), stacked), (id.as_str(), 1));
        assert!(has_option(&options, "ro"), "{options}");
        assert!(std::fs::write(v.join("f"), "x").is_err(), "read-only");
        // A retry changes the same mount again: nothing stacks.
        ok(&daemon, &format!("{SIDEMOUNT} mount -o bind,remount,ro {s} {q}"));
        assert_eq!(seen(&v).3, 1);
        assert_eq!(records(&daemon, &v), vec![(id.clone(), vec!["bind".into(), "ro".into()])]);

        // Slave of the peer group it shares with the kubelet root; then the others.
        for (line, want) in [
            (format!("{SIDEMOUNT} mount --make-slave {q}"), "private,slave"),
            (format!("{SIDEMOUNT} mount --make-private {q}"), "private"),
            (format!("{SIDEMOUNT} mount --make-shared {q}"), "shared"),
            (format!("{SIDEMOUNT} mount -o private none {q}"), "private"),
            (format!("{SIDEMOUNT} mount --make-runbindable {q}"), "private,unbindable"),
            (format!("{SIDEMOUNT} mount --make-rshared {q}"), "shared"),
        ] {
            ok(&daemon, &line);
            let (now, options, propagation, stacked) = seen(&v);
            assert_eq!((now.as_str(), propagation.as_str(), stacked), (id.as_str(), want, 1), "{line}");
            assert!(has_option(&options, "ro"), "{line}: {options}");
        }
        assert_eq!(records(&daemon, &v).len(), 1);
        ok(&daemon, &format!("{SIDEMOUNT} umount {q}"));
        assert!(daemon.recorded().is_empty());
    }
}

privileged_test! {
    fn a_copy_that_cannot_take_the_flags_asked_fails_the_change(host: &Host) {
        let root = kubelet_root(host);
        let daemon = Daemon::start(host, &root, &[]);
        let source = root.join("plugins/data");
        std::fs::create_dir_all(&source).unwrap();
        let v = volume(&root, "locked");
        let (s, q) = (quote(&source), quote(&v));
        ok(&daemon, &format!("{SIDEMOUNT} mount -o bind,ro {s} {q}"));
        // A caller in a user namespace of its own: the kernel locks the flags
        // its copies had when they were made, so its copy stays read-only.
        let (code, err) = daemon.run(&format!(
            "unshare -Ur -m --propagation unchanged -- {SIDEMOUNT} mount -o bind,remount,rw {s} {q}"
        ));
        assert_eq!(code, Some(32), "{err}");
        assert!(
            err.contains("in the caller (pid") && err.contains("cannot be given the options asked"),
            "{err}"
        );
        assert!(err.contains("Operation not permitted"), "{err}");
        // Here, where nothing is locked, the change was made.
        let (_, options, _, stacked) = seen(&v);
        assert!(has_option(&options, "rw") && stacked == 1, "{options}");
        ok(&daemon, &format!("{SIDEMOUNT} umount {q}"));
    }
}

privileged_test! {
    fn changes_outside_the_roots_or_through_a_symlink_are_refused(host: &Host) {
        let root = kubelet_root(host);
        let daemon = Daemon::start(host, &root, &[]);
        // A mount outside the roots, and a pod's symlink to it inside them.
        let outside = host.dir("outside");
        sh(&format!("mount -t tmpfs outside {}", quote(&outside)));
        let link = root.join("pods/p1/volumes/kubernetes.io~test/link");
        std::fs::create_dir_all(link.parent().unwrap()).unwrap();
        std::os::unix::fs::symlink(&outside, &link).unwrap();
        let before = seen(&outside);
        for line in [
            format!("{SIDEMOUNT} mount -o remount,ro {}", quote(&outside)),
            format!("{SIDEMOUNT} mount --make-private {}", quote(&outside)),
            format!("{SIDEMOUNT} mount -o remount,ro {}", quote(&link)),
            format!("{SIDEMOUNT} mount -o bind,remount,ro {} {}", quote(&outside), quote(&link)),
            format!("{SIDEMOUNT} mount --make-unbindable {}", quote(&link)),
        ] {
            let (code, err) = daemon.run(&line);
            assert_eq!(code, Some(32), "{line}: {err}");
            assert_eq!(seen(&outside), before, "{line}");
        }
        assert!(has_option(&before.1, "rw"));
        sh(&format!("umount {}", quote(&outside)));
    }
}
