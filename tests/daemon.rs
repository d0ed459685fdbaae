//! The node daemon and the mount helper, end to end on real namespaces: util-linux
//! mount(8) calls `mount.TYPE` (sidemount), which forwards to `sidemount serve`,
//! which mounts and proves the mount in the host's and the caller's namespaces.

mod common;

use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use common::{
    expect_success, external_vcs_config, install_helpers_line, kubelet_root, mount_points_under,
    pod_volume, quote, sh, sidemount, volume, Daemon, ExternalAgent, Host, LoopDevice, Namespace,
    SIDEMOUNT,
};
use nix::sys::signal::Signal;

/// Where the kubelet runs: in the test's "host" namespace, or in a container-like
/// namespace whose kubelet root is `:rshared`.
enum Kubelet {
    OnHost,
    InContainer(Namespace),
}

impl Kubelet {
    fn command(&self, program: &str) -> Command {
        match self {
            Kubelet::OnHost => Command::new(program),
            Kubelet::InContainer(ns) => ns.command(program),
        }
    }

    /// Runs a shell line as the kubelet would, with the daemon's socket.
    fn run(&self, daemon: &Daemon, line: &str) -> Output {
        self.command("sh")
            .args(["-c", line])
            .env("SIDEMOUNT_SOCKET", &daemon.socket)
            .output()
            .unwrap()
    }

    fn pid(&self) -> Option<u32> {
        match self {
            Kubelet::OnHost => None,
            Kubelet::InContainer(ns) => Some(ns.pid),
        }
    }
}

fn is_mounted(pid: Option<u32>, target: &Path) -> bool {
    mount_points_under(pid, target).iter().any(|t| t == target)
}

/// tmpfs, a bind and a loop-backed ext4 volume: each visible to host and kubelet,
/// then unmounted and gone from both, with the record following.
fn mounts_reach_host_and_kubelet(host: &Host, container: bool) {
    let root = kubelet_root(host);
    let helpers = install_helpers_line(host, "tmpfs,ext4");
    let kubelet = if container {
        Kubelet::InContainer(host.namespace("kubelet", &helpers))
    } else {
        sh(&helpers);
        Kubelet::OnHost
    };
    // Debug logging shows each verification that had to read mountinfo.
    let daemon = Daemon::start_with_env(host, &root, &[], &[("SIDEMOUNT_LOG", "sidemount=debug")]);
    let disk = LoopDevice::ext4(host, "disk");
    let source = host.dir("var/lib/kubelet/plugins/shared-data");
    std::fs::write(source.join("hello"), "from the plugin dir").unwrap();

    let tmp = volume(&root, "scratch");
    let bind = volume(&root, "data");
    let ext4 = volume(&root, "disk");
    let lines = [
        // mount(8) runs the mount.tmpfs helper: sidemount.
        format!("mount -t tmpfs -o size=1m tmpfs {}", quote(&tmp)),
        // kubelet --experimental-mounter-path convention.
        format!(
            "{SIDEMOUNT} mount -o bind {} {}",
            quote(&source),
            quote(&bind)
        ),
        format!("mount -t ext4 {} {}", disk.device, quote(&ext4)),
    ];
    for line in &lines {
        let out = kubelet.run(&daemon, line);
        expect_success(line, out);
    }
    for target in [&tmp, &bind, &ext4] {
        assert!(
            is_mounted(None, target),
            "{} not on the host",
            target.display()
        );
        assert!(
            is_mounted(kubelet.pid(), target),
            "{} not in the kubelet",
            target.display()
        );
    }
    // Data written on one side is read on the other.
    expect_success(
        "write",
        kubelet.run(&daemon, &format!("echo hi > {}/f", quote(&ext4))),
    );
    assert_eq!(std::fs::read_to_string(ext4.join("f")).unwrap(), "hi\n");
    assert_eq!(
        std::fs::read_to_string(bind.join("hello")).unwrap(),
        "from the plugin dir"
    );
    let mut recorded = daemon.recorded();
    recorded.sort();
    let mut want: Vec<String> = [&tmp, &bind, &ext4]
        .iter()
        .map(|p| p.display().to_string())
        .collect();
    want.sort();
    assert_eq!(recorded, want);

    // umount(8) runs umount.TYPE: sidemount again.
    for target in [&tmp, &bind, &ext4] {
        expect_success(
            "umount",
            kubelet.run(&daemon, &format!("umount {}", quote(target))),
        );
    }
    let pods = root.join("pods");
    assert_eq!(mount_points_under(None, &pods), Vec::<PathBuf>::new());
    assert_eq!(
        mount_points_under(kubelet.pid(), &pods),
        Vec::<PathBuf>::new()
    );
    assert!(daemon.recorded().is_empty());
    // Every namespace was looked up by statx(2) and statmount(2), none read whole.
    let log = daemon.log_text();
    assert!(log.contains("mounted and verified"), "{log}");
    assert!(!log.contains("reading mountinfo instead"), "{log}");
}

