//! Test support. Privileged tests run their body as pid 1 of a fresh pid and mount
//! namespace (`/` rprivate, its own `/proc`, a tmpfs scratch root), so nothing they
//! mount reaches the machine's table and every process they start dies with them.
//! Inside, `Host::namespace` builds the "containerized kubelet", "VCS" and "pod"
//! namespaces of a node.
#![allow(dead_code)] // each test crate uses a part of this module

pub mod fixtures;
pub mod node;
pub mod swap;

use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};

const INSIDE: &str = "SIDEMOUNT_TEST_INSIDE";
const SCRATCH: &str = "SIDEMOUNT_TEST_SCRATCH";
/// A privileged test body may run this long before it is killed.
const TEST_TIMEOUT_SECS: &str = "300";

pub const SIDEMOUNT: &str = env!("CARGO_BIN_EXE_sidemount");

/// Whether a test that needs root can run. Without root it prints why and skips,
/// unless `SIDEMOUNT_REQUIRE_ROOT=1`, where skipping is a failure.
pub fn root_or_skip(test: &str) -> bool {
    if nix::unistd::geteuid().is_root() {
        return true;
    }
    assert!(
        std::env::var("SIDEMOUNT_REQUIRE_ROOT").as_deref() != Ok("1"),
        "{test} needs root and SIDEMOUNT_REQUIRE_ROOT=1 forbids skipping it"
    );
    eprintln!("skipping {test}: it needs root (mount namespaces)");
    false
}

