//! The daemon's Prometheus metrics, scraped from a real daemon on its socket and on
//! TCP after known operations on real tmpfs mounts.

mod common;

use std::path::Path;
use std::process::Command;

use common::{kubelet_root, volume, wait_until, Daemon, Host};

/// GET /metrics with curl: the content type and the body.
fn scrape(curl_args: &[&str]) -> (String, String) {
    let out = Command::new("curl")
        .args(["-sf", "--max-time", "10", "-D", "/dev/stderr"])
        .args(curl_args)
        .output()
        .unwrap();
    assert!(out.status.success(), "{curl_args:?}: {out:?}");
    let headers = String::from_utf8_lossy(&out.stderr).to_lowercase();
    let content_type = headers
        .lines()
        .find_map(|l| l.strip_prefix("content-type: "))
        .unwrap_or_default()
        .trim()
        .to_owned();
    (content_type, String::from_utf8(out.stdout).unwrap())
}

/// The value of the sample `series` (name and labels as written), if present.
fn sample(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' '))
        .map(|v| v.trim().parse().unwrap())
}

fn op(operation: &str, fstype: &str, status: &str) -> String {
    format!(
        r#"sidemount_operation_duration_seconds_count{{operation="{operation}",executor="host",fstype="{fstype}",status="{status}"}}"#
    )
}

privileged_test! {
    fn metrics_count_known_operations_on_the_socket_and_on_tcp(host: &Host) {
        let root = kubelet_root(host);
        let daemon = Daemon::start(host, &root, &["--metrics-address", "127.0.0.1:0"]);
        let (a, b) = (volume(&root, "a"), volume(&root, "b"));
        let outside = host.dir("elsewhere");
        let mount = |target: &Path| {
            daemon.forward(&["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", target.to_str().unwrap()]).0
        };
        // Two mounts, one unmount, one refused mount.
        assert_eq!(mount(&a), Some(0));
        assert_eq!(mount(&b), Some(0));
        assert_eq!(daemon.forward(&["umount", b.to_str().unwrap()]).0, Some(0));
        assert_eq!(mount(&outside), Some(32));

        let socket = daemon.socket.to_str().unwrap().to_owned();
        let (content_type, text) =
            scrape(&["--unix-socket", &socket, "http://sidemount/metrics"]);
        assert!(content_type.starts_with("application/openmetrics-text"), "{content_type}");
        assert_eq!(sample(&text, &op("mount", "tmpfs", "success")), Some(2.0), "{text}");
        assert_eq!(sample(&text, &op("unmount", "tmpfs", "success")), Some(1.0), "{text}");
        assert_eq!(
            sample(&text, &op("mount", "tmpfs", "target_not_allowed")),
            Some(1.0),
            "{text}"
        );
        // Each tmpfs mount takes well under the kubelet's first bucket.
        let fast = r#"sidemount_operation_duration_seconds_bucket{le="0.1",operation="mount",executor="host",fstype="tmpfs",status="success"}"#;
        assert_eq!(sample(&text, fast), Some(2.0), "{text}");
        assert_eq!(
            sample(&text, r#"sidemount_mounts{executor="host",fstype="tmpfs",health="unwatched"}"#),
            Some(1.0),
            "{text}"
        );
        assert!(text.ends_with("# EOF\n"), "{text}");

        // The same on TCP, at the address the daemon logged.
        let mut address = String::new();
        wait_until("the metrics address is logged", || {
            let log = daemon.log_text();
            address = log
                .lines()
                .find(|l| l.contains("serving metrics"))
                .and_then(|l| l.split("address=").nth(1))
                .map(|a| a.split_whitespace().next().unwrap().to_owned())
                .unwrap_or_default();
            !address.is_empty()
        });
        let (_, tcp) = scrape(&[&format!("http://{address}/metrics")]);
        assert_eq!(sample(&tcp, &op("mount", "tmpfs", "success")), Some(2.0), "{tcp}");
        // Only metrics are served there.
        let other = Command::new("curl")
            .args(["-s", "-o", "/dev/null", "-w", "%{http_code}", "--max-time", "10"])
            .arg(format!("http://{address}/v1/status"))
            .output()
            .unwrap();
        assert_eq!(String::from_utf8_lossy(&other.stdout), "404");

        assert_eq!(daemon.forward(&["umount", a.to_str().unwrap()]).0, Some(0));
        let (_, text) = scrape(&["--unix-socket", &socket, "http://sidemount/metrics"]);
        assert!(!text.contains("sidemount_mounts{"), "{text}");
        assert_eq!(sample(&text, &op("unmount", "tmpfs", "success")), Some(2.0), "{text}");
    }
}