privileged_test! {
    fn kubelet_on_the_host_mounts_through_the_daemon(host: &Host) {
        mounts_reach_host_and_kubelet(host, false);
    }
}

privileged_test! {
    fn kubelet_in_a_container_mounts_through_the_daemon(host: &Host) {
        mounts_reach_host_and_kubelet(host, true);
    }
}

privileged_test! {
    fn a_private_kubelet_root_fails_naming_the_break(host: &Host) {
        let root = kubelet_root(host);
        let helpers = install_helpers_line(host, "tmpfs");
        let kubelet = Kubelet::InContainer(host.namespace(
            "kubelet",
            &format!("{helpers}\nmount --make-private {}", quote(&root)),
        ));
        let daemon = Daemon::start(host, &root, &[]);
        let target = volume(&root, "v");
        let out = kubelet.run(&daemon, &format!("mount -t tmpfs tmpfs {}", quote(&target)));
        assert_eq!(out.status.code(), Some(32));
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains("did not reach the caller (pid"), "{err}");
        assert!(err.contains(&format!("{} is private in the caller", root.display())), "{err}");
        assert!(err.contains(&format!("fix: run `sidemount share {}`", root.display())), "{err}");
        assert!(err.contains("[propagation_broken]"), "{err}");
        assert!(!is_mounted(None, &target), "left on the host");
        assert!(!is_mounted(kubelet.pid(), &target), "left in the kubelet");
        assert!(daemon.recorded().is_empty());
    }
}

privileged_test! {
    fn bad_requests_are_refused_each_with_its_reason(host: &Host) {
        let root = kubelet_root(host);
        let daemon = Daemon::start(host, &root, &[]);
        let before = mount_points_under(None, &host.scratch);
        let refused = |args: &[&str], want: &str| {
            let out = daemon.client([&["mount"], args].concat());
            let err = String::from_utf8_lossy(&out.stderr);
            assert_eq!(out.status.code(), Some(32), "{args:?}: {err}");
            assert!(err.contains(want), "{args:?}: want {want:?} in {err}");
        };
        let outside = host.dir("elsewhere");
        refused(&["-t", "tmpfs", "tmpfs", outside.to_str().unwrap()], "outside the allowed roots");
        let dotdot = format!("{}/pods/../../elsewhere", root.display());
        refused(&["-t", "tmpfs", "tmpfs", &dotdot], "'..'");
        std::fs::create_dir_all(root.join("pods/p1/volumes")).unwrap();
        std::os::unix::fs::symlink("/etc", root.join("pods/p1/volumes/evil")).unwrap();
        let via_link = format!("{}/pods/p1/volumes/evil/ssl", root.display());
        refused(&["-t", "tmpfs", "tmpfs", &via_link], "symbolic link");
        let target = volume(&root, "v");
        let t = target.to_str().unwrap();
        refused(&["-t", "tmpfs", "--", "-oremount", t], "begins with '-'");
        refused(&["-t", "tmp fs", "tmpfs", t], "filesystem type");
        assert_eq!(mount_points_under(None, &host.scratch), before, "something was mounted");

        // A non-root caller (the socket opened up to let it reach the daemon).
        sh(&format!("chmod 0666 {} && chmod 0755 {}", quote(&daemon.socket), quote(daemon.socket.parent().unwrap())));
        let out = Command::new("setpriv")
            .args(["--reuid=65534", "--regid=65534", "--clear-groups", SIDEMOUNT, "mount", "-t", "tmpfs", "tmpfs", t])
            .env("SIDEMOUNT_SOCKET", &daemon.socket)
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(32), "{err}");
        assert!(err.contains("uid 65534") && err.contains("[forbidden]"), "{err}");
        assert_eq!(mount_points_under(None, &host.scratch), before);
        assert!(daemon.recorded().is_empty());
    }
}

