//! The mount and unmount pipelines without root: a fake executor whose mounts
//! are lines it writes into fixture proc dirs (its own namespace, and those the
//! mount propagates to), and a recording `Syscall` for the daemon's own undo.

use std::path::PathBuf;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::api::wire::{ErrorCode, MountRequest, Peer, UnmountRequest};
use crate::daemon::config::Config;
use crate::daemon::{Daemon, Paths};
use crate::executor::{ExecError, Executor, Made, UnmountFlags};
use crate::mount::options::MountOptions;
use crate::mount::syscall::fake::{Call, Recording};
use crate::mount::syscall::MntFlags;
use crate::ns::mountinfo::fixture::PLAIN;
use crate::ns::mountinfo::ProcRoot;
use crate::ns::namespace::Namespace;
use crate::policy::{CheckedMount, CheckedTarget};

const EXECUTOR_PID: u32 = 4242;
const DAEMON_PID: u32 = 4343;
pub(super) const ROOT: Peer = Peer { uid: 0, pid: None };

/// A node made of files: the daemon's own proc (`self`), the host's (`1`), the
/// executor's (`4242`), a kubelet root with one volume, and a state directory.
pub(super) struct Node {
    dir: tempfile::TempDir,
    pub(super) target: PathBuf,
}

impl Node {
    pub(super) fn new() -> Node {
        let dir = tempfile::tempdir().unwrap();
        for table in [
            &format!("own/{DAEMON_PID}"),
            "host/1",
            &format!("exec/{EXECUTOR_PID}"),
        ] {
            std::fs::create_dir_all(dir.path().join(table)).unwrap();
            std::fs::write(dir.path().join(table).join("mountinfo"), PLAIN).unwrap();
        }
        let target = dir.path().join("kubelet/pods/p/volumes/v");
        std::fs::create_dir_all(&target).unwrap();
        Node { dir, target }
    }

    fn table(&self, name: &str) -> PathBuf {
        let pid = match name {
            "own" => DAEMON_PID.to_string(),
            "host" => "1".to_owned(),
            _ => EXECUTOR_PID.to_string(),
        };
        self.dir.path().join(name).join(pid).join("mountinfo")
    }

    fn state(&self) -> PathBuf {
        self.dir.path().join("state")
    }

    pub(super) async fn daemon(&self, exec: Arc<Fake>, syscall: Arc<Recording>) -> Daemon {
        let config = Config {
            kubelet_root: self.dir.path().join("kubelet"),
            ..Config::default()
        };
        let paths = Paths {
            proc: ProcRoot::new(self.dir.path().join("own")),
            host_proc: ProcRoot::new(self.dir.path().join("host")),
            state_dir: self.state(),
        };
        Daemon::new(&config, paths, exec, Vec::new())
            .await
            .unwrap()
            .with_syscall(syscall)
            .with_own_pid(DAEMON_PID)
    }

    pub(super) fn request(&self, source: &str) -> MountRequest {
        MountRequest {
            source: source.into(),
            target: self.target.clone(),
            fstype: "tmpfs".into(),
            options: vec!["size=1m".into()],
            ..MountRequest::default()
        }
    }

    fn files(&self, sub: &str) -> usize {
        std::fs::read_dir(self.state().join(sub)).unwrap().count()
    }
}

/// An executor that "mounts" by appending a mountinfo line to the tables it
/// reaches, and "unmounts" by removing the last line on the target from them.
pub(super) struct Fake {
    node_dir: PathBuf,
    /// The tables a mount lands in: its own first, then where it propagates.
    reaches: Vec<PathBuf>,
    next_id: AtomicU32,
    calls: Mutex<Vec<String>>,
    fail_unmount: bool,
}

impl Fake {
    pub(super) fn new(node: &Node, reaches: &[&str], fail_unmount: bool) -> Arc<Fake> {
        Arc::new(Fake {
            node_dir: node.dir.path().to_owned(),
            reaches: reaches.iter().map(|t| node.table(t)).collect(),
            next_id: AtomicU32::new(100),
            calls: Mutex::new(Vec::new()),
            fail_unmount,
        })
    }

    fn calls(&self) -> Vec<String> {
        self.calls.lock().unwrap().clone()
    }
}

#[async_trait::async_trait]
impl Executor for Fake {
    fn name(&self) -> &str {
        "host"
    }

    async fn namespace(&self) -> Result<Namespace, ExecError> {
        let proc = ProcRoot::new(self.node_dir.join("exec"));
        Ok(Namespace::new("executor (fake)", proc, Some(EXECUTOR_PID)))
    }

