//! Healing long-running mounts, end to end with a real dockerd and sshfs: when the
//! VCS container restarts, is upgraded with `--force`, or the export's server goes
//! away for a while, the sshfs volume turns ENOTCONN; the daemon mounts it afresh
//! and puts it back in the host, the kubelet container and the pod containers
//! (bound `rslave` and `rprivate`), and reaps the old client. A mount that needs
//! secrets cannot be healed after a daemon restart: it is reported once.

mod common;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use common::node::{docker_ok, Kubelet, Node};
use common::{expect_success, quote, Daemon};
use sidemount::ns::mountinfo::{Mount, MountTable, ProcRoot};

/// How long a heal may take before a test gives up: a generous bound for a
/// loaded machine, not a measure of speed.
const HEAL_BOUND: Duration = Duration::from_secs(60);

/// Polls `cond` every 200 ms until it holds, for at most `bound`.
fn eventually(what: &str, bound: Duration, daemon: &Daemon, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + bound;
    while !cond() {
        assert!(
            Instant::now() < deadline,
            "timed out after {bound:?} waiting: {what}\ndaemon log:\n{}",
            daemon.log_text()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// The daemon with the node's configuration and a health check every second.
fn start_daemon(node: &Node, config: &Path) -> Daemon {
    start_daemon_checking(node, config, "1")
}

/// The daemon with the node's configuration and a health check every `interval`
/// seconds.
fn start_daemon_checking(node: &Node, config: &Path, interval: &str) -> Daemon {
    let (config, agent) = (config.display().to_string(), Node::agent_binary());
    let args = [
        "--config",
        &config,
        "--agent-binary",
        &agent,
        "--health-interval",
        interval,
    ];
    Daemon::start(&node.host, &node.kubelet_root(), &args)
}

/// The mount on `target` in the namespace of `pid` (None: this process).
fn mount_at(pid: Option<u32>, target: &Path) -> Option<Mount> {
    MountTable::read(&ProcRoot::default(), pid)
        .ok()?
        .mounts
        .into_iter()
        .rfind(|m| m.target == target)
}

/// The pids of the sshfs clients serving `export`, in every container.
fn sshfs_pids(export: &Path) -> Vec<u32> {
    let export = export.display().to_string();
    std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            let cmd = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
            let args: Vec<String> = cmd
                .split(|&b| b == 0)
                .map(|a| String::from_utf8_lossy(a).into_owned())
                .collect();
            args.first().is_some_and(|a| a.ends_with("sshfs"))
                && args.iter().any(|a| a.contains(&export))
        })
        .collect()
}

/// The mounts that `keep` in every process's namespace: (pid, mount point).
fn mounts_everywhere(keep: impl Fn(&Mount) -> bool) -> Vec<(u32, PathBuf)> {
    let proc = ProcRoot::default();
    let mut found = Vec::new();
    for e in std::fs::read_dir("/proc").unwrap().flatten() {
        let Some(pid) = e.file_name().to_str().and_then(|n| n.parse::<u32>().ok()) else {
            continue;
        };
        if let Ok(table) = MountTable::read(&proc, Some(pid)) {
            found.extend(
                table
                    .mounts
                    .into_iter()
                    .filter(|m| keep(m))
                    .map(|m| (pid, m.target)),
            );
        }
    }
    found
}

/// Mounts of the filesystem `dev` (a stale superblock) from `source` anywhere.
fn stale_mounts(dev: (u32, u32), source: &str) -> Vec<(u32, PathBuf)> {
    mounts_everywhere(|m| (m.major, m.minor) == dev && m.source == source)
}

/// GET /metrics on the daemon's socket.
fn metrics(daemon: &Daemon) -> String {
    let out = std::process::Command::new("curl")
        .args(["-sf", "--max-time", "10", "--unix-socket"])
        .arg(&daemon.socket)
        .arg("http://sidemount/metrics")
        .output()
        .unwrap();
    expect_success("GET /metrics", out)
}

fn recorded_id(daemon: &Daemon) -> u64 {
    daemon.get("/v1/mounts").unwrap()[0]["mount_id"]
        .as_u64()
        .unwrap()
}

fn reads(pod: &Kubelet, path: &str, hello: &str) -> bool {
    pod.run(&format!("cat {path}")).stdout.eq(hello.as_bytes())
}

/// What one break must be healed from, and checks after the heal.
struct Volume<'a> {
    node: &'a Node,
    daemon: &'a Daemon,
    target: PathBuf,
    kubelet: &'a Kubelet,
    pods: [&'a Kubelet; 2],
    vcs_container: String,
}

/// The volume's mount on the host, its sshfs clients, when it broke (Unix
/// seconds) and each pod bind's propagation.
type Broken = (Mount, Vec<u32>, u64, Vec<(bool, bool)>);

fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

/// The mount id on `target` in the namespace of `container`'s init.
fn id_in_container(container: &str, target: &Path) -> u64 {
    let pid: u32 = docker_ok(&["inspect", "-f", "{{.State.Pid}}", container])
        .trim()
        .parse()
        .unwrap();
    mount_at(Some(pid), target)
        .expect("mounted in the VCS")
        .id
        .into()
}

const HELLO: &str = "hello from the export\n";

impl Volume<'_> {
    /// The volume as the host sees it now: its mount and the client serving it.
    fn before_break(&self) -> Broken {
        let mount = mount_at(None, &self.target).expect("the volume is mounted");
        let clients = sshfs_pids(&self.node.dir("export"));
        assert_eq!(clients.len(), 1, "{clients:?}");
        let pods = self.pod_propagation();
        (mount, clients, now(), pods)
    }

    /// Whether each pod's /data is shared and a slave, from its mountinfo.
    fn pod_propagation(&self) -> Vec<(bool, bool)> {
        self.pods
            .iter()
            .map(|p| {
                let m = mount_at(Some(p.pid()), Path::new("/data")).unwrap();
                (
                    m.propagation.shared.is_some(),
                    m.propagation.master.is_some(),
                )
            })
            .collect()
    }

    /// Everyone reads the export again; the old client is gone and reaped, no
    /// namespace holds the stale mount, the record holds the new mount, nothing
    /// is left on the staging point.
    fn healed(&self, (stale, clients, broke_at, pods): Broken, what: &str) {
        let file = self.target.join("hello.txt");
        let file_in_kubelet = format!("cat {}", quote(&file));
        eventually(
            &format!("{what}: the host, the kubelet and both pods read the export"),
            HEAL_BOUND,
            self.daemon,
            || {
                std::fs::read_to_string(&file).is_ok_and(|s| s == HELLO)
                    && self.kubelet.run(&file_in_kubelet).stdout == HELLO.as_bytes()
                    && self.pods.iter().all(|p| reads(p, "/data/hello.txt", HELLO))
            },
        );
        // Mount ids are reused: the new one is known by the heal that made it.
        eventually(
            &format!("{what}: the heal is recorded"),
            HEAL_BOUND,
            self.daemon,
            || {
                let status = self.daemon.get("/v1/status").unwrap();
                let last = &status["health"][0]["last_heal"];
                last["result"] == "healed" && last["at"].as_u64() >= Some(broke_at)
            },
        );
        let in_vcs = id_in_container(&self.vcs_container, &self.target);
        assert_eq!(in_vcs, recorded_id(self.daemon), "{what}");
        let source = stale.source.to_str().unwrap();
        assert!(
            stale_mounts((stale.major, stale.minor), source).is_empty(),
            "{what}: stale mounts remain: {:?}",
            stale_mounts((stale.major, stale.minor), source)
        );
        for pid in &clients {
            assert!(
                !Path::new(&format!("/proc/{pid}")).exists(),
                "{what}: the old sshfs client {pid} remains"
            );
        }
        assert_eq!(sshfs_pids(&self.node.dir("export")).len(), 1, "{what}");
        // One mount on the target, nothing staged.
        let root = self.node.kubelet_root();
        let on_target = MountTable::read(&ProcRoot::default(), None)
            .unwrap()
            .mounts
            .into_iter()
            .filter(|m| m.target.starts_with(&root))
            .map(|m| m.target)
            .collect::<Vec<_>>();
        assert_eq!(on_target, std::slice::from_ref(&self.target), "{what}");
        let staging = root.join("plugins/sidemount~heal");
        assert_eq!(
            std::fs::read_dir(&staging).map_or(0, |d| d.count()),
            0,
            "{what}: staging points left"
        );
        // No pod's new bind propagates back to the host; a private one stays so.
        let now = self.pod_propagation();
        assert!(now.iter().all(|&(shared, _)| !shared), "{what}: {now:?}");
        assert_eq!(
            (pods[1], now[1]),
            ((false, false), (false, false)),
            "{what}"
        );
        // A slave bind stays a slave: mounts made later inside the volume reach it.
        assert_eq!((pods[0], now[0]), ((false, true), (false, true)), "{what}");
        let status = self.daemon.get("/v1/status").unwrap();
        let last = &status["health"][0]["last_heal"];
        assert_eq!(last["result"], "healed", "{what}: {status:#}");
        let touched = last["touched"].to_string();
        for pod in self.pods {
            assert!(
                touched.contains(&format!("pid {}", pod.pid())),
                "{what}: {touched}"
            );
        }
    }
}