privileged_test! {
    fn secrets_never_reach_logs_errors_or_status(host: &Host) {
        let root = kubelet_root(host);
        let daemon = Daemon::start(host, &root, &[]);
        let target = volume(&root, "v");
        let t = target.to_str().unwrap();
        // tmpfs refuses the option: the failure must not echo the secret.
        let out = daemon.client(["mount", "-t", "tmpfs", "-o", "password=hunter2", "tmpfs", t]);
        assert_eq!(out.status.code(), Some(32));
        assert!(!String::from_utf8_lossy(&out.stderr).contains("hunter2"));
        // A caller-marked option mounts, and is shown nowhere.
        let out = daemon.client(["mount", "-t", "tmpfs", "--sensitive-options", "size=12345k", "-v", "tmpfs", t]);
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "{err}");
        assert!(!err.contains("12345k"), "{err}");
        let status = daemon.get("/v1/status").unwrap().to_string();
        assert!(status.contains("<redacted>") && !status.contains("12345k"), "{status}");
        let state: String = std::fs::read_dir(daemon.state_dir.join("mounts")).unwrap()
            .map(|f| std::fs::read_to_string(f.unwrap().path()).unwrap())
            .collect();
        assert!(state.contains("<redacted>") && !state.contains("12345k"), "{state}");
        expect_success("umount", daemon.client(["umount", t]));
        let log = daemon.log_text();
        assert!(log.contains("mounted and verified"), "{log}");
        // The failed request is logged, with its peer and code, and no secret.
        assert!(log.contains("request failed") && log.contains("code=mount_failed") && log.contains("peer_uid=Some(0)"), "{log}");
        assert!(!log.contains("hunter2") && !log.contains("12345k"), "{log}");
    }
}

/// Mounts tmpfs through `daemon` with `size=...,ro` marked sensitive, by one mount(2)
/// and by mount(8) (a userspace option forces it): the mount is read-only at that
/// size, and the size shows nowhere: not in the daemon's log, status, records or
/// state files, nor in `logs` (other logs to search).
fn sensitive_options_take_effect_unseen(root: &Path, daemon: &Daemon, logs: &[PathBuf]) {
    let shown = || {
        let mut text = daemon.log_text();
        text.push_str(&daemon.get("/v1/status").unwrap().to_string());
        text.push_str(&daemon.get("/v1/mounts").unwrap().to_string());
        let state = std::fs::read_dir(&daemon.state_dir)
            .unwrap()
            .map(|e| e.unwrap().path());
        for file in state.chain(logs.iter().cloned()) {
            text.push_str(&std::fs::read_to_string(file).unwrap_or_default());
        }
        text
    };
    for (plain, size, kib) in [
        (None, "2m", "size=2048k"),
        (Some("x-sidemount.test=1"), "3m", "size=3072k"),
    ] {
        let target = volume(root, size);
        let t = target.to_str().unwrap();
        let sensitive = format!("size={size},ro");
        let mut args = vec!["mount", "-t", "tmpfs", "--sensitive-options", &sensitive];
        args.extend(plain.iter().flat_map(|o| ["-o", *o]));
        args.extend(["tmpfs", t]);
        expect_success("mount", daemon.client(&args));
        let seen = findmnt(&target);
        let fields: Vec<&str> = seen.split_whitespace().collect();
        assert!(
            fields[0] == "tmpfs" && fields[1].starts_with("ro,"),
            "{seen}"
        );
        assert!(fields[2].split(',').any(|o| o == kib), "{seen}");
        let text = shown();
        assert!(text.contains("<redacted>"), "{text}");
        assert!(
            !text.contains("size=") && !text.contains(&sensitive),
            "{text}"
        );
        expect_success("umount", daemon.client(["umount", t]));
    }
}

privileged_test! {
    fn sensitive_options_reach_the_mount_and_nothing_shown(host: &Host) {
        let root = kubelet_root(host);
        let daemon = Daemon::start(host, &root, &[]);
        sensitive_options_take_effect_unseen(&root, &daemon, &[]);
    }
}

