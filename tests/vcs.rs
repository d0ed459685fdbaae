//! End to end with a real dockerd: volumes mounted by volume-client containers
//! that sidemount creates, reached through the agent or `docker exec`, from a
//! kubelet-like container, and verified on the "host" and in the kubelet.

mod common;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use common::node::{docker, docker_ok, Node, BLOCK_IMAGE};
use common::{mount_points_under, quote, sh, Daemon};

/// Extra `serve` arguments: the agent binary CI built statically, if given.
fn agent_args(config: &Path) -> Vec<String> {
    let mut args = vec!["--config".to_string(), config.display().to_string()];
    if let Ok(bin) = std::env::var("SIDEMOUNT_AGENT_BINARY") {
        args.extend(["--agent-binary".into(), bin]);
    }
    args
}

fn start(node: &Node, config: &Path) -> Daemon {
    let args = agent_args(config);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    Daemon::start(&node.host, &node.kubelet_root(), &args)
}

fn volume(node: &Node, pod: &str) -> PathBuf {
    let v = node
        .kubelet_root()
        .join("pods")
        .join(pod)
        .join("volumes/kubernetes.io~sshfs/data");
    std::fs::create_dir_all(&v).unwrap();
    v
}

/// Processes on this node whose command line mentions `needle`.
fn processes_with(needle: &str) -> Vec<u32> {
    std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            std::fs::read(format!("/proc/{pid}/cmdline"))
                .is_ok_and(|c| String::from_utf8_lossy(&c).contains(needle))
        })
        .collect()
}

/// The mount(8) line the kubelet would run for an sshfs volume.
fn kubelet_mount(node: &Node, port: u16, target: &Path) -> String {
    format!(
        "mount -t fuse.sshfs -o {} {} {}",
        Node::sshfs_options(port),
        node.sshfs_source(),
        quote(target)
    )
}

fn sshfs_mount_reaches_host_and_kubelet(test: &str, mode: &str) {
    let Some(mut node) = Node::new(test) else {
        return;
    };
    let port = node.sshd();
    let vcs = node.vcs("sshfs");
    node.track(&node.vcs_container(&vcs));
    let config = node.config("sidemount.yaml", &node.sshfs_vcs(&vcs, mode));
    let daemon = start(&node, &config);
    let kubelet = node.kubelet("fuse.sshfs", &daemon.socket);
    let target = volume(&node, "p1");

    // The kubelet's mount(8) calls the helper, which forwards to the daemon.
    let out = kubelet.sh(&format!(
        "{} && echo mounted",
        kubelet_mount(&node, port, &target)
    ));
    assert!(out.contains("mounted"), "{out}");
    // The export's file is readable on the host and in the kubelet container.
    let file = target.join("hello.txt");
    assert_eq!(
        std::fs::read_to_string(&file).unwrap(),
        "hello from the export\n"
    );
    let inside = kubelet.sh(&format!("cat {}", quote(&file)));
    assert_eq!(inside, "hello from the export\n");
    assert_eq!(daemon.recorded(), [target.display().to_string()]);
    let status = daemon.get("/v1/status").unwrap();
    assert_eq!(status["vcs"][0]["healthy"], true, "{status}");
    assert_eq!(status["mounts"][0]["executor"], format!("vcs/{vcs}"));
    // The host has no sshfs: the client ran in the VCS container.
    assert!(std::process::Command::new("sh")
        .args(["-c", "command -v sshfs"])
        .output()
        .unwrap()
        .stdout
        .is_empty());

    kubelet.sh(&format!("umount {}", quote(&target)));
    assert!(mount_points_under(None, &node.kubelet_root()).is_empty());
    assert!(mount_points_under(Some(kubelet.pid()), &node.kubelet_root()).is_empty());
    assert!(daemon.recorded().is_empty());
    common::wait_until("the sshfs client exits", || {
        processes_with(&format!("port={port}")).is_empty()
    });
}