#[test]
fn a_restarted_or_upgraded_vcs_heals_its_mount_everywhere() {
    let Some(mut node) = Node::new("a_restarted_or_upgraded_vcs_heals_its_mount_everywhere") else {
        return;
    };
    let port = node.sshd();
    let vcs = node.vcs("sshfs");
    let container = node.vcs_container(&vcs);
    node.track(&container);
    let run = node.dir("run");
    let config = node.config("sidemount.yaml", &node.sshfs_vcs(&vcs, "agent"));
    let daemon = start_daemon(&node, &config);
    let kubelet = node.kubelet_node(&run);
    let target = node.volume("p1");
    kubelet.sh(&node.mount_line(port, &target));
    // Pods started after the mount hold binds of it, `rslave` and `rprivate`.
    let slave = node.pod_bound("slave-pod", &target, "rslave");
    let private = node.pod_bound("private-pod", &target, "rprivate");
    for pod in [&slave, &private] {
        assert_eq!(pod.sh("cat /data/hello.txt"), HELLO);
    }
    let volume = Volume {
        node: &node,
        daemon: &daemon,
        target: target.clone(),
        kubelet: &kubelet,
        pods: [&slave, &private],
        vcs_container: container.clone(),
    };

    // The VCS container killed and started again: its sshfs died with it.
    let before = volume.before_break();
    docker_ok(&["kill", &container]);
    docker_ok(&["start", &container]);
    volume.healed(before, "after a restart");

    // Upgraded with --force: a new container, the same heal.
    let before = volume.before_break();
    let sock = daemon.socket.display().to_string();
    let out = expect_success(
        "upgrade --force",
        common::sidemount(&["upgrade", &vcs, "--force", "--socket", &sock]),
    );
    assert!(out.contains("replaced"), "{out}");
    volume.healed(before, "after upgrade --force");
    let metrics = metrics(&daemon);
    assert!(
        metrics.contains(&format!(
            "sidemount_heals_total{{vcs=\"{vcs}\",result=\"healed\"}} 2"
        )),
        "{metrics}"
    );

    // As the kubelet does, the pods go before their volume; then nothing is left.
    for pod in [&slave, &private] {
        docker_ok(&["rm", "-f", &pod.name]);
    }
    kubelet.sh(&format!("umount {}", quote(&target)));
    assert!(common::mount_points_under(None, &node.kubelet_root()).is_empty());
    assert!(daemon.recorded().is_empty());
    // The client exits once no namespace holds the volume. A namespace that
    // copied the whole mount table while the volume was mounted (another
    // program's `unshare -m` on this shared machine) keeps a copy of it, healed
    // like the pods' binds; then the client stays for it.
    let source = node.sshfs_source();
    let vcs_pid = docker_ok(&["inspect", "-f", "{{.State.Pid}}", &container]);
    let ours = [None, Some(kubelet.pid()), vcs_pid.trim().parse().ok()];
    eventually("the sshfs client exits", HEAL_BOUND, &daemon, || {
        let held = ours.iter().any(|&pid| {
            MountTable::read(&ProcRoot::default(), pid)
                .unwrap()
                .mounts
                .iter()
                .any(|m| m.source == source.as_str())
        });
        !held
            && (sshfs_pids(&node.dir("export")).is_empty()
                || !mounts_everywhere(|m| m.source == source.as_str()).is_empty())
    });
}