/// Defines a `#[test]` whose body runs in its own namespaces as root (see `isolated`).
#[macro_export]
macro_rules! privileged_test {
    ($(#[$meta:meta])* fn $name:ident($host:ident: $ty:ty) $body:block) => {
        $(#[$meta])*
        #[test]
        fn $name() {
            common::isolated(stringify!($name), |$host: $ty| $body);
        }
    };
}

/// Runs `body` as pid 1 of new pid and mount namespaces: the test binary executes
/// itself again under `unshare`, filtered to this one test.
pub fn isolated(test: &str, body: impl FnOnce(&Host)) {
    if std::env::var(INSIDE).as_deref() == Ok(test) {
        let scratch = PathBuf::from(std::env::var_os(SCRATCH).expect("scratch dir"));
        sh(&format!(
            "mount -t tmpfs sidemount-test {}",
            quote(&scratch)
        ));
        body(&Host { scratch });
        return;
    }
    if !root_or_skip(test) {
        return;
    }
    let scratch = tempfile::Builder::new()
        .prefix("sidemount-test-")
        .tempdir()
        .unwrap();
    let status = Command::new("timeout")
        .args([
            "--kill-after=5",
            TEST_TIMEOUT_SECS,
            "unshare",
            "--mount",
            "--pid",
            "--fork",
        ])
        .args(["--mount-proc", "--propagation", "private", "--"])
        .arg(std::env::current_exe().unwrap())
        .args([test, "--exact", "--nocapture", "--test-threads=1"])
        .env(INSIDE, test)
        .env(SCRATCH, scratch.path())
        .status()
        .expect("run unshare");
    assert!(status.success(), "{test} failed in its namespace: {status}");
}

/// The test's own "host": pid 1 of its pid namespace, with a tmpfs scratch root.
pub struct Host {
    pub scratch: PathBuf,
}

impl Host {
    /// A directory under the scratch root, created.
    pub fn dir(&self, rel: &str) -> PathBuf {
        let p = self.scratch.join(rel);
        std::fs::create_dir_all(&p).unwrap();
        p
    }

    /// A new mount namespace that starts as a copy of this one (shared mounts stay
    /// in their peer groups, as a container's `:rshared` volume does), after running
    /// `setup` in it. It lives until the returned handle is dropped.
    pub fn namespace(&self, name: &str, setup: &str) -> Namespace {
        let child = Command::new("unshare")
            .args(["--mount", "--propagation", "unchanged", "--", "sh", "-euc"])
            .arg(format!("{setup}\necho ready\nexec sleep 1000000"))
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let mut ns = Namespace {
            name: name.into(),
            pid: child.id(),
            child,
        };
        let mut ready = String::new();
        use std::io::BufRead;
        std::io::BufReader::new(ns.child.stdout.as_mut().unwrap())
            .read_line(&mut ready)
            .unwrap();
        assert_eq!(ready, "ready\n", "namespace {name}: setup {setup:?} failed");
        ns
    }
}

/// A process holding a mount namespace open.
pub struct Namespace {
    pub name: String,
    pub pid: u32,
    child: Child,
}

impl Namespace {
    /// A command that runs inside this namespace.
    pub fn command(&self, program: impl AsRef<OsStr>) -> Command {
        let mut c = Command::new("nsenter");
        c.args(["-t", &self.pid.to_string(), "-m", "--"])
            .arg(program);
        c
    }

    /// Runs a shell line in this namespace; panics with its output when it fails.
    pub fn sh(&self, line: &str) -> String {
        let out = self.command("sh").args(["-euc", line]).output().unwrap();
        expect_success(&format!("{}: {line}", self.name), out)
    }
}

impl Drop for Namespace {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Whether the comma-separated `options` (findmnt's) hold `option`.
pub fn has_option(options: &str, option: &str) -> bool {
    options.split(',').any(|o| o == option)
}

/// Runs a shell line here; panics with its output when it fails.
pub fn sh(line: &str) -> String {
    let out = Command::new("sh").args(["-euc", line]).output().unwrap();
    expect_success(line, out)
}

pub fn expect_success(what: &str, out: Output) -> String {
    assert!(
        out.status.success(),
        "{what}: {}\nstdout: {}\nstderr: {}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// Polls `cond` every 10 ms for up to 10 s.
pub fn wait_until(what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while !cond() {
        assert!(
            std::time::Instant::now() < deadline,
            "timed out waiting: {what}"
        );
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
}

/// Single-quotes a path for `sh`.
pub fn quote(path: &Path) -> String {
    let s = String::from_utf8_lossy(path.as_os_str().as_bytes());
    format!("'{}'", s.replace('\'', r"'\''"))
}

/// Runs `sidemount` with `args`, returning its output whatever its status.
pub fn sidemount(args: &[&str]) -> Output {
    Command::new(SIDEMOUNT).args(args).output().unwrap()
}

/// The test's kubelet root, made shared by `sidemount share` as on a node.
pub fn kubelet_root(host: &Host) -> PathBuf {
    let root = host.dir("var/lib/kubelet");
    expect_success("share", sidemount(&["share", root.to_str().unwrap()]));
    root
}

/// The directory of pod p1's volume `name` below the kubelet root, created.
pub fn volume(root: &Path, name: &str) -> PathBuf {
    pod_volume(root, "p1", name)
}

/// The directory of `pod`'s volume `name` below the kubelet root, created.
pub fn pod_volume(root: &Path, pod: &str, name: &str) -> PathBuf {
    let dir = root.join(format!("pods/{pod}/volumes/kubernetes.io~test/{name}"));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// A configuration for the kubelet root `root` with one volume client `name`
/// for `types` (`[nfs, cifs]`) that someone else runs (provider external).
pub fn external_vcs_config(host: &Host, root: &Path, name: &str, types: &str) -> PathBuf {
    let config = host.dir("etc").join("sidemount.yaml");
    let text = format!(
        "kubelet_root: {}\nagent_wait_seconds: 1\nvcs:\n  - name: {name}\n    types: {types}\n    image: example/{name}:1\n    provider: external\n",
        root.display()
    );
    std::fs::write(&config, text).unwrap();
    config
}

/// A `sidemount serve` started by a test, on a socket in the scratch root. Stopped
/// (SIGTERM, then SIGKILL) when dropped.
pub struct Daemon {
    pub socket: PathBuf,
    pub state_dir: PathBuf,
    pub log: PathBuf,
    pub child: Child,
}

impl Daemon {
    /// Starts the daemon for the kubelet root `root`, with `extra` arguments, and
    /// waits until it answers.
    pub fn start(host: &Host, root: &Path, extra: &[&str]) -> Daemon {
        Daemon::start_with_env(host, root, extra, &[])
    }

    /// [`Daemon::start`] with extra environment variables (`DOCKER_HOST`).
    pub fn start_with_env(
        host: &Host,
        root: &Path,
        extra: &[&str],
        env: &[(&str, &str)],
    ) -> Daemon {
        let run = host.dir("run");
        let socket = run.join("sidemount.sock");
        let state_dir = run.join("state");
        let log = run.join(format!("daemon-{}.log", std::process::id()));
        // The tests mount loop devices, which no default pattern allows.
        let loops = run.join("loop-devices.yaml");
        std::fs::write(&loops, "block_device_patterns: [/dev/loop*]\n").unwrap();
        let config: &[&str] = match extra.contains(&"--config") {
            true => &[],
            false => &["--config", loops.to_str().unwrap()],
        };
        let log_file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log)
            .unwrap();
        let child = Command::new(SIDEMOUNT)
            .arg("serve")
            .arg("--socket")
            .arg(&socket)
            .arg("--kubelet-root")
            .arg(root)
            .arg("--state-dir")
            .arg(&state_dir)
            .args(config)
            .args(extra)
            .envs(env.iter().copied())
            .stderr(log_file)
            .spawn()
            .unwrap();
        let daemon = Daemon {
            socket,
            state_dir,
            log,
            child,
        };
        wait_until("the daemon answers", || daemon.get("/v1/status").is_some());
        daemon
    }

    /// A shell line run with this daemon's socket: (exit code, stderr).
    pub fn run(&self, line: &str) -> (Option<i32>, String) {
        let out = Command::new("sh")
            .args(["-c", line])
            .env("SIDEMOUNT_SOCKET", &self.socket)
            .output()
            .unwrap();
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    }

    /// GET path, as JSON; None when the daemon does not answer.
    pub fn get(&self, path: &str) -> Option<serde_json::Value> {
        let out = Command::new("curl")
            .args(["-sf", "--max-time", "10", "--unix-socket"])
            .arg(&self.socket)
            .arg(format!("http://sidemount{path}"))
            .output()
            .ok()?;
        out.status
            .success()
            .then(|| serde_json::from_slice(&out.stdout).unwrap())
    }

    /// The daemon's records on `target`: (executor, mount id, options).
    pub fn records_on(&self, target: &Path) -> Vec<(String, String, Vec<String>)> {
        let all = self.get("/v1/mounts").expect("daemon answers");
        all.as_array()
            .unwrap()
            .iter()
            .filter(|m| m["target"].as_str() == target.to_str())
            .map(|m| {
                let options = m["options"].as_array().unwrap();
                (
                    m["executor"].as_str().unwrap().to_owned(),
                    m["mount_id"].to_string(),
                    options
                        .iter()
                        .map(|o| o.as_str().unwrap().to_owned())
                        .collect(),
                )
            })
            .collect()
    }

    /// The targets the daemon's record holds.
    pub fn recorded(&self) -> Vec<String> {
        let mounts = self.get("/v1/mounts").expect("daemon answers");
        mounts
            .as_array()
            .unwrap()
            .iter()
            .map(|m| m["target"].as_str().unwrap().to_owned())
            .collect()
    }

    /// Runs `sidemount ARGS` with this daemon's socket, as a host kubelet runs
    /// its mounter path, under a hang guard: its output, whatever its status.
    pub fn client<S: AsRef<OsStr>>(&self, args: impl IntoIterator<Item = S>) -> Output {
        let args: Vec<S> = args.into_iter().collect();
        let out = Command::new("timeout")
            .arg("60")
            .arg(SIDEMOUNT)
            .args(&args)
            .env("SIDEMOUNT_SOCKET", &self.socket)
            .output()
            .unwrap();
        let shown: Vec<&OsStr> = args.iter().map(AsRef::as_ref).collect();
        assert_ne!(out.status.code(), Some(124), "{shown:?} hung");
        out
    }

    /// [`Daemon::client`]: (exit code, stderr).
    pub fn forward(&self, args: &[&str]) -> (Option<i32>, String) {
        let out = self.client(args);
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Sends `signal` and waits for the daemon to exit.
    pub fn stop(&mut self, signal: nix::sys::signal::Signal) -> std::process::ExitStatus {
        let pid = nix::unistd::Pid::from_raw(self.child.id() as i32);
        let _ = nix::sys::signal::kill(pid, signal);
        self.child.wait().unwrap()
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if self.child.try_wait().ok().flatten().is_none() {
            self.stop(nix::sys::signal::Signal::SIGTERM);
        }
    }
}

/// A volume-client agent that someone other than the daemon runs (the external
/// provider): here a process in a mount namespace of its own, which starts as a
/// copy of the host's, as a Kubernetes sidecar with the kubelet root Bidirectional.
pub struct ExternalAgent {
    pub child: std::process::Child,
    /// Where it serves: `run/agents/VCS.sock`, where the daemon looks for it.
    pub socket: PathBuf,
}

impl ExternalAgent {
    pub fn start(host: &Host, vcs: &str) -> ExternalAgent {
        let socket = host.dir("run/agents").join(format!("{vcs}.sock"));
        let log = std::fs::File::create(host.dir("run").join(format!("agent-{vcs}.log"))).unwrap();
        let child = Command::new("unshare")
            .args([
                "--mount",
                "--propagation",
                "unchanged",
                "--",
                SIDEMOUNT,
                "agent",
                "--vcs",
                vcs,
                "--socket",
            ])
            .arg(&socket)
            .stderr(log)
            .spawn()
            .unwrap();
        wait_until("the agent answers", || {
            sidemount(&["status", "--socket", socket.to_str().unwrap()])
                .status
                .success()
        });
        ExternalAgent { child, socket }
    }
}

impl Drop for ExternalAgent {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Installs sidemount's helpers for `types` and lays them over /usr/sbin (where
/// mount(8) looks) in the namespace `run` executes in, as a kubelet node would have
/// them installed.
pub fn install_helpers_line(host: &Host, types: &str) -> String {
    let dir = host.dir("helpers");
    expect_success(
        "install-helpers",
        sidemount(&[
            "install-helpers",
            "--dir",
            dir.to_str().unwrap(),
            "--types",
            types,
        ]),
    );
    format!(
        "mount -t overlay helpers -o lowerdir={}:/usr/sbin /usr/sbin",
        dir.display()
    )
}

/// A shared kubelet root and a daemon for it, with sidemount's helpers for `types`
/// laid over /usr/sbin here, as on a node whose kubelet runs mount(8) itself.
pub fn daemon_with_helpers(host: &Host, types: &str) -> (PathBuf, Daemon) {
    let root = kubelet_root(host);
    sh(&install_helpers_line(host, types));
    let daemon = Daemon::start(host, &root, &[]);
    (root, daemon)
}

/// A loop device over a fresh ext4 image, detached when dropped.
pub struct LoopDevice {
    pub device: String,
}

impl LoopDevice {
    pub fn ext4(host: &Host, name: &str) -> LoopDevice {
        let image = host.dir("images").join(format!("{name}.img"));
        sh(&format!(
            "truncate -s 16M {0} && mkfs.ext4 -q {0}",
            quote(&image)
        ));
        LoopDevice::attach(&image)
    }

    /// A loop device over an existing image file.
    pub fn attach(image: &Path) -> LoopDevice {
        let device = sh(&format!("losetup -f --show {}", quote(image)))
            .trim()
            .to_owned();
        LoopDevice { device }
    }
}

impl Drop for LoopDevice {
    fn drop(&mut self) {
        let _ = Command::new("losetup").args(["-d", &self.device]).status();
    }
}

/// The mount points at or below `dir` in the table of `pid` (None: this process).
pub fn mount_points_under(pid: Option<u32>, dir: &Path) -> Vec<PathBuf> {
    use sidemount::ns::mountinfo::{MountTable, ProcRoot};
    MountTable::read(&ProcRoot::default(), pid)
        .unwrap()
        .mounts
        .into_iter()
        .filter(|m| m.target.starts_with(dir))
        .map(|m| m.target)
        .collect()
}
