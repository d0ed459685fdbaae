//! Changes to mounts already on a target when a VCS runs in `mode: exec`, with a
//! real dockerd: the kubelet's read-only bind pair, a remount of a tmpfs and
//! propagation changes are made in the VCS container's namespace on the mount
//! that is there (findmnt in the container shows it changed, still one mount),
//! and its one record is brought up to date; a retry stacks nothing. A bind
//! there takes the source the daemon checked, not what its name shows in the
//! container. A read-only bind (made so, or remounted so) is read-only in every
//! namespace it reached, the host's and a containerized kubelet's, with either
//! executor: per-mount flags do not propagate by themselves.

mod common;

use std::path::Path;

use common::node::{docker_ok, Kubelet, Node};
use common::{has_option, quote, Daemon};

/// findmnt in `container`: ID, VFS-OPTIONS and PROPAGATION of the mount on top
/// of `target`, and how many mounts are stacked there.
fn inside(container: &str, target: &Path) -> (String, String, String, usize) {
    let out = docker_ok(&[
        "exec",
        container,
        "findmnt",
        "-n",
        "-o",
        "ID,VFS-OPTIONS,PROPAGATION",
        "--mountpoint",
        target.to_str().unwrap(),
    ]);
    let lines: Vec<&str> = out.lines().collect();
    let top: Vec<&str> = lines.last().expect("mounted").split_whitespace().collect();
    (top[0].into(), top[1].into(), top[2].into(), lines.len())
}

fn strings(list: &[&str]) -> Vec<String> {
    list.iter().map(|s| s.to_string()).collect()
}

/// The mounter-path call `args`, which must succeed.
fn ok(daemon: &Daemon, args: &[&str]) {
    let (code, err) = daemon.forward(args);
    assert_eq!(code, Some(0), "{args:?}: {err}");
}

#[test]
fn exec_mode_changes_the_mount_in_the_container() {
    let Some(mut node) = Node::new("exec_mode_changes_the_mount_in_the_container") else {
        return;
    };
    let vcs = node.vcs("kernel");
    let container = node.vcs_container(&vcs);
    node.track(&container);
    let config = node.config(
        "sidemount.yaml",
        &Node::kernel_vcs(&vcs, "tmpfs, none", "exec"),
    );
    let daemon = node.start_daemon(&config);
    let executor = format!("vcs/{vcs}");
    let root = node.kubelet_root();
    let source = root.join("plugins/data");
    std::fs::create_dir_all(&source).unwrap();
    let bind = node.volume("bind");
    let (s, b) = (source.to_str().unwrap(), bind.to_str().unwrap());

    // The kubelet's read-only bind pair: a bind, then its remount read-only.
    ok(&daemon, &["mount", "-o", "bind", s, b]);
    let (id, options, propagation, stacked) = inside(&container, &bind);
    assert!(has_option(&options, "rw") && stacked == 1, "{options}");
    assert_eq!(propagation, "shared");
    let recorded = |options: &[&str]| vec![(executor.clone(), id.clone(), strings(options))];
    assert_eq!(daemon.records_on(&bind), recorded(&["bind"]));
    // A retry of the bind is answered again; nothing stacks.
    ok(&daemon, &["mount", "-o", "bind", s, b]);
    assert_eq!(inside(&container, &bind).3, 1);
    for _ in 0..2 {
        ok(&daemon, &["mount", "-o", "bind,remount,ro", s, b]);
        let (now, options, _, stacked) = inside(&container, &bind);
        assert_eq!((now.as_str(), stacked), (id.as_str(), 1));
        assert!(has_option(&options, "ro"), "{options}");
        assert_eq!(daemon.records_on(&bind), recorded(&["bind", "ro"]));
    }
    let write = |dir: &Path| {
        docker_ok(&[
            "exec",
            &container,
            "sh",
            "-c",
            &format!("touch {}/f 2>&1 || echo refused", quote(dir)),
        ])
    };
    assert!(write(&bind).contains("Read-only file system"), "read-only");
    // Here (the host's namespace, and the caller's) too: per-mount flags do
    // not propagate, the daemon gave this copy its own.
    let here = std::fs::write(bind.join("f"), "x").unwrap_err();
    assert_eq!(here.raw_os_error(), Some(libc::EROFS), "{here}");

    // Propagation changes on that bind, by the record's executor although the
    // request names no type.
    for (args, want) in [
        (vec!["mount", "--make-private", b], "private"),
        (vec!["mount", "--make-shared", b], "shared"),
        (vec!["mount", "-o", "private", "none", b], "private"),
    ] {
        ok(&daemon, &args);
        let (now, options, propagation, stacked) = inside(&container, &bind);
        assert_eq!(
            (now.as_str(), propagation.as_str(), stacked),
            (id.as_str(), want, 1),
            "{args:?}"
        );
        assert!(has_option(&options, "ro"), "{args:?}: {options}");
    }
    assert_eq!(
        daemon.records_on(&bind),
        recorded(&["bind", "ro", "private"])
    );

    // A tmpfs remounted read-only: in the container, and its filesystem for
    // every namespace.
    let tmpfs = node.volume("tmpfs");
    let t = tmpfs.to_str().unwrap();
    ok(
        &daemon,
        &["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", t],
    );
    let (tid, options, _, _) = inside(&container, &tmpfs);
    assert!(has_option(&options, "rw"), "{options}");
    for _ in 0..2 {
        ok(
            &daemon,
            &["mount", "-t", "tmpfs", "-o", "remount,ro", "tmpfs", t],
        );
        let (now, options, _, stacked) = inside(&container, &tmpfs);
        assert_eq!((now.as_str(), stacked), (tid.as_str(), 1));
        assert!(has_option(&options, "ro"), "{options}");
    }
    let tmpfs_record = daemon.records_on(&tmpfs);
    assert_eq!(
        tmpfs_record,
        vec![(executor.clone(), tid.clone(), strings(&["size=1m", "ro"]))]
    );
    assert!(write(&tmpfs).contains("Read-only file system"));
    assert!(
        std::fs::write(tmpfs.join("f"), "x").is_err(),
        "read-only here too"
    );

    // A change where nothing is mounted: mount(8)'s words, nothing made.
    let idle = node.volume("idle");
    let (code, err) = daemon.forward(&[
        "mount",
        "-t",
        "tmpfs",
        "-o",
        "remount,ro",
        "tmpfs",
        idle.to_str().unwrap(),
    ]);
    assert_eq!(code, Some(32), "{err}");
    assert!(err.contains("not mounted"), "{err}");

    // Both go; a private mount's unmount still reaches the host, through its
    // parent's peers.
    ok(&daemon, &["umount", t]);
    ok(&daemon, &["umount", b]);
    let pods = root.join("pods");
    assert!(common::mount_points_under(None, &pods).is_empty());
    let pid = docker_ok(&["inspect", "-f", "{{.State.Pid}}", &container]);
    let pid = pid.trim().parse().unwrap();
    assert!(common::mount_points_under(Some(pid), &pods).is_empty());
    assert!(daemon.recorded().is_empty());
}