privileged_test! {
    fn sensitive_options_reach_the_agents_mount_and_nothing_shown(host: &Host) {
        let root = kubelet_root(host);
        let config = external_vcs_config(host, &root, "ext", "[tmpfs]");
        let _agent = ExternalAgent::start(host, "ext");
        let daemon = Daemon::start(host, &root, &["--config", config.to_str().unwrap()]);
        let agent_log = host.dir("run").join("agent-ext.log");
        sensitive_options_take_effect_unseen(&root, &daemon, &[agent_log]);
        let log = daemon.log_text();
        assert_eq!(log.matches(r#"executor="vcs/ext" fstype=tmpfs"#).count(), 2, "{log}");
    }
}

privileged_test! {
    fn a_killed_daemon_restarts_knowing_its_mounts(host: &Host) {
        let root = kubelet_root(host);
        let mut daemon = Daemon::start(host, &root, &[]);
        let (a, b) = (volume(&root, "a"), volume(&root, "b"));
        for t in [&a, &b] {
            let out = daemon.client(["mount", "-t", "tmpfs", "tmpfs", t.to_str().unwrap()]);
            expect_success("mount", out);
        }
        assert_eq!(daemon.stop(Signal::SIGKILL).signal(), Some(9));
        // One mount disappears while the daemon is away.
        sh(&format!("umount {}", quote(&b)));
        let daemon = Daemon::start(host, &root, &[]);
        assert_eq!(daemon.recorded(), vec![a.display().to_string()]);
        let status = daemon.get("/v1/status").unwrap();
        assert_eq!(status["reconciled_away"][0]["target"], b.display().to_string());
        assert!(is_mounted(None, &a), "nothing is unmounted behind the user's back");
    }
}

privileged_test! {
    fn sigterm_finishes_and_leaves_mounts(host: &Host) {
        let root = kubelet_root(host);
        let mut daemon = Daemon::start(host, &root, &[]);
        let target = volume(&root, "v");
        let out = daemon.client(["mount", "-t", "tmpfs", "tmpfs", target.to_str().unwrap()]);
        expect_success("mount", out);
        assert!(daemon.stop(Signal::SIGTERM).success());
        assert!(is_mounted(None, &target));
        assert!(daemon.log_text().contains("stopped; mounts stay"));
        // What the next start reads first is written as the daemon stops: the
        // record's cache holds the mount, and the daemon started again knows it.
        let cache = std::fs::read_to_string(daemon.state_dir.join("mounts-cache.json")).unwrap();
        assert!(cache.contains(target.to_str().unwrap()), "{cache}");
        let daemon = Daemon::start(host, &root, &[]);
        assert_eq!(daemon.recorded(), vec![target.display().to_string()]);
    }
}

privileged_test! {
    fn three_hundred_concurrent_mounts_leave_nothing(host: &Host) {
        let root = kubelet_root(host);
        let helpers = install_helpers_line(host, "tmpfs");
        sh(&helpers);
        let daemon = Daemon::start(host, &root, &[]);
        let targets: Vec<PathBuf> = (0..100)
            .flat_map(|pod| (0..3).map(move |v| (pod, v)))
            .map(|(pod, v)| pod_volume(&root, &format!("pod-{pod}"), &format!("vol-{v}")))
            .collect();
        let all = |line: &dyn Fn(&Path) -> String| {
            let children: Vec<_> = targets
                .iter()
                .map(|t| {
                    Command::new("sh")
                        .args(["-c", &line(t)])
                        .env("SIDEMOUNT_SOCKET", &daemon.socket)
                        .stderr(std::process::Stdio::piped())
                        .spawn()
                        .unwrap()
                })
                .collect();
            for child in children {
                expect_success("concurrent", child.wait_with_output().unwrap());
            }
        };
        all(&|t| format!("mount -t tmpfs -o size=64k tmpfs {}", quote(t)));
        assert_eq!(mount_points_under(None, &root.join("pods")).len(), 300);
        assert_eq!(daemon.recorded().len(), 300);
        all(&|t| format!("umount {}", quote(t)));
        assert_eq!(mount_points_under(None, &root.join("pods")), Vec::<PathBuf>::new());
        assert!(daemon.recorded().is_empty());
    }
}

/// findmnt's view of `target` in this namespace: "TYPE VFS-OPTIONS FS-OPTIONS".
fn findmnt(target: &Path) -> String {
    sh(&format!(
        "findmnt -n -o FSTYPE,VFS-OPTIONS,FS-OPTIONS --mountpoint {}",
        quote(target)
    ))
}

privileged_test! {
    fn kernel_filesystems_take_one_syscall_and_the_rest_mount8(host: &Host) {
        let root = kubelet_root(host);
        // mount(8) and umount(8) as the daemon finds them: they log, then run.
        let shims = host.dir("shims");
        let log = host.dir("run").join("util-linux.log");
        for tool in ["mount", "umount"] {
            let shim = shims.join(tool);
            std::fs::write(&shim, format!(
                "#!/bin/sh\necho \"{tool} $*\" >> {}\nexec /usr/bin/{tool} \"$@\"\n",
                quote(&log)
            )).unwrap();
            sh(&format!("chmod +x {}", quote(&shim)));
        }
        let path = format!("{}:{}", shims.display(), std::env::var("PATH").unwrap());
        let daemon = Daemon::start_with_env(host, &root, &[], &[("PATH", &path), ("SIDEMOUNT_LOG", "sidemount=debug")]);
        let logged = || std::fs::read_to_string(&log).unwrap_or_default();
        let fell_back = "the one-call mount failed";
        let (tmp, bind, bad) = (volume(&root, "tmp"), volume(&root, "bind"), volume(&root, "bad"));

        // A tmpfs is one mount(2), with the VFS options as flags and the rest as data.
        let t = tmp.to_str().unwrap();
        expect_success("tmpfs", daemon.client(["mount", "-t", "tmpfs", "-o", "size=2m,nosuid,mode=0750", "tmpfs", t]));
        let seen = findmnt(&tmp);
        assert!(seen.starts_with("tmpfs "), "{seen}");
        assert!(seen.contains("nosuid") && seen.contains("size=2048k") && seen.contains("mode=750"), "{seen}");
        expect_success("umount", daemon.client(["umount", t]));
        assert!(!is_mounted(None, &tmp));
        assert_eq!(logged(), "", "no util-linux for a tmpfs");

        // A bind is a clone of the checked source's handle, moved onto the target's:
        // no mount(8), which would resolve both names again.
        let source = host.dir("var/lib/kubelet/plugins/data");
        expect_success("bind", daemon.client(["mount", "-o", "bind,ro", source.to_str().unwrap(), bind.to_str().unwrap()]));
        assert!(is_mounted(None, &bind));
        assert!(findmnt(&bind).contains(" ro,"), "{}", findmnt(&bind));
        assert_eq!(logged(), "", "no util-linux for a bind");
        expect_success("umount", daemon.client(["umount", bind.to_str().unwrap()]));

        // Options only libmount knows go to mount(8) at once: the kernel never
        // sees them (no "Unknown parameter" in its log, no failed call first).
        expect_success("tmpfs", daemon.client(["mount", "-t", "tmpfs", "-o", "nousers,uid=nobody,size=1m", "tmpfs", t]));
        assert!(logged().contains("nousers,uid=nobody,size=1m"), "{}", logged());
        assert!(findmnt(&tmp).contains("uid=65534"), "{}", findmnt(&tmp));
        assert!(!daemon.log_text().contains(fell_back), "{}", daemon.log_text());
        expect_success("umount", daemon.client(["umount", t]));

        // A failed call goes to mount(8), whose own error the caller reads.
        let out = daemon.client(["mount", "-t", "tmpfs", "-o", "size=banana", "tmpfs", bad.to_str().unwrap()]);
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(32), "{err}");
        assert!(err.contains("mount: ") && err.contains("bad option"), "{err}");
        assert!(logged().contains("mount -t tmpfs -o size=banana -- tmpfs "), "{}", logged());
        assert!(!is_mounted(None, &bad), "nothing half done");
        assert!(daemon.log_text().contains(fell_back), "{}", daemon.log_text());
        assert!(daemon.recorded().is_empty());
    }
}

/// `sidemount status` against the daemon's socket: (exit code, stdout, stderr).
fn status_probe(daemon: &Daemon, args: &[&str]) -> (Option<i32>, String, String) {
    let mut all = vec!["status", "--socket", daemon.socket.to_str().unwrap()];
    all.extend_from_slice(args);
    let out = sidemount(&all);
    let text = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
    (out.status.code(), text(&out.stdout), text(&out.stderr))
}

privileged_test! {
    fn an_external_agent_mounts_and_its_absence_fails_at_once(host: &Host) {
        let root = kubelet_root(host);
        let config = external_vcs_config(host, &root, "ext", "[tmpfs]");
        let agent = ExternalAgent::start(host, "ext");
        let socket = agent.socket.clone();
        let daemon = Daemon::start(host, &root, &["--config", config.to_str().unwrap()]);
        let (a, b) = (volume(&root, "a"), volume(&root, "b"));
        let mount = |t: &Path| daemon.client(["mount", "-t", "tmpfs", "tmpfs", t.to_str().unwrap()]);

        // Mounted by the agent, in its namespace, and proven on the host.
        expect_success("mount through the external agent", mount(&a));
        assert!(is_mounted(None, &a));
        assert!(is_mounted(Some(agent.child.id()), &a));
        let status = daemon.get("/v1/status").unwrap();
        assert_eq!(status["mounts"][0]["executor"], "vcs/ext");
        assert_eq!(status["vcs"][0]["provider"], "external");
        assert_eq!(status["vcs"][0]["reached_at"], socket.display().to_string());
        assert_eq!(status["vcs"][0]["healthy"], true);
        assert_eq!(status_probe(&daemon, &["--healthy"]).0, Some(0));

        // The agent gone: health says so, and a request fails at once with the reason.
        drop(agent);
        let (code, _, err) = status_probe(&daemon, &["--healthy"]);
        assert_eq!(code, Some(1), "{err}");
        assert!(err.contains("ext:") && err.contains("ext.sock"), "{err}");
        assert_eq!(status_probe(&daemon, &[]).0, Some(0), "the daemon itself still answers");
        let out = mount(&b);
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(32), "{err}");
        assert!(err.contains("[executor_unavailable]") && err.contains("provider external"), "{err}");
        assert!(!is_mounted(None, &b), "nothing half done");
        assert_eq!(daemon.recorded(), vec![a.display().to_string()]);

        // Back again, it unmounts what it made.
        let _agent = ExternalAgent::start(host, "ext");
        let out = daemon.client(["umount", a.to_str().unwrap()]);
        expect_success("umount through the new agent", out);
        assert!(!is_mounted(None, &a));
        assert!(daemon.recorded().is_empty());
    }
}