    async fn mount(
        &self,
        req: &MountRequest,
        _: &MountOptions,
        _: &CheckedMount,
        _: Duration,
    ) -> Result<Made, ExecError> {
        let target = req.target.display();
        self.calls.lock().unwrap().push(format!("mount {target}"));
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let line = format!("{id} 27 0:{id} / {target} rw shared:7 - tmpfs tmpfs rw\n");
        for table in &self.reaches {
            let mut text = std::fs::read_to_string(table).unwrap();
            text.push_str(&line);
            std::fs::write(table, text).unwrap();
        }
        Ok(Made::default())
    }

    async fn unmount(
        &self,
        target: CheckedTarget,
        _: Option<crate::executor::Expected>,
        _: &str,
        flags: UnmountFlags,
        _: Duration,
    ) -> Result<String, ExecError> {
        let target = target.path();
        let call = format!("unmount {} lazy={}", target.display(), flags.lazy);
        self.calls.lock().unwrap().push(call);
        if self.fail_unmount {
            return Err(ExecError::NotRunning {
                executor: "host".into(),
                container: "fake".into(),
                state: "exited".into(),
            });
        }
        let on_target = format!(" {} ", target.display());
        for table in &self.reaches {
            let text = std::fs::read_to_string(table).unwrap();
            let mut lines: Vec<&str> = text.lines().collect();
            if let Some(at) = lines.iter().rposition(|l| l.contains(&on_target)) {
                lines.remove(at);
            }
            std::fs::write(table, lines.join("\n") + "\n").unwrap();
        }
        Ok(String::new())
    }
}

#[tokio::test]
async fn a_verified_mount_is_recorded_and_a_retry_answered_again() {
    let node = Node::new();
    let exec = Fake::new(&node, &["exec", "host", "own"], false);
    let syscall = Arc::new(Recording::default());
    let d = node.daemon(exec.clone(), syscall.clone()).await;

    let done = d.mount(ROOT, node.request("tmpfs")).await.unwrap();
    assert_eq!(done.record.mount_id, 100);
    assert_eq!(done.seen.len(), 2, "executor and host");
    assert_eq!(d.mounts(), vec![done.record.clone()]);
    assert_eq!((node.files("mounts"), node.files("intents")), (1, 0));
    // A kubelet's retry: the same answer, nothing executed again.
    let again = d.mount(ROOT, node.request("tmpfs")).await.unwrap();
    assert_eq!(again.record, done.record);
    // Another request for the same target is refused.
    let err = d.mount(ROOT, node.request("other")).await.unwrap_err();
    assert_eq!(err.code, ErrorCode::AlreadyMounted, "{err}");
    assert_eq!(
        exec.calls(),
        vec![format!("mount {}", node.target.display())]
    );

    let unmount = UnmountRequest {
        target: node.target.clone(),
        ..UnmountRequest::default()
    };
    d.unmount(ROOT, unmount).await.unwrap();
    assert!(d.mounts().is_empty());
    assert_eq!(node.files("mounts"), 0);
    assert!(syscall.calls().is_empty(), "nothing for the daemon to undo");
}

#[tokio::test]
async fn a_mount_that_does_not_reach_the_host_is_undone_by_its_executor() {
    let node = Node::new();
    // It lands in the executor's namespace and the daemon's, not the host's.
    let exec = Fake::new(&node, &["exec", "own"], false);
    let syscall = Arc::new(Recording::default());
    let d = node.daemon(exec.clone(), syscall.clone()).await;

    let err = d.mount(ROOT, node.request("tmpfs")).await.unwrap_err();
    assert_eq!(err.code, ErrorCode::PropagationBroken, "{err}");
    assert!(
        err.message.contains("did not reach the host namespace"),
        "{err}"
    );
    assert!(err.message.contains("the mount was undone"), "{err}");
    let t = node.target.display();
    assert_eq!(
        exec.calls(),
        vec![format!("mount {t}"), format!("unmount {t} lazy=true")]
    );
    assert!(
        syscall.calls().is_empty(),
        "the executor's unmount reached the daemon's namespace"
    );
    assert!(d.mounts().is_empty());
    assert_eq!((node.files("mounts"), node.files("intents")), (0, 0));
}