#[test]
fn exec_mode_binds_the_checked_source_not_its_name_in_the_container() {
    let Some(mut node) =
        Node::new("exec_mode_binds_the_checked_source_not_its_name_in_the_container")
    else {
        return;
    };
    let vcs = node.vcs("kernel");
    let container = node.vcs_container(&vcs);
    node.track(&container);
    let config = node.config("sidemount.yaml", &Node::kernel_vcs(&vcs, "none", "exec"));
    let daemon = node.start_daemon(&config);
    let root = node.kubelet_root();
    let plugins = root.join("plugins");
    let source = plugins.join("data");
    std::fs::create_dir_all(&source).unwrap();
    std::fs::write(source.join("checked"), "the checked source\n").unwrap();
    let target = node.volume("bind");
    // In the container only, the source's name leads to a decoy: its own copy
    // of plugins/ made private, and a tmpfs there that the host never sees.
    let (p, s) = (quote(&plugins), quote(&source));
    docker_ok(&["exec", &container, "sh", "-euc", &format!(
        "mount --bind {p} {p} && mount --make-private {p} && mount -t tmpfs decoy {s} && echo decoy > {s}/decoy"
    )]);
    assert!(!source.join("decoy").exists());

    let (s, t) = (source.to_str().unwrap(), target.to_str().unwrap());
    ok(&daemon, &["mount", "-o", "bind", s, t]);
    let seen = docker_ok(&["exec", &container, "ls", "-A", t]);
    assert_eq!(seen, "checked\n", "the container's bind shows");
    assert_eq!(
        std::fs::read_to_string(target.join("checked")).unwrap(),
        "the checked source\n"
    );
    ok(&daemon, &["umount", t]);
    assert!(daemon.recorded().is_empty());
}

