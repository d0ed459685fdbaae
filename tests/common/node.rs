//! End-to-end support: a node whose "host" is the namespace dockerd runs in, since
//! Docker resolves bind sources there. Its scratch root is a tmpfs made rshared (as
//! systemd makes `/`), and everything a test makes there (VCS containers, the
//! kubelet container, sshd, mounts) is removed when the `Node` is dropped.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output};

use super::{expect_success, quote, root_or_skip, sh, Daemon, Host, SIDEMOUNT};

/// The images end-to-end tests run (built by hack/build-images.sh).
pub const SSHFS_IMAGE: &str = "sidemount/vcs-sshfs:latest";
pub const BLOCK_IMAGE: &str = "sidemount/vcs-iscsi:latest";
pub const BASE_IMAGE: &str = "sidemount/base:bookworm";
pub const KUBELET_IMAGE: &str = "sidemount/kubelet-node:latest";

/// Whether a test that needs Docker can run. Without it, it prints why and skips,
/// unless `SIDEMOUNT_REQUIRE_DOCKER=1`, where skipping is a failure.
pub fn docker_or_skip(test: &str) -> bool {
    if !root_or_skip(test) {
        return false;
    }
    let up = Command::new("timeout")
        .args([
            "20",
            "docker",
            "version",
            "--format",
            "{{.Server.APIVersion}}",
        ])
        .output()
        .is_ok_and(|o| o.status.success());
    if !up {
        assert!(
            std::env::var("SIDEMOUNT_REQUIRE_DOCKER").as_deref() != Ok("1"),
            "{test} needs a running dockerd and SIDEMOUNT_REQUIRE_DOCKER=1 forbids skipping it"
        );
        eprintln!("skipping {test}: no dockerd answers");
        return false;
    }
    for image in [SSHFS_IMAGE, BLOCK_IMAGE, BASE_IMAGE, KUBELET_IMAGE] {
        assert!(
            docker(&["image", "inspect", image]).status.success(),
            "{test}: image {image} is missing: run hack/build-images.sh"
        );
    }
    true
}

/// Runs the docker CLI, with a deadline.
pub fn docker(args: &[&str]) -> Output {
    Command::new("timeout")
        .args(["120", "docker"])
        .args(args)
        .output()
        .unwrap()
}

/// `docker ARGS`, which must succeed; its stdout.
pub fn docker_ok(args: &[&str]) -> String {
    expect_success(&format!("docker {}", args.join(" ")), docker(args))
}

pub struct Node {
    pub host: Host,
    /// Makes this test's container and VCS names unique.
    pub token: String,
    containers: Vec<String>,
    sshd: Option<Child>,
}

impl Node {
    /// None when the test must skip.
    pub fn new(test: &str) -> Option<Node> {
        if !docker_or_skip(test) {
            return None;
        }
        let scratch = tempfile::Builder::new()
            .prefix("sidemount-e2e-")
            .tempdir()
            .unwrap()
            .keep();
        sh(&format!(
            "mount -t tmpfs sidemount-e2e {0} && mount --make-rshared {0}",
            quote(&scratch)
        ));
        // Unique per node: tests of one binary share its pid when run in threads.
        static NODES: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let n = NODES.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let token = format!("{:x}{n:x}", std::process::id());
        Some(Node {
            host: Host { scratch },
            token,
            containers: Vec::new(),
            sshd: None,
        })
    }

    pub fn dir(&self, rel: &str) -> PathBuf {
        self.host.dir(rel)
    }

    pub fn kubelet_root(&self) -> PathBuf {
        self.dir("kubelet")
    }

    /// A VCS name unique to this test.
    pub fn vcs(&self, base: &str) -> String {
        format!("test-{base}-{}", self.token)
    }

    /// The container Docker runs for a VCS name.
    pub fn vcs_container(&self, vcs: &str) -> String {
        format!("sidemount-vcs-{vcs}")
    }