privileged_test! {
    fn the_status_file_follows_every_change(host: &Host) {
        let root = kubelet_root(host);
        let daemon = Daemon::start(host, &root, &[]);
        let file = daemon.state_dir.join("status.json");
        let read = || -> serde_json::Value {
            serde_json::from_slice(&std::fs::read(&file).unwrap_or_default()).unwrap_or_default()
        };
        let target = volume(&root, "v");
        let t = target.display().to_string();
        let run = |args: &[&str]| daemon.client([args, &[t.as_str()]].concat());
        expect_success("mount", run(&["mount", "-t", "tmpfs", "tmpfs"]));
        common::wait_until("the status file shows the mount", || read()["mounts"][0]["target"] == t.as_str());
        let served = daemon.get("/v1/status").unwrap();
        assert_eq!(read(), served, "the file is what /v1/status answers");
        let mode = std::os::unix::fs::PermissionsExt::mode(&std::fs::metadata(&file).unwrap().permissions());
        assert_eq!(mode & 0o777, 0o644);
        expect_success("umount", run(&["umount"]));
        common::wait_until("the status file drops the mount", || read()["mounts"] == serde_json::json!([]));
        let (code, out, _) = status_probe(&daemon, &[]);
        assert_eq!(code, Some(0));
        assert_eq!(serde_json::from_str::<serde_json::Value>(&out).unwrap(), read());
    }
}

