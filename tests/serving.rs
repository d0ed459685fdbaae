//! The daemon's socket under abuse, on real namespaces: idle and slow connections
//! by the thousand, half-sent bodies, a full server, malformed requests, peers
//! that may not ask; and the socket and state directories it refuses to trust.

mod common;

use std::io::{Read, Write};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use common::{expect_success, kubelet_root, quote, sh, volume, Daemon, Host, SIDEMOUNT};

/// Room for thousands of connections in this process.
fn raise_open_files() {
    use nix::sys::resource::{getrlimit, setrlimit, Resource};
    let (_, hard) = getrlimit(Resource::RLIMIT_NOFILE).unwrap();
    setrlimit(Resource::RLIMIT_NOFILE, hard, hard).unwrap();
}

/// Everything the server sends until it closes the connection (at most 30 s: a
/// server that never closes fails the caller's assertion).
fn answer_of(mut s: UnixStream) -> String {
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    let mut text = Vec::new();
    let _ = s.read_to_end(&mut text);
    String::from_utf8_lossy(&text).into_owned()
}

/// Sends `raw` on a new connection and returns the whole answer (a server that
/// answers before reading it all may close its side first).
fn exchange(socket: &Path, raw: &[u8]) -> String {
    let mut s = UnixStream::connect(socket).unwrap();
    let _ = s.write_all(raw);
    answer_of(s)
}

/// The JSON error of an HTTP answer, checking its status line.
fn json_error(answer: &str, status: u16) -> serde_json::Value {
    assert!(
        answer.starts_with(&format!("HTTP/1.1 {status} ")),
        "{answer}"
    );
    assert!(
        answer
            .to_ascii_lowercase()
            .contains("content-type: application/json"),
        "{answer}"
    );
    let body = answer.split("\r\n\r\n").nth(1).unwrap_or_default();
    let e: serde_json::Value = serde_json::from_str(body).unwrap_or_else(|_| panic!("{answer}"));
    assert!(
        e["code"].is_string() && e["message"].is_string(),
        "{answer}"
    );
    e
}

privileged_test! {
    fn a_mount_succeeds_among_thousands_of_idle_and_slow_connections(host: &Host) {
        raise_open_files();
        let root = kubelet_root(host);
        let daemon = Daemon::start(host, &root, &["--max-connections", "512", "--read-timeout-ms", "2000"]);
        // More idle connections than the daemon serves, and slow ones that never
        // finish their head.
        let idle: Vec<UnixStream> = (0..3000).map(|_| UnixStream::connect(&daemon.socket).unwrap()).collect();
        let slow: Vec<UnixStream> = (0..300)
            .map(|_| {
                let mut s = UnixStream::connect(&daemon.socket).unwrap();
                s.write_all(b"POST /v1/mounts HTTP/1.1\r\nHost: x\r\n").unwrap();
                s
            })
            .collect();
        let target = volume(&root, "v");
        expect_success("a real mount among them", daemon.client(["mount", "-t", "tmpfs", "tmpfs", target.to_str().unwrap()]));
        assert!(daemon.recorded().contains(&target.display().to_string()));

        // Each slow and idle connection is closed by the daemon, none left open.
        for s in slow.into_iter().chain(idle.into_iter().rev().take(200)) {
            let _ = answer_of(s);
        }
        // A body that stops half-way is answered 408, in JSON.
        let mut s = UnixStream::connect(&daemon.socket).unwrap();
        s.write_all(b"POST /v1/mounts HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n{\"source\":").unwrap();
        let e = json_error(&answer_of(s), 408);
        assert_eq!(e["code"], "request_timeout");
    }
}

privileged_test! {
    fn a_server_full_of_requests_refuses_clearly_and_recovers(host: &Host) {
        let root = kubelet_root(host);
        let daemon = Daemon::start(host, &root, &["--max-connections", "16", "--read-timeout-ms", "3000"]);
        // Sixteen requests whose bodies are on their way: all in a request.
        let busy: Vec<UnixStream> = (0..16)
            .map(|_| {
                let mut s = UnixStream::connect(&daemon.socket).unwrap();
                s.write_all(b"POST /v1/mounts HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n{").unwrap();
                s
            })
            .collect();
        std::thread::sleep(Duration::from_millis(300));
        let e = json_error(&exchange(&daemon.socket, b"GET /v1/status HTTP/1.1\r\nHost: x\r\n\r\n"), 503);
        assert_eq!(e["code"], "overloaded");
        assert!(e["message"].as_str().unwrap().contains("16 connections"), "{e}");
        drop(busy);
        common::wait_until("the daemon answers again", || daemon.get("/v1/status").is_some());
        assert!(daemon.log_text().contains("connection refused"));
    }
}