    /// Starts sshd on 127.0.0.1 (a free port) with key login for root, serving
    /// `export/` with `hello.txt`. Returns the port; the key is `keys/id`.
    pub fn sshd(&mut self) -> u16 {
        let ssh = self.dir("ssh");
        let keys = self.dir("keys");
        let export = self.dir("export");
        std::fs::write(export.join("hello.txt"), "hello from the export\n").unwrap();
        sh(&format!(
            "ssh-keygen -q -t ed25519 -N '' -f {0}/host_key && ssh-keygen -q -t ed25519 -N '' -f {1}/id && cp {1}/id.pub {0}/authorized_keys && mkdir -p /run/sshd",
            quote(&ssh),
            quote(&keys)
        ));
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let config = ssh.join("config");
        std::fs::write(
            &config,
            format!(
                "Port {port}\nListenAddress 127.0.0.1\nHostKey {0}/host_key\nAuthorizedKeysFile {0}/authorized_keys\nPermitRootLogin prohibit-password\nStrictModes no\nUsePAM no\nPidFile none\nSubsystem sftp internal-sftp\n",
                ssh.display()
            ),
        )
        .unwrap();
        self.start_sshd(port);
        port
    }

    /// Lets `user` (uid 4242, home the export) log in to the sshd on `port` with
    /// `password`, and restarts it: the user exists only for that sshd, which
    /// runs in a mount namespace of its own with copies of `/etc/passwd` and
    /// `/etc/shadow` bound over the machine's.
    pub fn allow_password(&mut self, port: u16, user: &str, password: &str) {
        let ssh = self.dir("ssh");
        let export = self.dir("export");
        // On openssl's stdin: no command line here holds the password, which a
        // test beside this one may be looking for on every command line.
        let hash = {
            use std::io::Write;
            let mut child = Command::new("openssl")
                .args(["passwd", "-6", "-stdin"])
                .stdin(std::process::Stdio::piped())
                .stdout(std::process::Stdio::piped())
                .spawn()
                .unwrap();
            writeln!(child.stdin.take().unwrap(), "{password}").unwrap();
            expect_success("openssl passwd", child.wait_with_output().unwrap())
        };
        let passwd = std::fs::read_to_string("/etc/passwd").unwrap()
            + &format!("{user}:x:4242:4242::{}:/bin/sh\n", export.display());
        let shadow = std::fs::read_to_string("/etc/shadow").unwrap()
            + &format!("{user}:{}:19000:0:99999:7:::\n", hash.trim());
        std::fs::write(ssh.join("passwd"), passwd).unwrap();
        std::fs::write(ssh.join("shadow"), shadow).unwrap();
        let mut config = std::fs::OpenOptions::new()
            .append(true)
            .open(ssh.join("config"))
            .unwrap();
        use std::io::Write;
        writeln!(
            config,
            "PasswordAuthentication yes\nKbdInteractiveAuthentication no"
        )
        .unwrap();
        self.stop_sshd();
        self.start_sshd(port);
    }

    /// Starts the sshd that [`Node::sshd`] configured, on its `port`.
    pub fn start_sshd(&mut self, port: u16) {
        let ssh = self.dir("ssh");
        let mut command = Command::new("/usr/sbin/sshd");
        if ssh.join("passwd").exists() {
            // unshare and sh exec: the child's pid is sshd's.
            command = Command::new("unshare");
            command.args([
                "--mount",
                "--propagation",
                "private",
                "sh",
                "-c",
                "mount --bind \"$0\" /etc/passwd && mount --bind \"$1\" /etc/shadow && shift && exec /usr/sbin/sshd \"$@\"",
            ]);
            command.arg(ssh.join("passwd")).arg(ssh.join("shadow"));
        }
        let child = command
            .arg("-D")
            .arg("-f")
            .arg(ssh.join("config"))
            .arg("-E")
            .arg(ssh.join("log"))
            .spawn()
            .unwrap();
        self.sshd = Some(child);
        super::wait_until("sshd listens", || {
            std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()
        });
    }

