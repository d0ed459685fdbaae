//! The record under faults, on real namespaces: clients that hang up mid-request,
//! a daemon SIGKILLed with requests in flight, and many mounts of one target. After
//! each, what the daemon has recorded is exactly what is mounted.

mod common;

use std::io::Write;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use common::{
    expect_success, kubelet_root, mount_points_under, pod_volume, quote, sh, Daemon, Host,
    SIDEMOUNT,
};
use nix::sys::signal::Signal;

/// The targets mounted under the pods directory, and those recorded, sorted.
fn mounted_and_recorded(daemon: &Daemon, root: &Path) -> (Vec<String>, Vec<String>) {
    use sidemount::ns::mountinfo::{MountTable, ProcRoot};
    // A table that changes while it is read is read again.
    let table = loop {
        if let Ok(t) = MountTable::read(&ProcRoot::default(), None) {
            break t;
        }
    };
    let pods = root.join("pods");
    let mut mounted: Vec<String> = table
        .mounts
        .iter()
        .filter(|m| m.target.starts_with(&pods))
        .map(|m| m.target.display().to_string())
        .collect();
    mounted.sort();
    let mut recorded = daemon.recorded();
    recorded.sort();
    (mounted, recorded)
}

/// Sends a whole mount request on a raw connection, then hangs up after `after`.
fn hang_up(socket: &Path, target: &Path, after: Duration) {
    let body = serde_json::json!({
        "source": "tmpfs",
        "target": target,
        "fstype": "tmpfs",
        "options": ["size=64k"],
    })
    .to_string();
    let mut s = UnixStream::connect(socket).unwrap();
    let head = format!(
        "POST /v1/mounts HTTP/1.1\r\nHost: sidemount\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
        body.len()
    );
    s.write_all(head.as_bytes()).unwrap();
    s.write_all(body.as_bytes()).unwrap();
    std::thread::sleep(after);
    drop(s);
}

privileged_test! {
    fn clients_that_hang_up_leave_every_mount_recorded(host: &Host) {
        let root = kubelet_root(host);
        let daemon = Daemon::start(host, &root, &[]);
        for round in 0..4 {
            let threads: Vec<_> = (0..60)
                .map(|i| {
                    let target = pod_volume(&root, &format!("r{round}-{i}"), "v");
                    let socket = daemon.socket.clone();
                    // 0.2 to 1.5 ms after the request is sent.
                    let after = Duration::from_micros(200 + (i as u64 * 1300 / 60));
                    std::thread::spawn(move || hang_up(&socket, &target, after))
                })
                .collect();
            for t in threads {
                t.join().unwrap();
            }
            // The operations run to their end: the record catches up with the table.
            common::wait_until("the record equals mountinfo", || {
                let (mounted, recorded) = mounted_and_recorded(&daemon, &root);
                mounted == recorded
            });
            let (mounted, _) = mounted_and_recorded(&daemon, &root);
            assert_eq!(mounted.len(), 60 * (round + 1), "every request ran to its end");
        }
        assert!(daemon.log_text().contains("mounted and verified"));
    }
}

privileged_test! {
    fn a_daemon_killed_with_requests_in_flight_restarts_with_the_record_equal_to_mountinfo(host: &Host) {
        let root = kubelet_root(host);
        let mut adopted = 0;
        for round in 0..4u64 {
            let mut daemon = Daemon::start(host, &root, &[]);
            let clients: Vec<_> = (0..50)
                .map(|i| {
                    let target = pod_volume(&root, &format!("r{round}-{i}"), "v");
                    Command::new(SIDEMOUNT)
                        .args(["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs"])
                        .arg(&target)
                        .env("SIDEMOUNT_SOCKET", &daemon.socket)
                        .stdout(Stdio::null())
                        .stderr(Stdio::null())
                        .spawn()
                        .unwrap()
                })
                .collect();
            // Some requests done, some in flight, some not yet sent.
            std::thread::sleep(Duration::from_millis(20 + round * 15));
            assert_eq!(daemon.stop(Signal::SIGKILL).code(), None, "killed");
            for mut c in clients {
                c.wait().unwrap();
            }
            let daemon = Daemon::start(host, &root, &[]);
            let (mounted, recorded) = mounted_and_recorded(&daemon, &root);
            assert_eq!(recorded, mounted, "round {round}: the record equals mountinfo after a restart");
            let status = daemon.get("/v1/status").unwrap();
            adopted += status["adopted"].as_array().unwrap().len();
            drop(daemon);
        }
        eprintln!("mounts adopted at restarts: {adopted}");
        // Every mount can be unmounted through the restarted daemon.
        let daemon = Daemon::start(host, &root, &[]);
        for target in daemon.recorded() {
            let out = Command::new(SIDEMOUNT).args(["umount", &target])
                .env("SIDEMOUNT_SOCKET", &daemon.socket).output().unwrap();
            expect_success("umount", out);
        }
        assert_eq!(mount_points_under(None, &root.join("pods")), Vec::<PathBuf>::new());
        assert!(daemon.recorded().is_empty());
    }
}

