//! End to end with a real dockerd: volumes mounted by volume-client containers
//! that sidemount creates, reached through the agent or `docker exec`, from a
//! kubelet-like container, and verified on the "host" and in the kubelet.

mod common;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use common::node::{docker, docker_ok, Node, PrivateDockerd, BASE_IMAGE, BLOCK_IMAGE};
use common::{mount_points_under, quote, sh};

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

fn sshfs_mount_reaches_host_and_kubelet(test: &str, mode: &str) {
    let Some(mut node) = Node::new(test) else {
        return;
    };
    let port = node.sshd();
    let (vcs, _, config) = node.sshfs_config(mode);
    let daemon = node.start_daemon(&config);
    let kubelet = node.kubelet("fuse.sshfs", &daemon.socket);
    let target = node.volume("p1");

    // The kubelet's mount(8) calls the helper, which forwards to the daemon.
    let out = kubelet.sh(&format!(
        "{} && echo mounted",
        node.mount_line(port, &target)
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

/// Mounts of fuse.sshfs in the namespace of `pid` outside `root`.
fn sshfs_outside(pid: u32, root: &Path) -> Vec<PathBuf> {
    use sidemount::ns::mountinfo::{MountTable, ProcRoot};
    MountTable::read(&ProcRoot::default(), Some(pid))
        .unwrap()
        .mounts
        .into_iter()
        .filter(|m| m.fstype == "fuse.sshfs" && !m.target.starts_with(root))
        .map(|m| m.target)
        .collect()
}

#[test]
fn exec_mode_never_mounts_outside_the_roots_when_the_target_is_swapped() {
    let Some(mut node) =
        Node::new("exec_mode_never_mounts_outside_the_roots_when_the_target_is_swapped")
    else {
        return;
    };
    let port = node.sshd();
    let (_, container, config) = node.sshfs_config("exec");
    let daemon = node.start_daemon(&config);
    let kubelet = node.kubelet("fuse.sshfs", &daemon.socket);
    let target = node.volume("p1");
    // A pod swaps the volume directory with a symlink to a directory outside the
    // roots that exists in the VCS container, where mount(8) runs.
    docker_ok(&["exec", &container, "mkdir", "-p", "/tmp/escape"]);
    let link = target.with_file_name("link");
    std::os::unix::fs::symlink("/tmp/escape", &link).unwrap();
    let vcs_pid: u32 = docker_ok(&["inspect", "-f", "{{.State.Pid}}", &container])
        .trim()
        .parse()
        .unwrap();
    let root = node.kubelet_root();
    let swapper = common::swap::Swapper::start(&target, &link);
    let (tries, mut mounted) = (30, 0);
    for _ in 0..tries {
        if kubelet
            .run(&node.mount_line(port, &target))
            .status
            .success()
        {
            mounted += 1;
            // Retried until the swap leaves the path whole.
            common::wait_until("the volume unmounts", || {
                kubelet
                    .run(&format!("umount {}", quote(&target)))
                    .status
                    .success()
            });
        }
        assert_eq!(sshfs_outside(vcs_pid, &root), Vec::<PathBuf>::new());
    }
    let swaps = swapper.stop();
    eprintln!("{tries} tries, {mounted} mounted, {swaps} swaps");
    assert!(
        swaps > 0 && mounted > 0,
        "the attack or the mounts never ran"
    );
    assert_eq!(sshfs_outside(vcs_pid, &root), Vec::<PathBuf>::new());
    assert!(mount_points_under(None, &root).is_empty());
    assert!(daemon.recorded().is_empty());
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
    let mut daemon = node.start_daemon(&config);
    let kubelet = node.kubelet("fuse.sshfs", &daemon.socket);
    let target = node.volume("p1");
    kubelet.sh(&node.mount_line(port, &target));
    let id = docker_ok(&["inspect", "-f", "{{.Id}}", &container]);

    // Restarted with the same configuration: the container is adopted, not made
    // again, and the mount goes on working.
    daemon.stop(nix::sys::signal::Signal::SIGTERM);
    let mut daemon = node.start_daemon(&config);
    assert_eq!(docker_ok(&["inspect", "-f", "{{.Id}}", &container]), id);
    assert!(std::fs::read_to_string(target.join("hello.txt")).is_ok());
    assert_eq!(daemon.recorded(), [target.display().to_string()]);

    // Restarted with a changed configuration: still adopted, reported outdated.
    daemon.stop(nix::sys::signal::Signal::SIGTERM);
    let changed = node.config(
        "changed.yaml",
        &format!("{entry}    env: {{SIDEMOUNT_TEST: changed}}\n"),
    );
    let daemon = node.start_daemon(&changed);
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
    kubelet.sh(&node.mount_line(port, &target));
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
    let (_, container, config) = node.sshfs_config("agent");
    let daemon = node.start_daemon(&config);
    let kubelet = node.kubelet("fuse.sshfs", &daemon.socket);
    let target = node.volume("p1");

    // A server that accepts and never answers: sshfs hangs in the container.
    let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let silent_port = silent.local_addr().unwrap().port();
    let line = node.mount_line(silent_port, &target);
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
    kubelet.sh(&node.mount_line(port, &target));
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
    let daemon = node.start_daemon(&config);
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
    let target = node.volume("p2");
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

#[test]
fn dockerd_stopped_requests_fail_at_once_and_leave_nothing() {
    let Some(node) = Node::new("dockerd_stopped_requests_fail_at_once_and_leave_nothing") else {
        return;
    };
    let mut dockerd = PrivateDockerd::start(&node, &[BASE_IMAGE]);
    let (agent, exec) = (node.vcs("agent"), node.vcs("exec"));
    let entries =
        Node::kernel_vcs(&agent, "tmpfs", "agent") + &Node::kernel_vcs(&exec, "ramfs", "exec");
    let config = node.config("sidemount.yaml", &entries);
    let daemon = node.start_daemon_with_env(&config, &[("DOCKER_HOST", &dockerd.host)]);
    let [a, b, c, d] = ["a", "b", "c", "d"].map(|p| node.volume(p));
    let path = |p: &Path| p.to_str().unwrap().to_owned();
    for (fstype, target) in [("tmpfs", &a), ("ramfs", &b)] {
        let (code, err) = daemon.forward(&["mount", "-t", fstype, fstype, &path(target)]);
        assert_eq!(code, Some(0), "{fstype}: {err}");
    }
    let recorded = vec![path(&a), path(&b)];
    assert_eq!(daemon.recorded(), recorded);

    dockerd.stop();
    // Health says why; the daemon itself still answers.
    let out = common::sidemount(&["status", "--healthy", "--socket", &path(&daemon.socket)]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains(&agent) && err.contains(&exec), "{err}");

    // Agent mode: the container is gone with its engine and cannot come back.
    let (code, err) = daemon.forward(&["mount", "-t", "tmpfs", "tmpfs", &path(&c)]);
    assert_eq!(code, Some(32), "{err}");
    assert!(
        err.contains("[executor_unavailable]") && err.contains("cannot be brought back"),
        "{err}"
    );
    assert!(err.contains("Docker"), "names the engine: {err}");
    // Exec mode: docker exec cannot reach the engine.
    let (code, err) = daemon.forward(&["mount", "-t", "ramfs", "ramfs", &path(&d)]);
    assert_eq!(code, Some(32), "{err}");
    assert!(
        err.contains("[executor_unavailable]") && err.contains("Docker"),
        "{err}"
    );
    // Unmounting what a dead container made fails too, and keeps its record.
    let (code, err) = daemon.forward(&["umount", &path(&a)]);
    assert_eq!(code, Some(32), "{err}");
    assert!(err.contains("[executor_unavailable]"), "{err}");

    // Nothing half done: the new targets hold nothing, the record is as it was.
    let pods = node.kubelet_root().join("pods");
    let mounted: Vec<PathBuf> = mount_points_under(None, &pods);
    assert!(
        !mounted.contains(&c) && !mounted.contains(&d),
        "{mounted:?}"
    );
    assert_eq!(daemon.recorded(), recorded);
}

/// Posts `body` to `path` of the daemon from this process (no client process
/// whose command line would carry it); the status code and the answer.
fn post(socket: &Path, path: &str, body: &serde_json::Value) -> (u16, String) {
    use std::io::{Read, Write};
    let body = body.to_string();
    let mut s = std::os::unix::net::UnixStream::connect(socket).unwrap();
    write!(
        s,
        "POST {path} HTTP/1.1\r\nHost: sidemount\r\nContent-Type: application/json\r\nConnection: close\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    let mut answer = String::new();
    s.read_to_string(&mut answer).unwrap();
    let code = answer
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    (code, answer)
}

/// Every file under `dir`, read whole, as text.
fn files_under(dir: &Path) -> String {
    let mut all = String::new();
    for entry in std::fs::read_dir(dir).unwrap().flatten() {
        let path = entry.path();
        if path.is_dir() && !path.ends_with("staging") {
            all.push_str(&files_under(&path));
        } else if path.is_file() {
            all.push_str(&String::from_utf8_lossy(
                &std::fs::read(&path).unwrap_or_default(),
            ));
        }
    }
    all
}

const PASSWORD: &str = "pw-9f1c2e7d";
const WRONG_PASSWORD: &str = "pw-wrong-5a3b";

fn sshfs_password_reaches_sshfs_on_its_stdin_only(test: &str, mode: &str) {
    let Some(mut node) = Node::new(test) else {
        return;
    };
    let port = node.sshd();
    node.allow_password(port, "smuser", PASSWORD);
    let (_, _, config) = node.sshfs_config(mode);
    let daemon = node.start_daemon(&config);
    let request = |target: &Path, password: &str| {
        serde_json::json!({
            "source": format!("smuser@127.0.0.1:{}", node.dir("export").display()),
            "target": target,
            "fstype": "fuse.sshfs",
            "options": [
                format!("port={port}"), "password_stdin", "PubkeyAuthentication=no",
                "NumberOfPasswordPrompts=1", "StrictHostKeyChecking=no",
                "UserKnownHostsFile=/dev/null", "allow_other",
            ],
            "sensitive_options": [format!("password={password}")],
        })
    };

    // The mount, while every command line on the node is sampled.
    let target = node.volume("p1");
    let socket = daemon.socket.clone();
    let body = request(&target, PASSWORD);
    let mounting = std::thread::spawn(move || post(&socket, "/v1/mounts", &body));
    let (mut leaked, mut seen) = (Vec::new(), 0);
    while !mounting.is_finished() {
        for entry in std::fs::read_dir("/proc").unwrap().flatten() {
            let Ok(line) = std::fs::read(entry.path().join("cmdline")) else {
                continue;
            };
            let line = String::from_utf8_lossy(&line).replace('\0', " ");
            seen += usize::from(line.contains("password_stdin"));
            if line.contains(PASSWORD) {
                leaked.push(line.replace(PASSWORD, "<password>"));
            }
        }
    }
    let (code, answer) = mounting.join().unwrap();
    assert!(seen > 0, "the sampling saw the mount's commands");
    assert!(
        leaked.is_empty(),
        "the password on a command line: {leaked:?}"
    );
    assert_eq!(code, 200, "{answer}");
    // Mounted by password: sshfs read it on its stdin.
    let fstype = sh(&format!(
        "findmnt -n -o FSTYPE --mountpoint {}",
        quote(&target)
    ));
    assert_eq!(fstype.trim(), "fuse.sshfs");
    assert_eq!(
        std::fs::read_to_string(target.join("hello.txt")).unwrap(),
        "hello from the export\n"
    );
    assert!(!answer.contains(PASSWORD), "{answer}");
    let status = daemon.get("/v1/status").unwrap().to_string();
    assert!(status.contains("password=<redacted>"), "{status}");
    assert!(!status.contains(PASSWORD), "{status}");

    // A wrong password: refused, nothing left, and not named anywhere.
    let other = node.volume("p2");
    let (code, answer) = post(
        &daemon.socket,
        "/v1/mounts",
        &request(&other, WRONG_PASSWORD),
    );
    assert_ne!(code, 200, "{answer}");
    assert!(!answer.contains(WRONG_PASSWORD), "{answer}");
    assert!(mount_points_under(None, &other).is_empty());

    let (code, answer) = post(
        &daemon.socket,
        "/v1/unmounts",
        &serde_json::json!({"target": target}),
    );
    assert_eq!(code, 200, "{answer}");
    let kept = daemon.log_text() + &files_under(&daemon.state_dir);
    assert!(
        kept.contains("smuser@127.0.0.1"),
        "the log and the record name the mount"
    );
    for secret in [PASSWORD, WRONG_PASSWORD] {
        assert!(
            !kept.contains(secret),
            "{secret} in the daemon's log or state"
        );
    }
}

#[test]
fn an_sshfs_password_reaches_sshfs_on_its_stdin_through_the_agent() {
    sshfs_password_reaches_sshfs_on_its_stdin_only(
        "an_sshfs_password_reaches_sshfs_on_its_stdin_through_the_agent",
        "agent",
    );
}

#[test]
fn an_sshfs_password_reaches_sshfs_on_its_stdin_through_docker_exec() {
    sshfs_password_reaches_sshfs_on_its_stdin_only(
        "an_sshfs_password_reaches_sshfs_on_its_stdin_through_docker_exec",
        "exec",
    );
}