privileged_test! {
    fn every_error_is_json_and_gets_follow_the_peer_rule(host: &Host) {
        let root = kubelet_root(host);
        let daemon = Daemon::start(host, &root, &[]);
        let socket = &daemon.socket;
        let e = json_error(&exchange(socket, b"GET /v1/nothing HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"), 404);
        assert_eq!(e["code"], "not_found");
        let e = json_error(&exchange(socket, b"GET /v1/unmounts HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"), 405);
        assert_eq!(e["code"], "method_not_allowed");
        let big = format!("POST /v1/mounts HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Length: 70000\r\n\r\n{}", "x".repeat(70000));
        let e = json_error(&exchange(socket, big.as_bytes()), 413);
        assert_eq!(e["code"], "too_large");
        let e = json_error(&exchange(socket, b"POST /v1/mounts HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Length: 2\r\n\r\n{}"), 400);
        assert_eq!(e["code"], "bad_request");

        // A peer that may not mount may not read the record or the status either.
        sh(&format!("chmod 0666 {} && chmod 0755 {}", quote(socket), quote(socket.parent().unwrap())));
        let as_nobody = |path: &str| {
            let out = Command::new("setpriv")
                .args(["--reuid=65534", "--regid=65534", "--clear-groups", "curl", "-s", "--max-time", "10", "--unix-socket"])
                .arg(socket)
                .arg(format!("http://sidemount{path}"))
                .output()
                .unwrap();
            serde_json::from_slice::<serde_json::Value>(&out.stdout).unwrap()
        };
        for path in ["/v1/status", "/v1/mounts", "/metrics"] {
            assert_eq!(as_nobody(path)["code"], "forbidden", "{path}");
        }
        assert!(daemon.get("/v1/status").is_some(), "root may");
        let log = daemon.log_text();
        assert!(log.contains("request refused") && log.contains("peer_uid=Some(65534)") && log.contains("code=forbidden"), "{log}");
    }
}

/// Runs `sidemount serve` expected to refuse to start; its stderr.
fn refused_start(root: &Path, socket: &Path, state: &Path) -> String {
    let out = Command::new("timeout")
        .args(["20", SIDEMOUNT, "serve", "--socket"])
        .arg(socket)
        .arg("--state-dir")
        .arg(state)
        .arg("--kubelet-root")
        .arg(root)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(out.status.code(), Some(1), "{err}");
    err
}

privileged_test! {
    fn the_socket_and_state_directories_are_checked(host: &Host) {
        let root = kubelet_root(host);
        let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o7777;
        // A socket directory left world-writable becomes the daemon's own again.
        let run = host.dir("run");
        std::fs::set_permissions(&run, std::fs::Permissions::from_mode(0o1777)).unwrap();
        let daemon = Daemon::start(host, &root, &[]);
        assert_eq!(mode(&run), 0o700);
        assert!(daemon.log_text().contains("socket directory mode set to 0700"));
        assert_eq!(mode(&daemon.state_dir), 0o700, "made by the daemon");
        drop(daemon);

        // Refused: a socket directory owned by someone else.
        let theirs = host.dir("theirs");
        std::os::unix::fs::chown(&theirs, Some(65534), Some(65534)).unwrap();
        let err = refused_start(&root, &theirs.join("s.sock"), &host.dir("ok").join("state"));
        assert!(err.contains("owned by uid 65534") && err.contains("chown"), "{err}");
        assert_eq!(std::fs::metadata(&theirs).unwrap().uid(), 65534, "left as it was");

        // Refused: a state directory that is a symlink, owned by someone else, or
        // writable by others; each says how to fix it.
        let socket = host.dir("sock").join("s.sock");
        let state = |name: &str| host.dir("states").join(name);
        std::os::unix::fs::symlink(host.dir("elsewhere"), state("link")).unwrap();
        let err = refused_start(&root, &socket, &state("link"));
        assert!(err.contains("is a symbolic link"), "{err}");
        let nobody = host.dir("states/nobody");
        std::os::unix::fs::chown(&nobody, Some(65534), Some(65534)).unwrap();
        let err = refused_start(&root, &socket, &nobody);
        assert!(err.contains("owned by uid 65534") && err.contains("chown 0:0"), "{err}");
        let open = host.dir("states/open");
        std::fs::set_permissions(&open, std::fs::Permissions::from_mode(0o777)).unwrap();
        let err = refused_start(&root, &socket, &open);
        assert!(err.contains("mode 0777") && err.contains("chmod go-w"), "{err}");
    }
}