/// How `dir` looks from each of the kubelet container, here, and the VCS
/// `container` when it is the executor: whether a write into it is refused as
/// read-only, and its VFS-OPTIONS as findmnt shows them there.
fn read_only_everywhere(
    kubelet: &Kubelet,
    container: Option<&str>,
    dir: &Path,
) -> Vec<(bool, String)> {
    let d = quote(dir);
    let line = format!(
        "touch {d}/.probe 2>&1 && rm -f {d}/.probe && echo writable; findmnt -n -o VFS-OPTIONS --mountpoint {d} | tail -n 1"
    );
    let there = container.map(|c| docker_ok(&["exec", c, "sh", "-c", &line]));
    [Some(kubelet.sh(&line)), Some(common::sh(&line)), there]
        .iter()
        .flatten()
        .map(|out| {
            let options = out.lines().last().unwrap_or_default().trim().to_owned();
            (out.contains("Read-only file system"), options)
        })
        .collect()
}

/// The kubelet container's mounter-path call `args`, which must succeed.
fn kubelet_ok(kubelet: &Kubelet, args: &str) {
    kubelet.sh(&format!("sidemount mount {args}"));
}

/// From a containerized kubelet: a bind made read-only by `bind,remount,ro`,
/// and one mounted `bind,ro`, refuse writes (EROFS) and show `ro` in the
/// kubelet's namespace, the host's and the executor's; `bind,remount,rw` makes
/// every copy writable again. `exec`: the VCS runs in exec mode, else binds go
/// to the host executor.
fn read_only_binds_reach_every_namespace(test: &str, exec: bool) {
    let Some(mut node) = Node::new(test) else {
        return;
    };
    let vcs = node.vcs("kernel");
    let container = node.vcs_container(&vcs);
    node.track(&container);
    let types = if exec { "none" } else { "tmpfs" };
    let config = node.config("sidemount.yaml", &Node::kernel_vcs(&vcs, types, "exec"));
    let daemon = node.start_daemon(&config);
    let kubelet = node.kubelet("tmpfs", &daemon.socket);
    let root = node.kubelet_root();
    let source = root.join("plugins/data");
    std::fs::create_dir_all(&source).unwrap();
    let (remounted, made_ro) = (node.volume("remounted"), node.volume("made-ro"));
    let s = quote(&source);
    let executor = if exec {
        format!("vcs/{vcs}")
    } else {
        "host".into()
    };
    let executor_container = exec.then_some(container.as_str());
    let ro = |dir: &Path| {
        let seen = read_only_everywhere(&kubelet, executor_container, dir);
        for (refused, options) in &seen {
            assert!(*refused && has_option(options, "ro"), "{seen:?}");
        }
    };

    // Made read-only when it is made.
    kubelet_ok(&kubelet, &format!("-o bind,ro {s} {}", quote(&made_ro)));
    ro(&made_ro);
    kubelet_ok(&kubelet, &format!("-o bind {s} {}", quote(&remounted)));
    let seen = read_only_everywhere(&kubelet, executor_container, &remounted);
    assert!(
        seen.iter()
            .all(|(refused, o)| !refused && has_option(o, "rw")),
        "{seen:?}"
    );
    kubelet_ok(
        &kubelet,
        &format!("-o bind,remount,ro {s} {}", quote(&remounted)),
    );
    ro(&remounted);
    let records = daemon.records_on(&remounted);
    assert_eq!(
        (records.len(), records[0].0.as_str()),
        (1, executor.as_str())
    );
    // And writable again, in every namespace.
    kubelet_ok(
        &kubelet,
        &format!("-o bind,remount,rw {s} {}", quote(&remounted)),
    );
    let seen = read_only_everywhere(&kubelet, executor_container, &remounted);
    assert!(
        seen.iter()
            .all(|(refused, o)| !refused && has_option(o, "rw")),
        "{seen:?}"
    );

    for target in [&remounted, &made_ro] {
        kubelet.sh(&format!("sidemount umount {}", quote(target)));
    }
    assert!(common::mount_points_under(None, &root.join("pods")).is_empty());
    assert!(daemon.recorded().is_empty());
}

#[test]
fn exec_mode_read_only_binds_are_read_only_in_every_namespace() {
    read_only_binds_reach_every_namespace(
        "exec_mode_read_only_binds_are_read_only_in_every_namespace",
        true,
    );
}

#[test]
fn host_read_only_binds_are_read_only_for_a_containerized_kubelet() {
    read_only_binds_reach_every_namespace(
        "host_read_only_binds_are_read_only_for_a_containerized_kubelet",
        false,
    );
}