/// `sidemount mount` of the export on `target` from the host (the kubelet's
/// mounter-path convention), with `sensitive` options marked as secrets.
fn mount_from_host(node: &Node, daemon: &Daemon, port: u16, target: &Path, sensitive: &str) {
    let mut args = vec![
        "mount".to_owned(),
        "-t".into(),
        "fuse.sshfs".into(),
        "-o".into(),
        Node::sshfs_options(port),
    ];
    if !sensitive.is_empty() {
        args.extend(["--sensitive-options".into(), sensitive.into()]);
    }
    args.extend([node.sshfs_source(), target.display().to_string()]);
    let out = std::process::Command::new(common::SIDEMOUNT)
        .args(&args)
        .env("SIDEMOUNT_SOCKET", &daemon.socket)
        .output()
        .unwrap();
    expect_success("sidemount mount", out);
}

/// What [`sshfs_volume`] set up.
struct SshfsVolume {
    port: u16,
    vcs: String,
    container: String,
    daemon: Daemon,
    target: PathBuf,
}

/// sshd, the sshfs VCS, the daemon checking every `interval` seconds, and the
/// export mounted from the host on a pod's volume.
fn sshfs_volume(node: &mut Node, interval: &str) -> SshfsVolume {
    let port = node.sshd();
    let (vcs, container, config) = node.sshfs_config("agent");
    let daemon = start_daemon_checking(node, &config, interval);
    let target = node.volume("p1");
    mount_from_host(node, &daemon, port, &target, "");
    SshfsVolume {
        port,
        vcs,
        container,
        daemon,
        target,
    }
}