#[tokio::test]
async fn what_the_executor_cannot_undo_is_detached_and_else_left_announced() {
    let node = Node::new();
    let exec = Fake::new(&node, &["exec", "own"], true);
    // The daemon's detach fails too: the mount stays, and so does its intent.
    let syscall = Arc::new(Recording::failing(0, nix::errno::Errno::EBUSY));
    let d = node.daemon(exec.clone(), syscall.clone()).await;

    let err = d.mount(ROOT, node.request("tmpfs")).await.unwrap_err();
    assert_eq!(err.code, ErrorCode::PropagationBroken, "{err}");
    let t = node.target.display();
    assert_eq!(
        exec.calls(),
        vec![format!("mount {t}"), format!("unmount {t} lazy=true")]
    );
    // Lazily, beneath the checked parent's handle, never following a symlink.
    let calls = syscall.calls();
    let [Call::Umount { target, flags }] = calls.as_slice() else {
        panic!("one umount2 expected: {calls:?}");
    };
    assert_eq!(*flags, MntFlags::MNT_DETACH | MntFlags::UMOUNT_NOFOLLOW);
    assert!(target.starts_with("/proc/thread-self/fd"), "{target:?}");
    assert_eq!(target.file_name(), node.target.file_name());
    assert_eq!((node.files("mounts"), node.files("intents")), (0, 1));
    drop(d);

    // The next start finds the mount the intent announced, and adopts it.
    let d = node.daemon(exec, Arc::new(Recording::default())).await;
    let status = d.status().await;
    assert_eq!(status.adopted.len(), 1, "{status:?}");
    assert_eq!(status.adopted[0].mount_id, 100);
    assert_eq!(d.mounts(), status.adopted);
    assert_eq!((node.files("mounts"), node.files("intents")), (1, 0));
}

#[tokio::test]
async fn a_busy_target_waits_its_turn_then_fails_without_executing() {
    let node = Node::new();
    let exec = Fake::new(&node, &["exec", "host", "own"], false);
    let d = node
        .daemon(exec.clone(), Arc::new(Recording::default()))
        .await;

    let _held = d.claims.claim(&node.target, Duration::ZERO).await.unwrap();
    let req = MountRequest {
        timeout_seconds: Some(1),
        ..node.request("tmpfs")
    };
    let err = d.mount(ROOT, req).await.unwrap_err();
    assert_eq!(err.code, ErrorCode::Busy, "{err}");
    assert!(err.message.contains("target is busy"), "{err}");
    assert!(exec.calls().is_empty());
    assert_eq!(node.files("intents"), 0);
}

#[tokio::test]
async fn a_mount_that_cannot_be_recorded_is_undone() {
    let node = Node::new();
    let exec = Fake::new(&node, &["exec", "host", "own"], false);
    let syscall = Arc::new(Recording::default());
    let d = node.daemon(exec.clone(), syscall.clone()).await;
    // The record's directory is gone: no file can be made in it.
    std::fs::remove_dir(node.state().join("mounts")).unwrap();

    let err = d.mount(ROOT, node.request("tmpfs")).await.unwrap_err();
    assert_eq!(err.code, ErrorCode::Internal, "{err}");
    assert!(err.message.contains("cannot record the mount"), "{err}");
    assert!(err.message.contains("the mount was undone"), "{err}");
    let t = node.target.display();
    assert_eq!(
        exec.calls(),
        vec![format!("mount {t}"), format!("unmount {t} lazy=true")]
    );
    assert!(d.mounts().is_empty());
    assert_eq!(node.files("intents"), 0);
    let host = std::fs::read_to_string(node.table("host")).unwrap();
    assert_eq!(host, PLAIN, "nothing left on the host");
}

#[tokio::test]
async fn a_recorded_id_that_names_another_mount_after_a_restart_is_forgotten() {
    let node = Node::new();
    let exec = Fake::new(&node, &["exec", "host", "own"], false);
    let d = node
        .daemon(exec.clone(), Arc::new(Recording::default()))
        .await;
    let t = node.target.display().to_string();
    // The executor's namespace made anew (its container restarted): its copy of
    // the mount `id` has another id, and `id` names a mount elsewhere now.
    let restarted = |id: u32, copy: Option<u32>| {
        let table = node.table("exec");
        let line = format!("{id} 27 0:{id} / {t} rw shared:7 - tmpfs tmpfs rw\n");
        let copy = copy.map_or(String::new(), |c| {
            line.replacen(&id.to_string(), &c.to_string(), 1)
        });
        let text = std::fs::read_to_string(&table)
            .unwrap()
            .replace(&line, &copy);
        let elsewhere = format!("{id} 27 0:9 / /elsewhere rw - tmpfs tmpfs rw\n");
        std::fs::write(&table, text + &elsewhere).unwrap();
    };

    assert_eq!(
        d.mount(ROOT, node.request("tmpfs"))
            .await
            .unwrap()
            .record
            .mount_id,
        100
    );
    restarted(100, Some(200));
    let unmount = UnmountRequest {
        target: node.target.clone(),
        ..UnmountRequest::default()
    };
    d.unmount(ROOT, unmount).await.unwrap();
    assert!(d.mounts().is_empty(), "{:?}", d.mounts());

    // Gone from the new namespace before any unmount: a new request mounts.
    assert_eq!(
        d.mount(ROOT, node.request("tmpfs"))
            .await
            .unwrap()
            .record
            .mount_id,
        101
    );
    restarted(101, None);
    let done = d.mount(ROOT, node.request("other")).await.unwrap();
    assert_eq!(done.record.mount_id, 102);
    assert_eq!(d.mounts(), vec![done.record]);
}