    /// Stops sshd and every session it serves (by pid): its clients' connections
    /// drop.
    pub fn stop_sshd(&mut self) {
        let Some(mut c) = self.sshd.take() else {
            return;
        };
        let mut pids = vec![c.id()];
        let mut i = 0;
        while i < pids.len() {
            let children = format!("/proc/{0}/task/{0}/children", pids[i]);
            let found = std::fs::read_to_string(children).unwrap_or_default();
            pids.extend(
                found
                    .split_whitespace()
                    .filter_map(|p| p.parse::<u32>().ok()),
            );
            i += 1;
        }
        for pid in pids {
            let pid = nix::unistd::Pid::from_raw(pid as i32);
            let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGKILL);
        }
        let _ = c.wait();
    }

    /// mount(8) options for sshfs against `port` with the test key, as the VCS
    /// container sees it (`keys/` bound at /keys).
    pub fn sshfs_options(port: u16) -> String {
        format!("port={port},IdentityFile=/keys/id,StrictHostKeyChecking=no,UserKnownHostsFile=/dev/null,allow_other")
    }

    /// The sshfs export as mount(8)'s source.
    pub fn sshfs_source(&self) -> String {
        format!("root@127.0.0.1:{}", self.dir("export").display())
    }

    /// A pod's sshfs volume directory under the kubelet root, created.
    pub fn volume(&self, pod: &str) -> PathBuf {
        let v = self
            .kubelet_root()
            .join("pods")
            .join(pod)
            .join("volumes/kubernetes.io~sshfs/data");
        std::fs::create_dir_all(&v).unwrap();
        v
    }

    /// The mount(8) line the kubelet would run for an sshfs volume on `target`.
    pub fn mount_line(&self, port: u16, target: &Path) -> String {
        format!(
            "mount -t fuse.sshfs -o {} {} {}",
            Node::sshfs_options(port),
            self.sshfs_source(),
            quote(target)
        )
    }

    /// The agent binary VCS containers run: the static one CI built
    /// (`SIDEMOUNT_AGENT_BINARY`), else the test build.
    pub fn agent_binary() -> String {
        std::env::var("SIDEMOUNT_AGENT_BINARY").unwrap_or_else(|_| SIDEMOUNT.to_owned())
    }

    /// Starts the daemon with `config` and the agent binary, for this node's
    /// kubelet root; `env` adds variables (`DOCKER_HOST`).
    pub fn start_daemon_with_env(&self, config: &Path, env: &[(&str, &str)]) -> Daemon {
        let (config, agent) = (config.display().to_string(), Node::agent_binary());
        let args = ["--config", &config, "--agent-binary", &agent];
        Daemon::start_with_env(&self.host, &self.kubelet_root(), &args, env)
    }

    pub fn start_daemon(&self, config: &Path) -> Daemon {
        self.start_daemon_with_env(config, &[])
    }

    /// Writes a daemon configuration with this node's kubelet root and `vcs` (YAML
    /// list items) and returns its path.
    pub fn config(&self, name: &str, vcs: &str) -> PathBuf {
        let path = self.dir("etc").join(name);
        std::fs::write(
            &path,
            format!(
                // The tests' block volumes are loop devices, which no default
                // pattern allows.
                "kubelet_root: {}\nrequest_timeout_seconds: 30\nblock_device_patterns: [/dev/loop*]\nvcs:\n{vcs}",
                self.kubelet_root().display()
            ),
        )
        .unwrap();
        path
    }

    /// The sshfs VCS of this test in `mode`, its container tracked for removal,
    /// and the config file that serves it: (VCS name, container, config).
    pub fn sshfs_config(&mut self, mode: &str) -> (String, String, PathBuf) {
        let vcs = self.vcs("sshfs");
        let container = self.vcs_container(&vcs);
        self.track(&container);
        let config = self.config("sidemount.yaml", &self.sshfs_vcs(&vcs, mode));
        (vcs, container, config)
    }

    /// A VCS entry for sshfs with the capability profile this machine allows.
    pub fn sshfs_vcs(&self, name: &str, mode: &str) -> String {
        format!(
            "  - name: {name}\n    types: [fuse.sshfs]\n    image: {SSHFS_IMAGE}\n    mode: {mode}\n    long_running: true\n    host_network: true\n    security: {{privileged: false, capabilities: [SYS_ADMIN], devices: [/dev/fuse], unconfined: true}}\n    binds: [\"{}:/keys\"]\n",
            self.dir("keys").display()
        )
    }

    /// A VCS entry served from the base image with the capability profile: `types`
    /// are kernel filesystems, so the test measures sidemount, not a client.
    pub fn kernel_vcs(name: &str, types: &str, mode: &str) -> String {
        format!(
            "  - name: {name}\n    types: [{types}]\n    image: {BASE_IMAGE}\n    mode: {mode}\n    security: {{privileged: false, capabilities: [SYS_ADMIN], unconfined: true}}\n"
        )
    }

    /// `docker run -d` of a container named `sidemount-test-ROLE-TOKEN` with
    /// `args` (options, image, command), removed when the node goes; its name.
    fn run(&mut self, role: &str, args: &[&str]) -> String {
        let name = format!("sidemount-test-{role}-{}", self.token);
        let mut all = vec!["run", "-d", "--name", &name];
        all.extend_from_slice(args);
        docker_ok(&all);
        self.containers.push(name.clone());
        name
    }

    /// The scratch root bound `rshared` at the same path (the kubelet root in it).
    fn scratch_rshared(&self) -> String {
        let scratch = self.host.scratch.display();
        format!("{scratch}:{scratch}:rshared")
    }

    /// Starts a kubelet-like container: util-linux and sidemount's helpers for
    /// `types`, the scratch root bound `rshared` (the kubelet root in it), the
    /// daemon socket through `SIDEMOUNT_SOCKET`.
    pub fn kubelet(&mut self, types: &str, socket: &Path) -> Kubelet {
        let (scratch, socket) = (self.scratch_rshared(), socket.display());
        let name = self.run(
            "kubelet",
            &[
                "--network",
                "host",
                "-v",
                &scratch,
                "-v",
                &format!("{SIDEMOUNT}:/usr/local/bin/sidemount:ro"),
                "-e",
                &format!("SIDEMOUNT_SOCKET={socket}"),
                "--entrypoint",
                "sleep",
                BASE_IMAGE,
                "infinity",
            ],
        );
        let k = Kubelet { name };
        k.sh(&format!(
            "sidemount install-helpers --dir /sbin --types {types}"
        ));
        k
    }

    /// Starts a kubelet from the kubelet-node image as operators run one: the
    /// host's pids, the scratch root (the kubelet root in it) bound `rshared`, the
    /// daemon's socket directory `run` at /run/sidemount, CAP_SYS_ADMIN.
    pub fn kubelet_node(&mut self, run: &Path) -> Kubelet {
        let scratch = self.scratch_rshared();
        let name = self.run(
            "kubelet",
            &[
                "--pid",
                "host",
                "--network",
                "host",
                "--cap-add",
                "SYS_ADMIN",
                "-v",
                &scratch,
                "-v",
                &format!("{}:/run/sidemount", run.display()),
                KUBELET_IMAGE,
            ],
        );
        Kubelet { name }
    }

    /// Starts the VCS container of `vcs` (an entry of [`Node::sshfs_vcs`]) as
    /// Kubernetes runs a sidecar for the external provider: the agent as its
    /// entrypoint, serving `run/agents/VCS.sock`.
    pub fn external_sshfs(&mut self, vcs: &str, run: &Path) -> String {
        let scratch = self.scratch_rshared();
        let socket = self.dir("run/agents").join(format!("{vcs}.sock"));
        let name = self.run(
            "vcs",
            &[
                "--network",
                "host",
                "--cap-add",
                "SYS_ADMIN",
                "--device",
                "/dev/fuse",
                "--security-opt",
                "seccomp=unconfined",
                "--security-opt",
                "apparmor=unconfined",
                "-v",
                &scratch,
                "-v",
                &format!("{}:{}", run.display(), run.display()),
                "-v",
                &format!("{}:/keys:ro", self.dir("keys").display()),
                "-v",
                &format!("{}:/.sidemount/sidemount:ro", Node::agent_binary()),
                "--entrypoint",
                "/.sidemount/sidemount",
                SSHFS_IMAGE,
                "agent",
                "--vcs",
                vcs,
                "--socket",
                &socket.display().to_string(),
            ],
        );
        super::wait_until("the external agent answers", || {
            super::sidemount(&["status", "--socket", socket.to_str().unwrap()])
                .status
                .success()
        });
        name
    }

    /// Starts a pod container that binds the volume directory `volume` at /data
    /// with `rslave` propagation, as the kubelet's runtime does for a pod volume.
    pub fn pod(&mut self, pod: &str, volume: &Path) -> Kubelet {
        self.pod_bound(pod, volume, "rslave")
    }

    /// [`Node::pod`] with the bind's `propagation` (`rprivate`, `rslave`, ...).
    pub fn pod_bound(&mut self, pod: &str, volume: &Path, propagation: &str) -> Kubelet {
        let data = format!("{}:/data:{propagation}", volume.display());
        let name = self.run(
            pod,
            &[
                "--network",
                "none",
                "-v",
                &data,
                "--entrypoint",
                "sleep",
                BASE_IMAGE,
                "infinity",
            ],
        );
        Kubelet { name }
    }

    /// Removes a container when the node goes.
    pub fn track(&mut self, container: &str) {
        self.containers.push(container.to_owned());
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        if let Some(mut c) = self.sshd.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
        for c in &self.containers {
            let _ = docker(&["rm", "-f", c]);
        }
        let _ = Command::new("umount")
            .args(["-R", "-l"])
            .arg(&self.host.scratch)
            .status();
        let _ = std::fs::remove_dir_all(&self.host.scratch);
    }
}