privileged_test! {
    fn a_stopped_agent_takes_the_daemons_it_started_along(host: &Host) {
        let mut agent = ExternalAgent::start(host, "fs");
        // A client that forks away into a session of its own, as FUSE daemons do;
        // the agent, a subreaper here (not PID 1), becomes its parent.
        let body = serde_json::json!({
            "vcs": "fs",
            "command": ["sh", "-c", "setsid sleep 1000000 >/dev/null 2>&1 & echo $!"],
        });
        let out = Command::new("curl")
            .args(["-sf", "--max-time", "10", "--unix-socket"])
            .arg(&agent.socket)
            .args(["-X", "POST", "http://agent/v1/run", "-d", &body.to_string()])
            .output()
            .unwrap();
        let answer: serde_json::Value = serde_json::from_str(&expect_success("run", out)).unwrap();
        let pid: i32 = answer["output"].as_str().unwrap().trim().parse().unwrap();
        let stat = || std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
        common::wait_until("the client is the agent's child", || {
            stat().split_whitespace().nth(3) == Some(&agent.child.id().to_string())
        });

        let agent_pid = nix::unistd::Pid::from_raw(agent.child.id() as i32);
        nix::sys::signal::kill(agent_pid, Signal::SIGTERM).unwrap();
        assert!(agent.child.wait().unwrap().success());
        common::wait_until("the client is gone", || {
            stat().is_empty() || stat().split_whitespace().nth(2) == Some("Z")
        });
    }
}