/// The health the daemon last found for the mount on `target`.
fn health_of(daemon: &Daemon, target: &Path) -> serde_json::Value {
    let status = daemon.get("/v1/status").unwrap();
    status["health"]
        .as_array()
        .unwrap()
        .iter()
        .find(|h| h["target"] == target.display().to_string())
        .cloned()
        .unwrap_or_default()
}

#[test]
fn the_export_coming_back_heals_the_mount() {
    let Some(mut node) = Node::new("the_export_coming_back_heals_the_mount") else {
        return;
    };
    let SshfsVolume {
        port,
        vcs,
        container,
        daemon,
        target,
    } = sshfs_volume(&mut node, "1");
    let pod = node.pod_bound("pod", &target, "rprivate");
    assert_eq!(pod.sh("cat /data/hello.txt"), HELLO);
    let clients = sshfs_pids(&node.dir("export"));

    // The server goes away for 20 s: the client loses its connection and exits
    // (its mount is left corrupted, or gone where the client could unmount it;
    // the pod's bind is left corrupted), and heals fail until the server is back.
    let stopped = Instant::now();
    node.stop_sshd();
    eventually("the mount is found lost", HEAL_BOUND, &daemon, || {
        let health = &health_of(&daemon, &target)["health"];
        health == "corrupted" || health == "vanished"
    });
    assert!(!reads(&pod, "/data/hello.txt", HELLO));
    eventually(
        "a heal failed while the server is away",
        HEAL_BOUND,
        &daemon,
        || health_of(&daemon, &target)["last_heal"]["result"] == "failed",
    );
    std::thread::sleep(Duration::from_secs(20).saturating_sub(stopped.elapsed()));
    node.start_sshd(port);

    let file = target.join("hello.txt");
    eventually("the mount recovers", HEAL_BOUND, &daemon, || {
        std::fs::read_to_string(&file).is_ok_and(|s| s == HELLO)
            && reads(&pod, "/data/hello.txt", HELLO)
    });
    assert_eq!(health_of(&daemon, &target)["last_heal"]["result"], "healed");
    assert_eq!(id_in_container(&container, &target), recorded_id(&daemon));
    for pid in &clients {
        assert!(
            !Path::new(&format!("/proc/{pid}")).exists(),
            "old client {pid} remains"
        );
    }
    assert_eq!(sshfs_pids(&node.dir("export")).len(), 1);
    let metrics = metrics(&daemon);
    assert!(
        metrics.contains(&format!(
            "sidemount_heals_total{{vcs=\"{vcs}\",result=\"healed\"}} 1"
        )),
        "{metrics}"
    );
    assert!(
        metrics.contains(&format!(
            "sidemount_heals_total{{vcs=\"{vcs}\",result=\"failed\"}}"
        )),
        "{metrics}"
    );
    docker_ok(&["rm", "-f", &pod.name]);
}

