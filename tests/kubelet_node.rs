//! A node as operators run it, end to end with a real dockerd: the kubelet in a
//! container of the kubelet-node image (or on the host, through the mounter-path
//! convention) mounts an sshfs volume; the request goes helper -> daemon -> VCS
//! container, and a pod container that binds the volume `rslave` reads the export.
//! Both providers run the same body: the VCS container made by sidemount (docker),
//! and one the test starts itself, as Kubernetes runs a sidecar (external).

mod common;

use std::path::Path;
use std::process::Command;

use common::node::{Kubelet, Node};
use common::{expect_success, mount_points_under, quote, Daemon, SIDEMOUNT};

#[derive(Clone, Copy, PartialEq)]
enum Role {
    /// The kubelet-node image: mount(8) finds `mount.fuse.sshfs` in /usr/sbin.
    Container,
    /// On the host with `--experimental-mounter-path`: `sidemount mount ...`.
    Host,
}

#[derive(Clone, Copy, PartialEq)]
enum Provider {
    Docker,
    External,
}

/// Where the kubelet runs its mount commands.
struct TheKubelet<'a> {
    container: Option<Kubelet>,
    daemon: &'a Daemon,
}

impl TheKubelet<'_> {
    fn sh(&self, line: &str) -> String {
        match &self.container {
            Some(k) => k.sh(line),
            None => {
                let out = Command::new("sh")
                    .args(["-euc", line])
                    .env("SIDEMOUNT_SOCKET", &self.daemon.socket)
                    .output()
                    .unwrap();
                expect_success(line, out)
            }
        }
    }

    fn mount(&self, node: &Node, port: u16, target: &Path) -> String {
        let line = node.mount_line(port, target);
        match self.container {
            Some(_) => self.sh(&line),
            None => self.sh(&format!("{SIDEMOUNT} {}", line)),
        }
    }

    fn umount(&self, target: &Path) -> String {
        match self.container {
            Some(_) => self.sh(&format!("umount {}", quote(target))),
            None => self.sh(&format!("{SIDEMOUNT} umount {}", quote(target))),
        }
    }
}

fn a_kubelet_volume_reaches_the_pod(test: &str, role: Role, provider: Provider) {
    let Some(mut node) = Node::new(test) else {
        return;
    };
    let port = node.sshd();
    let vcs = node.vcs("sshfs");
    // The daemon's socket directory, /run/sidemount in the containers.
    let run = node.dir("run");
    let mut entry = node.sshfs_vcs(&vcs, "agent");
    let vcs_container = match provider {
        Provider::Docker => {
            let c = node.vcs_container(&vcs);
            node.track(&c);
            c
        }
        Provider::External => {
            entry.push_str("    provider: external\n");
            node.external_sshfs(&vcs, &run)
        }
    };
    let config = node.config("sidemount.yaml", &entry);
    let daemon = node.start_daemon(&config);
    assert_eq!(daemon.socket, run.join("sidemount.sock"));
    let status = daemon.get("/v1/status").unwrap();
    assert_eq!(status["vcs"][0]["healthy"], true, "{status}");
    let kubelet = TheKubelet {
        container: (role == Role::Container).then(|| node.kubelet_node(&run)),
        daemon: &daemon,
    };
    let target = node.volume("p1");
    let root = node.kubelet_root();
    expect_success(
        "share",
        common::sidemount(&["share", root.to_str().unwrap()]),
    );
    // A pod already running when its volume is mounted receives it through
    // `rslave` (Kubernetes' HostToContainer).
    let early = node.pod("early-pod", &target);

    if let Some(k) = &kubelet.container {
        // The node as the kubelet sees it: its root shared with the host, the
        // daemon and its VCS healthy, the helpers in place.
        let out = k.run(&format!(
            "sidemount check --kubelet-root {} --helpers-dir /usr/sbin --output json",
            quote(&root)
        ));
        let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        for name in [
            "kubelet root",
            "host peer group",
            "daemon",
            "vcs",
            "helpers",
        ] {
            let item = report["items"]
                .as_array()
                .unwrap()
                .iter()
                .find(|i| i["name"] == name);
            assert_eq!(
                item.map(|i| &i["ok"]),
                Some(&true.into()),
                "{name}: {report:#}"
            );
        }
    }

    // The kubelet mounts; the VCS container's client serves it.
    kubelet.mount(&node, port, &target);
    let vcs_pid: u32 =
        common::node::docker_ok(&["inspect", "-f", "{{.State.Pid}}", &vcs_container])
            .trim()
            .parse()
            .unwrap();
    assert!(mount_points_under(Some(vcs_pid), &root).contains(&target));
    assert_eq!(daemon.recorded(), [target.display().to_string()]);
    let status = daemon.get("/v1/status").unwrap();
    assert_eq!(status["mounts"][0]["executor"], format!("vcs/{vcs}"));

    // The export's file, on the host, in the kubelet, and in both pods.
    let file = target.join("hello.txt");
    let hello = "hello from the export\n";
    assert_eq!(std::fs::read_to_string(&file).unwrap(), hello);
    assert_eq!(kubelet.sh(&format!("cat {}", quote(&file))), hello);
    assert_eq!(early.sh("cat /data/hello.txt"), hello);
    let pod = node.pod("pod", &target);
    assert_eq!(pod.sh("cat /data/hello.txt"), hello);
    // As the kubelet does, the pod goes before its volume.
    common::node::docker_ok(&["rm", "-f", &pod.name]);

    // The kubelet unmounts: gone from the host, the kubelet and the running pod.
    kubelet.umount(&target);
    let pods = root.join("pods");
    assert!(mount_points_under(None, &pods).is_empty());
    if let Some(k) = &kubelet.container {
        assert!(mount_points_under(Some(k.pid()), &pods).is_empty());
    }
    assert_eq!(
        early.sh("ls -A /data"),
        "",
        "the pod sees the empty directory again"
    );
    assert!(daemon.recorded().is_empty());
}

#[test]
fn kubelet_container_docker_provider() {
    a_kubelet_volume_reaches_the_pod(
        "kubelet_container_docker_provider",
        Role::Container,
        Provider::Docker,
    );
}

#[test]
fn kubelet_container_external_provider() {
    a_kubelet_volume_reaches_the_pod(
        "kubelet_container_external_provider",
        Role::Container,
        Provider::External,
    );
}

#[test]
fn kubelet_on_host_docker_provider() {
    a_kubelet_volume_reaches_the_pod(
        "kubelet_on_host_docker_provider",
        Role::Host,
        Provider::Docker,
    );
}

#[test]
fn kubelet_on_host_external_provider() {
    a_kubelet_volume_reaches_the_pod(
        "kubelet_on_host_external_provider",
        Role::Host,
        Provider::External,
    );
}