#[test]
fn sshfs_through_the_agent_reaches_host_and_kubelet() {
    sshfs_mount_reaches_host_and_kubelet(
        "sshfs_through_the_agent_reaches_host_and_kubelet",
        "agent",
    );
}

#[test]
fn sshfs_through_docker_exec_reaches_host_and_kubelet() {
    sshfs_mount_reaches_host_and_kubelet(
        "sshfs_through_docker_exec_reaches_host_and_kubelet",
        "exec",
    );
}

#[test]
fn restart_adopts_and_upgrade_waits_for_long_running_mounts() {
    let Some(mut node) = Node::new("restart_adopts_and_upgrade_waits_for_long_running_mounts")
    else {
        return;
    };
    let port = node.sshd();
    let vcs = node.vcs("sshfs");
    let container = node.vcs_container(&vcs);
    node.track(&container);
    let entry = node.sshfs_vcs(&vcs, "agent");
    let config = node.config("sidemount.yaml", &entry);
    let mut daemon = start(&node, &config);
    let kubelet = node.kubelet("fuse.sshfs", &daemon.socket);
    let target = volume(&node, "p1");
    kubelet.sh(&kubelet_mount(&node, port, &target));
    let id = docker_ok(&["inspect", "-f", "{{.Id}}", &container]);

    // Restarted with the same configuration: the container is adopted, not made
    // again, and the mount goes on working.
    daemon.stop(nix::sys::signal::Signal::SIGTERM);
    let mut daemon = start(&node, &config);
    assert_eq!(docker_ok(&["inspect", "-f", "{{.Id}}", &container]), id);
    assert!(std::fs::read_to_string(target.join("hello.txt")).is_ok());
    assert_eq!(daemon.recorded(), [target.display().to_string()]);

    // Restarted with a changed configuration: still adopted, reported outdated.
    daemon.stop(nix::sys::signal::Signal::SIGTERM);
    let changed = node.config(
        "changed.yaml",
        &format!("{entry}    env: {{SIDEMOUNT_TEST: changed}}\n"),
    );
    let daemon = start(&node, &changed);
    assert_eq!(docker_ok(&["inspect", "-f", "{{.Id}}", &container]), id);
    let status = daemon.get("/v1/status").unwrap();
    let note = status["vcs"][0]["note"].as_str().unwrap().to_owned();
    assert!(
        note.contains("outdated") && note.contains("sidemount upgrade"),
        "{note}"
    );

    // Upgrade is refused while the long-running mount exists...
    let sock = daemon.socket.display().to_string();
    let out = common::sidemount(&["upgrade", &vcs, "--socket", &sock]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && err.contains("[in_use]"), "{err}");
    assert_eq!(docker_ok(&["inspect", "-f", "{{.Id}}", &container]), id);
    // ...and done once it is gone.
    kubelet.sh(&format!("umount {}", quote(&target)));
    let out = common::expect_success(
        "upgrade",
        common::sidemount(&["upgrade", &vcs, "--socket", &sock]),
    );
    assert!(out.contains("replaced"), "{out}");
    assert_ne!(docker_ok(&["inspect", "-f", "{{.Id}}", &container]), id);
    let env = docker_ok(&["inspect", "-f", "{{.Config.Env}}", &container]);
    assert!(env.contains("SIDEMOUNT_TEST=changed"), "{env}");
    let status = daemon.get("/v1/status").unwrap();
    assert_eq!(status["vcs"][0]["healthy"], true, "{status}");
    assert_eq!(status["vcs"][0].get("note"), None, "{status}");
    // The new container mounts too.
    kubelet.sh(&kubelet_mount(&node, port, &target));
    kubelet.sh(&format!("umount {}", quote(&target)));
    // --force replaces even with a long-running mount (which then breaks).
    let out = common::expect_success(
        "upgrade --force",
        common::sidemount(&["upgrade", &vcs, "--force", "--socket", &sock]),
    );
    assert!(out.contains("replaced"), "{out}");
}