privileged_test! {
    fn fifty_concurrent_mounts_of_one_target_leave_one_mount_and_one_record(host: &Host) {
        let root = kubelet_root(host);
        let daemon = Daemon::start(host, &root, &[]);
        let target = pod_volume(&root, "p", "v");
        let mount = |source: &str| {
            Command::new(SIDEMOUNT)
                .args(["mount", "-t", "tmpfs", "-o", "size=64k", source])
                .arg(&target)
                .env("SIDEMOUNT_SOCKET", &daemon.socket)
                .stderr(Stdio::piped())
                .spawn()
                .unwrap()
        };
        let clients: Vec<_> = (0..50).map(|_| mount("tmpfs")).collect();
        for c in clients {
            expect_success("concurrent mount of one target", c.wait_with_output().unwrap());
        }
        let on_target = |t: &Path| mount_points_under(None, t).iter().filter(|m| *m == t).count();
        assert_eq!(on_target(&target), 1, "one mount");
        assert_eq!(daemon.recorded(), vec![target.display().to_string()], "one record");

        // Another request for the target is refused, and changes nothing.
        let out = mount("other").wait_with_output().unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(32), "{err}");
        assert!(err.contains("[already_mounted]"), "{err}");
        assert_eq!(on_target(&target), 1);

        // A mount stacked by someone else stays recorded as the daemon's below it;
        // unmounting the top one keeps the record of the daemon's.
        sh(&format!("mount -t tmpfs foreign {}", quote(&target)));
        let umount = || Command::new(SIDEMOUNT).arg("umount").arg(&target)
            .env("SIDEMOUNT_SOCKET", &daemon.socket).output().unwrap();
        expect_success("umount the foreign mount", umount());
        assert_eq!(on_target(&target), 1);
        assert_eq!(daemon.recorded(), vec![target.display().to_string()], "the daemon's mount is still there");
        expect_success("umount the daemon's mount", umount());
        assert_eq!(on_target(&target), 0);
        assert!(daemon.recorded().is_empty());
    }
}

privileged_test! {
    fn a_mount_put_on_the_target_behind_the_daemons_back_is_not_unmounted(host: &Host) {
        let root = kubelet_root(host);
        let daemon = Daemon::start(host, &root, &[]);
        let target = pod_volume(&root, "p", "v");
        let run = |args: &[&str]| {
            Command::new(SIDEMOUNT)
                .args(args)
                .arg(&target)
                .env("SIDEMOUNT_SOCKET", &daemon.socket)
                .output()
                .unwrap()
        };
        expect_success("mount", run(&["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs"]));
        assert_eq!(daemon.recorded(), vec![target.display().to_string()]);
        // Unmounted behind the daemon's back, and another mount put there, which
        // may well be given the recorded mount's id again.
        sh(&format!("umount {t} && mount -t tmpfs -o size=32k foreign {t} && echo kept > {t}/file", t = quote(&target)));
        let out = run(&["umount"]);
        let err = String::from_utf8_lossy(&out.stderr);
        assert_ne!(out.status.code(), Some(0), "{err}");
        assert!(err.contains("not the recorded mount (unique id") && err.contains("not unmounted"), "{err}");
        let source = sh(&format!("findmnt -n -o SOURCE --mountpoint {}", quote(&target)));
        assert_eq!(source.trim(), "foreign", "the other mount stays");
        assert_eq!(std::fs::read_to_string(target.join("file")).unwrap(), "kept\n");
        sh(&format!("umount {}", quote(&target)));
    }
}
