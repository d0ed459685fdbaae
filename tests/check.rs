//! `sidemount check` on real namespaces: fails on a private kubelet root, passes
//! after `share`, finds a dockerd that runs with MountFlags=slave.

mod common;

use std::process::Output;

use common::{
    expect_success, external_vcs_config, kubelet_root, quote, sh, sidemount, Daemon, ExternalAgent,
    Host,
};

fn check(root: &str) -> (Output, serde_json::Value) {
    let out = sidemount(&[
        "check",
        "--no-daemon",
        "--kubelet-root",
        root,
        "--output",
        "json",
    ]);
    let report = serde_json::from_slice(&out.stdout).unwrap();
    (out, report)
}

fn item<'a>(report: &'a serde_json::Value, name: &str) -> &'a serde_json::Value {
    report["items"]
        .as_array()
        .unwrap()
        .iter()
        .find(|i| i["name"] == name)
        .unwrap_or_else(|| panic!("no item {name} in {report}"))
}

privileged_test! {
    fn check_fails_on_a_private_root_and_passes_after_share(host: &Host) {
        let root = host.dir("var/lib/kubelet");
        let r = root.to_str().unwrap();
        sh(&format!("mount -t tmpfs kubelet {}", quote(&root)));

        let (out, report) = check(r);
        assert_eq!(out.status.code(), Some(1));
        let item = item(&report, "kubelet root");
        assert_eq!(item["ok"], false);
        assert!(item["detail"].as_str().unwrap().contains("is private"), "{item}");
        assert_eq!(item["remedy"], format!("sidemount share {r}"));
        let text = sidemount(&["check", "--no-daemon", "--kubelet-root", r]);
        assert!(String::from_utf8_lossy(&text.stdout).contains(&format!("fix: sidemount share {r}")));

        expect_success("share", sidemount(&["share", r]));
        let (out, report) = check(r);
        assert_eq!(out.status.code(), Some(0), "{report:#}");
        assert_eq!(report["ok"], true);
    }
}

privileged_test! {
    fn check_from_a_kubelet_container_names_the_broken_peer_group(host: &Host) {
        let root = kubelet_root(host);
        let cmd = format!("{} check --no-daemon --kubelet-root {} --output json", common::SIDEMOUNT, quote(&root));

        let shared = host.namespace("kubelet", "true");
        let report: serde_json::Value = serde_json::from_str(&shared.sh(&cmd)).unwrap();
        assert!(item(&report, "host peer group")["detail"].as_str().unwrap().contains("share peer group"));

        let slave = host.namespace("kubelet", &format!("mount --make-rslave {}", quote(&root)));
        let out = slave.command("sh").args(["-c", &cmd]).output().unwrap();
        assert_eq!(out.status.code(), Some(1));
        let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        let peer = item(&report, "host peer group");
        assert!(peer["detail"].as_str().unwrap().contains("is a slave in the checker's namespace"), "{peer}");
        assert!(peer["remedy"].as_str().unwrap().contains(":rshared"), "{peer}");
    }
}

privileged_test! {
    fn check_finds_a_dockerd_with_mountflags_slave(host: &Host) {
        let root = kubelet_root(host);
        let r = root.to_str().unwrap();
        // A process named dockerd in a namespace where everything is a slave, as
        // systemd's MountFlags=slave leaves it.
        let bin = host.dir("bin").join("dockerd");
        std::fs::copy("/bin/sleep", &bin).unwrap();
        // systemd leaves every mount shared; MountFlags=slave turns them into slaves.
        sh(&format!("mount --make-rshared {}", quote(&host.scratch)));
        let run_dockerd = |ns: &common::Namespace| {
            let child = ns.command(&bin).arg("1000000").spawn().unwrap();
            let comm = format!("/proc/{}/comm", child.id());
            common::wait_until("nsenter execs dockerd", || {
                std::fs::read_to_string(&comm).is_ok_and(|c| c == "dockerd\n")
            });
            child
        };
        let slave_ns = host.namespace("dockerd", "mount --make-rslave /");
        let mut docker = run_dockerd(&slave_ns);
        let (out, report) = check(r);
        docker.kill().unwrap();
        docker.wait().unwrap();
        assert_eq!(out.status.code(), Some(1));
        let d = item(&report, "dockerd propagation");
        assert!(d["detail"].as_str().unwrap().contains(&format!("dockerd (pid {})", docker.id())), "{d}");
        assert!(d["detail"].as_str().unwrap().contains("MountFlags=slave"), "{d}");

        let shared_ns = host.namespace("dockerd", "true");
        let mut docker = run_dockerd(&shared_ns);
        let (_, report) = check(r);
        docker.kill().unwrap();
        docker.wait().unwrap();
        assert_eq!(item(&report, "dockerd propagation")["ok"], true, "{report:#}");
    }
}

privileged_test! {
    fn check_on_a_running_node_asks_the_daemon_its_vcs_and_helpers(host: &Host) {
        let root = kubelet_root(host);
        let r = root.to_str().unwrap();
        let config = external_vcs_config(host, &root, "fs", "[fuse.sshfs]");
        let helpers = host.dir("helpers");
        let h = helpers.to_str().unwrap();
        let socket = host.dir("run").join("sidemount.sock");
        let s = socket.to_str().unwrap();
        let check = || {
            let out = sidemount(&["check", "--kubelet-root", r, "--socket", s, "--helpers-dir", h, "--output", "json"]);
            let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
            (out.status.code(), report)
        };

        // No daemon yet.
        let (code, report) = check();
        assert_eq!(code, Some(1));
        let d = item(&report, "daemon");
        assert!(d["detail"].as_str().unwrap().contains("cannot reach the sidemount daemon"), "{d}");

        let agent = ExternalAgent::start(host, "fs");
        let _daemon = Daemon::start(host, &root, &["--config", config.to_str().unwrap()]);
        let (code, report) = check();
        assert_eq!(code, Some(1));
        assert_eq!(item(&report, "daemon")["ok"], true, "{report:#}");
        assert_eq!(item(&report, "vcs")["ok"], true, "{report:#}");
        let helper = item(&report, "helpers");
        assert!(helper["detail"].as_str().unwrap().contains("mount.fuse.sshfs, umount.fuse.sshfs, umount.fuse missing"), "{helper}");
        expect_success("install-helpers", sidemount(&["install-helpers", "--dir", h, "--types", "fuse.sshfs"]));
        let (code, report) = check();
        assert_eq!(code, Some(0), "{report:#}");

        drop(agent);
        let (code, report) = check();
        assert_eq!(code, Some(1));
        let v = item(&report, "vcs");
        assert!(v["detail"].as_str().unwrap().contains("fs (external agent, fuse.sshfs)"), "{v}");
        assert!(v["remedy"].as_str().unwrap().contains("fs sidecar"), "{v}");
    }
}
