//! Command shims and the daemons an agent keeps, on real processes: sidemount
//! linked as a program name forwards the call through the daemon to the agent of
//! the VCS whose `run` list allows it, with its stdin and exit status, by the
//! agent or by `docker exec` with a real dockerd; an agent started with
//! `--daemon` starts that program again when it exits.

mod common;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use common::node::{docker_ok, Node};
use common::{expect_success, sidemount, wait_until, Daemon, Host, SIDEMOUNT};

/// An agent started by the test, with `--daemon` arguments; killed when dropped.
struct Agent(Child);

impl Agent {
    fn start(host: &Host, vcs: &str, socket: &Path, daemons: &[&str]) -> Agent {
        let log = std::fs::File::create(host.dir("run").join(format!("agent-{vcs}.log"))).unwrap();
        let mut cmd = Command::new(SIDEMOUNT);
        cmd.args(["agent", "--vcs", vcs, "--socket"]).arg(socket);
        for d in daemons {
            cmd.args(["--daemon", d]);
        }
        let child = cmd.stderr(log).spawn().unwrap();
        wait_until("the agent answers", || {
            sidemount(&["status", "--socket", socket.to_str().unwrap()])
                .status
                .success()
        });
        Agent(child)
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The pids of the living children of `parent` whose command is `comm`.
fn children(parent: u32, comm: &str) -> Vec<u32> {
    procfs_children(parent)
        .into_iter()
        .filter(|pid| {
            std::fs::read_to_string(format!("/proc/{pid}/comm")).is_ok_and(|c| c.trim() == comm)
        })
        .collect()
}

fn procfs_children(parent: u32) -> Vec<u32> {
    std::fs::read_dir("/proc")
        .unwrap()
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
            let fields: Vec<&str> = stat
                .rsplit_once(") ")
                .map_or(vec![], |(_, rest)| rest.split(' ').collect());
            fields.first() != Some(&"Z") && fields.get(1) == Some(&parent.to_string().as_str())
        })
        .collect()
}

/// Links sidemount as each of `names` in a fresh directory, by install-helpers.
fn shims(host: &Host, names: &str) -> PathBuf {
    let dir = host.dir("shims");
    expect_success(
        "install-helpers --commands",
        sidemount(&[
            "install-helpers",
            "--dir",
            dir.to_str().unwrap(),
            "--commands",
            names,
            "--binary",
            SIDEMOUNT,
        ]),
    );
    dir
}