#[test]
fn a_mount_with_secrets_is_reported_not_healable_after_a_daemon_restart() {
    let Some(mut node) =
        Node::new("a_mount_with_secrets_is_reported_not_healable_after_a_daemon_restart")
    else {
        return;
    };
    let port = node.sshd();
    let (vcs, container, config) = node.sshfs_config("agent");
    let mut daemon = start_daemon(&node, &config);
    // The port is marked secret: it reaches sshfs (the mount works) and is kept
    // in the daemon's memory only.
    let secret = node.volume("secret");
    let plain = node.volume("plain");
    let port_option = format!("port={port}");
    mount_from_host(&node, &daemon, port, &secret, &port_option);
    mount_from_host(&node, &daemon, port, &plain, "");
    for target in [&secret, &plain] {
        assert_eq!(
            std::fs::read_to_string(target.join("hello.txt")).unwrap(),
            HELLO
        );
    }
    // The record: one file per mount.
    let kept = std::fs::read_dir(daemon.state_dir.join("mounts"))
        .unwrap()
        .map(|f| std::fs::read_to_string(f.unwrap().path()).unwrap())
        .map(|text| serde_json::from_str::<serde_json::Value>(&text).unwrap())
        .find(|r| r["target"] == secret.display().to_string())
        .map(|r| r["options"].to_string())
        .unwrap();
    assert!(
        !kept.contains(&port_option) && kept.contains("<redacted>"),
        "{kept}"
    );

    // While the daemon that made it runs, the secret mount heals from memory.
    docker_ok(&["kill", &container]);
    docker_ok(&["start", &container]);
    eventually("both mounts heal", HEAL_BOUND, &daemon, || {
        [&secret, &plain]
            .iter()
            .all(|t| std::fs::read_to_string(t.join("hello.txt")).is_ok_and(|s| s == HELLO))
    });

    // A restarted daemon has no secrets: the plain mount heals from its record,
    // the secret one is reported not healable, once, and left alone.
    daemon.stop(nix::sys::signal::Signal::SIGTERM);
    let daemon = start_daemon(&node, &config);
    docker_ok(&["kill", &container]);
    docker_ok(&["start", &container]);
    eventually("the plain mount heals", HEAL_BOUND, &daemon, || {
        std::fs::read_to_string(plain.join("hello.txt")).is_ok_and(|s| s == HELLO)
    });
    eventually("the secret mount is reported", HEAL_BOUND, &daemon, || {
        health_of(&daemon, &secret)["last_heal"]["result"] == "not_healable"
    });
    // Several checks later it is still reported once, and not retried.
    std::thread::sleep(Duration::from_secs(5));
    let log = daemon.log_text();
    let reports = log.matches("corrupted mount cannot be healed").count();
    assert_eq!(reports, 1, "{log}");
    let secret_path = secret.display().to_string();
    assert!(
        !log.lines()
            .any(|l| l.contains(&secret_path) && l.contains(&port_option)),
        "{log}"
    );
    assert_eq!(health_of(&daemon, &secret)["health"], "corrupted");
    let metrics = metrics(&daemon);
    assert!(
        metrics.contains(&format!(
            "sidemount_heals_total{{vcs=\"{vcs}\",result=\"not_healable\"}} 1"
        )),
        "{metrics}"
    );
    assert!(
        !metrics.contains(&format!(
            "sidemount_heals_total{{vcs=\"{vcs}\",result=\"failed\"}}"
        )),
        "{metrics}"
    );
    // The kubelet's remedy: unmount, then mount again.
    let out = std::process::Command::new(common::SIDEMOUNT)
        .args(["umount", "-l"])
        .arg(&secret)
        .env("SIDEMOUNT_SOCKET", &daemon.socket)
        .output()
        .unwrap();
    expect_success("sidemount umount -l", out);
    mount_from_host(&node, &daemon, port, &secret, &port_option);
    assert_eq!(
        std::fs::read_to_string(secret.join("hello.txt")).unwrap(),
        HELLO
    );
}