/// A container the test runs commands in (the kubelet, a pod).
pub struct Kubelet {
    pub name: String,
}

impl Kubelet {
    /// Runs a shell line in it; the output whatever the status.
    pub fn run(&self, line: &str) -> Output {
        docker(&["exec", &self.name, "sh", "-euc", line])
    }

    /// Runs a shell line in it, which must succeed.
    pub fn sh(&self, line: &str) -> String {
        expect_success(&format!("{}: {line}", self.name), self.run(line))
    }

    /// Its init's pid, to read its mountinfo.
    pub fn pid(&self) -> u32 {
        docker_ok(&["inspect", "-f", "{{.State.Pid}}", &self.name])
            .trim()
            .parse()
            .unwrap()
    }
}

/// A dockerd of the test's own, all of its state under the scratch root, so it can
/// be stopped while the machine's dockerd goes on serving other tests.
pub struct PrivateDockerd {
    /// Its `DOCKER_HOST`.
    pub host: String,
    /// Its own bridge: with `--bridge none` dockerd would delete the machine's docker0.
    bridge: String,
    child: Option<Child>,
}

impl PrivateDockerd {
    /// Starts it (a bridge of its own, no iptables) and loads `images` from the machine's
    /// dockerd.
    pub fn start(node: &Node, images: &[&str]) -> PrivateDockerd {
        let dir = node.dir("dockerd");
        let config = dir.join("daemon.json");
        std::fs::write(&config, "{}\n").unwrap();
        let host = format!("unix://{}/docker.sock", dir.display());
        let bridge = format!("smtest{}", node.token);
        let net = std::process::id() % 250;
        sh(&format!(
            "ip link add {bridge} type bridge && ip addr add 10.213.{net}.1/24 dev {bridge} && ip link set {bridge} up"
        ));
        let log = std::fs::File::create(dir.join("log")).unwrap();
        let child = Command::new("dockerd")
            .arg("--config-file")
            .arg(&config)
            .arg("--data-root")
            .arg(dir.join("data"))
            .arg("--exec-root")
            .arg(dir.join("exec"))
            .arg("--pidfile")
            .arg(dir.join("pid"))
            .args(["-H", &host, "--bridge", &bridge, "--iptables=false"])
            .args(["--ip-masq=false", "--shutdown-timeout", "5"])
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap();
        let d = PrivateDockerd {
            host,
            bridge,
            child: Some(child),
        };
        super::wait_until("the private dockerd answers", || {
            docker(&["-H", &d.host, "version"]).status.success()
        });
        for image in images {
            sh(&format!(
                "timeout 120 docker save {image} | timeout 120 docker -H {} load -q",
                d.host
            ));
        }
        d
    }

    /// Stops it (SIGTERM: it stops its containers first) and waits for it.
    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let pid = nix::unistd::Pid::from_raw(c.id() as i32);
            let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
            let _ = c.wait();
        }
    }
}

impl Drop for PrivateDockerd {
    fn drop(&mut self) {
        self.stop();
        let _ = Command::new("ip")
            .args(["link", "del", &self.bridge])
            .status();
    }
}