/// The shim `name` in `dir` called with `args` and `input` on its stdin, through
/// the daemon at `socket`: its exit code, stdout and stderr.
fn call(
    dir: &Path,
    socket: &Path,
    name: &str,
    args: &[&str],
    input: &str,
) -> (Option<i32>, String, String) {
    let mut child = Command::new(dir.join(name))
        .args(args)
        .env("SIDEMOUNT_SOCKET", socket)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(input.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

privileged_test! {
    fn a_shim_runs_its_command_in_the_vcs_that_allows_it(host: &Host) {
        let root = host.dir("var/lib/kubelet");
        let config = host.dir("etc").join("sidemount.yaml");
        // A VCS that mounts nothing and only runs commands.
        std::fs::write(&config, format!(
            "kubelet_root: {}\nvcs:\n  - name: tools\n    image: example/tools:1\n    provider: external\n    run: [wc, sh]\n",
            root.display()
        )).unwrap();
        let socket = host.dir("run/agents").join("tools.sock");
        let agent = Agent::start(host, "tools", &socket, &[]);
        let daemon = Daemon::start(host, &root, &["--config", config.to_str().unwrap()]);
        let dir = shims(host, "wc,sh,tr");
        let daemon_socket = daemon.socket.clone();
        let call = |name: &str, args: &[&str], input: &str| {
            call(&dir, &daemon_socket, name, args, input)
        };

        // stdin goes to the command; its output comes back.
        let (code, out, err) = call("wc", &["-c"], "twelve bytes");
        assert_eq!((code, out.trim()), (Some(0), "12"), "{err}");
        // It ran in the agent: its parent is the agent.
        let (code, out, err) = call("sh", &["-c", "echo $PPID; echo to stderr >&2; exit 3"], "");
        assert_eq!(code, Some(3), "the command's status: {err}");
        let mut lines = out.lines();
        assert_eq!(lines.next(), Some(agent.0.id().to_string().as_str()), "{out}");
        assert_eq!(lines.next(), Some("to stderr"), "combined output: {out}");
        // A program no VCS allows: a clear error, the shell's "not found" status.
        let (code, out, err) = call("tr", &["a", "b"], "");
        assert_eq!(code, Some(127), "{out}{err}");
        assert!(err.contains("no vcs allows running \"tr\""), "{err}");
        // Without the daemon: the same status and a message naming the socket.
        drop(daemon);
        let (code, _, err) = call("wc", &["-c"], "");
        assert_eq!(code, Some(127), "{err}");
        assert!(err.contains("sidemount (wc shim)"), "{err}");
    }
}

privileged_test! {
    fn an_agent_keeps_its_daemons_running(host: &Host) {
        let socket = host.dir("run/agents").join("kept.sock");
        let agent = Agent::start(host, "kept", &socket, &["sleep 1000000"]);
        let pid = agent.0.id();
        let mut first = Vec::new();
        wait_until("the daemon runs as the agent's child", || {
            first = children(pid, "sleep");
            first.len() == 1
        });
        nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(first[0] as i32),
            nix::sys::signal::Signal::SIGKILL,
        )
        .unwrap();
        wait_until("it is started again", || {
            let now = children(pid, "sleep");
            now.len() == 1 && now != first
        });
        // A stopping agent takes it along and does not start it again.
        let again = children(pid, "sleep");
        nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(pid as i32),
            nix::sys::signal::Signal::SIGTERM,
        )
        .unwrap();
        let mut agent = agent;
        assert!(agent.0.wait().unwrap().success());
        wait_until("the daemon is gone", || {
            !Path::new(&format!("/proc/{}", again[0])).exists()
                || std::fs::read_to_string(format!("/proc/{}/stat", again[0]))
                    .is_ok_and(|s| s.contains(") Z "))
        });
    }
}

#[test]
fn a_shim_feeds_its_stdin_to_a_command_run_by_docker_exec() {
    let Some(mut node) = Node::new("a_shim_feeds_its_stdin_to_a_command_run_by_docker_exec") else {
        return;
    };
    let vcs = node.vcs("tools");
    let container = node.vcs_container(&vcs);
    node.track(&container);
    let entry = format!(
        "{}    run: [sh, cat]\n",
        Node::kernel_vcs(&vcs, "tmpfs", "exec")
    );
    let daemon = node.start_daemon(&node.config("sidemount.yaml", &entry));
    let dir = shims(&node.host, "sh,cat");
    let call =
        |name: &str, args: &[&str], input: &str| call(&dir, &daemon.socket, name, args, input);

    // What the shim reads reaches the command in the container, whole.
    let (code, out, err) = call(
        "sh",
        &["-c", "read x; echo got:$x; cat /etc/hostname"],
        "fed\n",
    );
    assert_eq!(code, Some(0), "{out}{err}");
    let mut lines = out.lines();
    assert_eq!(lines.next(), Some("got:fed"), "{out}");
    // It ran in the VCS container: its hostname is the container's id.
    let id = docker_ok(&["inspect", "-f", "{{.Config.Hostname}}", &container]);
    assert_eq!(lines.next(), Some(id.trim()), "{out}");
    let text = "two lines\nof text\n";
    let (code, out, err) = call("cat", &[], text);
    assert_eq!((code, out.as_str()), (Some(0), text), "{err}");
    // No input: the command reads an end of file at once.
    let (code, out, err) = call("sh", &["-c", "read x || echo none:$x"], "");
    assert_eq!((code, out.as_str()), (Some(0), "none:\n"), "{err}");
}