#[test]
fn the_agent_answering_again_wakes_the_watch() {
    let Some(mut node) = Node::new("the_agent_answering_again_wakes_the_watch") else {
        return;
    };
    // The timer would check again only in an hour.
    let SshfsVolume {
        container,
        daemon,
        target,
        ..
    } = sshfs_volume(&mut node, "3600");
    docker_ok(&["kill", &container]);
    // Down long enough for the watch to see its agent gone.
    std::thread::sleep(Duration::from_secs(3));
    docker_ok(&["start", &container]);
    let file = target.join("hello.txt");
    eventually("the mount heals", HEAL_BOUND, &daemon, || {
        std::fs::read_to_string(&file).is_ok_and(|s| s == HELLO)
    });
    assert!(daemon.log_text().contains("the agent answers again"));
}

#[test]
fn a_mount_put_over_the_recorded_one_is_not_healed_in_its_place() {
    let Some(mut node) = Node::new("a_mount_put_over_the_recorded_one_is_not_healed_in_its_place")
    else {
        return;
    };
    let SshfsVolume {
        port,
        container,
        daemon,
        target,
        ..
    } = sshfs_volume(&mut node, "1");
    let recorded = recorded_id(&daemon);
    // Another client mounts the export over it in the VCS container: a mount of
    // the recorded type on the recorded target, but not the daemon's.
    let over = node.mount_line(port, &target);
    docker_ok(&["exec", &container, "sh", "-euc", &over]);
    let top = id_in_container(&container, &target);
    assert_ne!(top, recorded);
    // Both clients die: both mounts are left corrupted.
    let clients = sshfs_pids(&node.dir("export"));
    assert_eq!(clients.len(), 2, "{clients:?}");
    for pid in clients {
        nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(pid as i32),
            nix::sys::signal::Signal::SIGKILL,
        )
        .unwrap();
    }
    eventually("a heal is tried", HEAL_BOUND, &daemon, || {
        !health_of(&daemon, &target)["last_heal"].is_null()
    });
    // Its unique id tells the mount on top from the recorded one: left as it is.
    let health = health_of(&daemon, &target);
    assert_eq!(health["health"], "corrupted", "{health:#}");
    let last = &health["last_heal"];
    assert_eq!(last["result"], "failed", "{health:#}");
    let error = last["error"].as_str().unwrap();
    assert!(error.contains("is not the recorded mount"), "{error}");
    assert_eq!(id_in_container(&container, &target), top);
    assert_eq!(recorded_id(&daemon), recorded);
}