#[test]
fn a_vcs_container_killed_mid_request_leaves_nothing() {
    let Some(mut node) = Node::new("a_vcs_container_killed_mid_request_leaves_nothing") else {
        return;
    };
    let port = node.sshd();
    let vcs = node.vcs("sshfs");
    let container = node.vcs_container(&vcs);
    node.track(&container);
    let config = node.config("sidemount.yaml", &node.sshfs_vcs(&vcs, "agent"));
    let daemon = start(&node, &config);
    let kubelet = node.kubelet("fuse.sshfs", &daemon.socket);
    let target = volume(&node, "p1");

    // A server that accepts and never answers: sshfs hangs in the container.
    let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let silent_port = silent.local_addr().unwrap().port();
    let line = kubelet_mount(&node, silent_port, &target);
    let name = kubelet.name.clone();
    let request = std::thread::spawn(move || {
        let started = Instant::now();
        let out = docker(&["exec", &name, "sh", "-euc", &line]);
        (out, started.elapsed())
    });
    let _peer = silent.accept().unwrap();
    docker_ok(&["kill", &container]);
    let (out, took) = request.join().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(32), "{err}");
    assert!(
        took < Duration::from_secs(25),
        "the request hung for {took:?}: {err}\n{}",
        daemon.log_text()
    );
    assert!(mount_points_under(None, &node.kubelet_root()).is_empty());
    assert!(daemon.recorded().is_empty());
    // The next request brings the container back and succeeds.
    kubelet.sh(&kubelet_mount(&node, port, &target));
    assert!(target.join("hello.txt").exists());
    kubelet.sh(&format!("umount {}", quote(&target)));
}

#[test]
fn run_formats_a_block_device_that_is_then_mounted_everywhere() {
    let Some(mut node) = Node::new("run_formats_a_block_device_that_is_then_mounted_everywhere")
    else {
        return;
    };
    let image = node.dir("disks").join("disk.img");
    sh(&format!("truncate -s 32M {}", quote(&image)));
    let device = common::LoopDevice::attach(&image);
    let vcs = node.vcs("block");
    node.track(&node.vcs_container(&vcs));
    let config = node.config(
        "sidemount.yaml",
        &format!(
            "  - name: {vcs}\n    types: [ext4]\n    image: {BLOCK_IMAGE}\n    run: [mkfs.ext4, blkid]\n    security: {{privileged: false, capabilities: [SYS_ADMIN], devices: [{}]}}\n",
            device.device
        ),
    );
    let daemon = start(&node, &config);
    let sock = daemon.socket.display().to_string();
    let run = |command: &[&str]| {
        let mut args = vec!["run", "--vcs", &vcs, "--socket", &sock, "--"];
        args.extend(command);
        common::sidemount(&args)
    };
    // Not on the allow-list: refused, nothing run.
    let out = run(&["sh", "-c", "id"]);
    assert!(String::from_utf8_lossy(&out.stderr).contains("[not_allowed]"));
    common::expect_success("run mkfs", run(&["mkfs.ext4", "-q", &device.device]));
    let out = run(&["blkid", &device.device]);
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("TYPE=\"ext4\""),
        "{out:?}"
    );

    let kubelet = node.kubelet("ext4", &daemon.socket);
    let target = volume(&node, "p2");
    kubelet.sh(&format!(
        "mount -t ext4 {} {}",
        device.device,
        quote(&target)
    ));
    let status = daemon.get("/v1/status").unwrap();
    assert_eq!(status["mounts"][0]["executor"], format!("vcs/{vcs}"));
    kubelet.sh(&format!("echo written > {}/f", quote(&target)));
    assert_eq!(
        std::fs::read_to_string(target.join("f")).unwrap(),
        "written\n"
    );
    kubelet.sh(&format!("umount {}", quote(&target)));
    assert!(mount_points_under(None, &node.kubelet_root()).is_empty());
}
