//! `sidemount agent`: PID 1 of a volume-client container, injected read-only so any
//! image works. For the daemon it resolves each target beneath the roots the daemon
//! names, in its own namespace, to a handle, and mounts onto it as the host
//! executor does (the one syscall mount(8) would make, or the container's own
//! mount(8) on a private staging point, moved onto the handle); it reports the new
//! mount's id, unmounts by handle after a mount-id check, runs VCS commands, reaps
//! every child (FUSE daemons), and passes SIGTERM on to what it started.

pub mod reaper;

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::{ConnectInfo, State};
use axum::routing::{get, post};
use axum::Router;
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use tokio::net::UnixListener;
use tracing::{info, warn};

use crate::agent::reaper::Reaper;
use crate::api::http::{self, body, peer, Answer, PeerInfo};
use crate::api::wire::{
    self, AgentStatus, ApiError, ErrorCode, Executed, MountRequest, RunRequest, Sighting,
    UnmountRequest,
};
use crate::executor::{Executor, Host, Made, Runner};
use crate::mount::exec::{finished, ExecError, Expected, UnmountFlags};
use crate::mount::options::MountOptions;
use crate::mount::util_linux::shown;
use crate::ns::mountinfo::ProcRoot;
use crate::policy::{CheckedMount, CheckedTarget, Policy};

/// Where the agent's private staging tmpfs goes, per VCS, in its own namespace.
const STAGING: &str = "/run/sidemount-agent";

/// How long the agent lets its children end after SIGTERM before it exits.
const STOP_GRACE: Duration = Duration::from_secs(5);

pub struct Agent {
    vcs: String,
    /// Mounts onto handles in this container's namespace, as the host executor
    /// does in the daemon's.
    host: Host,
    reaper: Arc<Reaper>,
    timeout: Duration,
    /// The only uid besides 0 that may ask: the agent's own.
    uid: u32,
    /// Set by `stop`: daemons are no longer started again.
    stopping: Arc<AtomicBool>,
}

impl Agent {
    /// Starts reaping children; needs a tokio runtime.
    pub fn start(vcs: String, timeout: Duration) -> std::io::Result<Agent> {
        let staging = PathBuf::from(STAGING).join(&vcs);
        let reaper = Arc::new(Reaper::start()?);
        let runner = Arc::new(Reaped(reaper.clone()));
        Ok(Agent {
            host: Host::with_runner(ProcRoot::default(), staging, runner),
            vcs,
            reaper,
            timeout,
            uid: nix::unistd::geteuid().as_raw(),
            stopping: Arc::default(),
        })
    }

    /// Keeps `command` (`iscsid -f`, split at whitespace) running for as long as the
    /// agent runs: starts it now, and again a second after each exit.
    pub fn keep_running(&self, command: &str) {
        let argv: Vec<String> = command.split_whitespace().map(String::from).collect();
        let reaper = self.reaper.clone();
        let stopping = self.stopping.clone();
        let command = command.to_owned();
        tokio::spawn(async move {
            while !stopping.load(Ordering::SeqCst) {
                match reaper.start_daemon(&argv) {
                    Ok(exited) => {
                        info!(daemon = %command, "started");
                        let status = exited.await;
                        if !stopping.load(Ordering::SeqCst) {
                            warn!(daemon = %command, ?status, "exited; starting it again in 1 s");
                        }
                    }
                    Err(e) => {
                        warn!(daemon = %command, error = %e, "cannot start; trying again in 1 s")
                    }
                }
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        });
    }

    /// Resolves the target beneath the roots the daemon named, in this
    /// container's namespace, with the daemon's rules, and mounts onto that
    /// handle as the host executor does: one fsmount when that is all mount(8)
    /// would do, else the container's mount(8) on a private staging point, moved
    /// onto the handle. Reports the new mount's id.
    async fn mount(&self, req: MountRequest) -> Result<Executed, ApiError> {
        let deadline = wire::deadline(req.timeout_seconds, self.timeout);
        // Where the request enters the agent: its options are parsed here, once.
        let options = MountOptions::of(&req, &[]);
        let checked = CheckedMount {
            target: self.resolve(&req.target, &req.beneath)?,
            source: None,
            layers: Vec::new(),
        };
        let made = self
            .host
            .mount(&req, &options, &checked, deadline)
            .await
            .map_err(|e| self.refused(e))?;
        let mut done = called("mount", made.output.clone());
        done.mount = self.sighting(&made);
        info!(target = %req.target.display(), mount_id = ?done.mount.as_ref().and_then(|m| m.mount_id), "mounted");
        Ok(done)
    }

    /// Resolves the target the same way, checks that the mount there is the one
    /// the daemon recorded, and unmounts it beneath its parent's handle.
    async fn unmount(&self, req: UnmountRequest) -> Result<Executed, ApiError> {
        let flags = UnmountFlags {
            lazy: req.lazy,
            force: req.force,
        };
        let deadline = wire::deadline(req.timeout_seconds, self.timeout);
        let target = self.resolve(&req.target, &req.beneath)?;
        let expected = req.mount_id.map(|id| Expected {
            id,
            unique: req.unique_id,
        });
        let output = self
            .host
            .unmount(target, expected, "", flags, deadline)
            .await
            .map_err(|e| self.refused(e))?;
        Ok(called("umount", output))
    }

    /// The target beneath `roots`, or a refusal naming why.
    fn resolve(&self, target: &Path, roots: &[PathBuf]) -> Result<CheckedTarget, ApiError> {
        if roots.is_empty() {
            return Err(ApiError::new(
                ErrorCode::BadRequest,
                "the request names no roots to resolve its target beneath",
            ));
        }
        Ok(Policy::resolve_target(target, roots)?)
    }

    async fn run(&self, req: RunRequest) -> Result<Executed, ApiError> {
        let Some((program, args)) = req.command.split_first() else {
            return Err(ApiError::new(ErrorCode::BadRequest, "command is empty"));
        };
        let args = args.iter().map(OsString::from).collect();
        if req
            .stdin
            .as_ref()
            .is_some_and(|s| s.len() > wire::MAX_STDIN)
        {
            return Err(ApiError::new(
                ErrorCode::BadRequest,
                format!("stdin is over {} bytes", wire::MAX_STDIN),
            ));
        }
        self.execute(
            program,
            args,
            req.stdin.map(String::into_bytes),
            wire::deadline(req.timeout_seconds, self.timeout),
        )
        .await
    }

    async fn execute(
        &self,
        program: &str,
        args: Vec<OsString>,
        stdin: Option<Vec<u8>>,
        deadline: Duration,
    ) -> Result<Executed, ApiError> {
        let command = format!("{program} {}", shown(&args));
        let mut argv = vec![OsString::from(program)];
        argv.extend(args);
        let done = self
            .reaper
            .run(&argv, &command, stdin, deadline)
            .await
            .map_err(|e| self.refused(e))?;
        info!(command = %command, exit_code = done.exit_code(), "ran");
        Ok(Executed {
            command,
            exit_code: done.exit_code(),
            output: done.output.clone(),
            mount: None,
        })
    }

    fn refused(&self, e: ExecError) -> ApiError {
        ApiError::new(
            e.code(ErrorCode::MountFailed),
            format!("{} (vcs {})", e, self.vcs),
        )
    }

    /// How the agent's namespace sees the mount it made, for the daemon.
    fn sighting(&self, made: &Made) -> Option<Sighting> {
        let fd = made.mount.as_ref()?;
        // statmount(2) may be refused by the container's seccomp profile: the id
        // comes from statx, the propagation when statmount answers.
        let id = crate::ns::beneath::mountinfo_id(std::os::fd::AsFd::as_fd(fd)).ok()?;
        let entry = made
            .id()
            .and_then(|u| crate::ns::statmount::by_id(u).ok().flatten());
        Some(Sighting {
            namespace: crate::vcs::executor_name(&self.vcs),
            mount_id: Some(id),
            propagation: entry.map(|m| m.propagation.to_string()),
        })
    }

    fn status(&self) -> AgentStatus {
        AgentStatus {
            version: env!("CARGO_PKG_VERSION").into(),
            vcs: self.vcs.clone(),
            busy: self.reaper.busy(),
        }
    }

    fn check_peer(&self, info: PeerInfo) -> Result<(), ApiError> {
        let p = peer(info)?;
        if p.uid == 0 || p.uid == self.uid {
            Ok(())
        } else {
            Err(ApiError::new(
                ErrorCode::Forbidden,
                format!("uid {} may not use the agent", p.uid),
            ))
        }
    }

    /// On SIGTERM: passes it on to every command it started and, as PID 1, to every
    /// process of the container; then waits a little for them to end.
    pub async fn stop(&self) {
        self.stopping.store(true, Ordering::SeqCst);
        self.reaper.signal_running(Signal::SIGTERM);
        // FUSE daemons that forked away were reparented to the agent (PID 1, or a
        // subreaper when the pod shares the host's pids): they are its children.
        for pid in children() {
            let _ = kill(Pid::from_raw(pid), Signal::SIGTERM);
        }
        if std::process::id() == 1 {
            // kill(-1) from PID 1 signals every other process of its pid
            // namespace, i.e. of this container; never done outside PID 1.
            let _ = kill(Pid::from_raw(-1), Signal::SIGTERM);
        }
        let start = tokio::time::Instant::now();
        while start.elapsed() < STOP_GRACE && (self.reaper.busy() || !children().is_empty()) {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

/// mount(8) run by the reaper, which reaps every child of the agent.
struct Reaped(Arc<Reaper>);

#[async_trait::async_trait]
impl Runner for Reaped {
    async fn run(
        &self,
        program: &str,
        args: Vec<OsString>,
        stdin: Option<String>,
        deadline: Duration,
    ) -> Result<String, ExecError> {
        let command = format!("{program} {}", shown(&args));
        let mut argv = vec![OsString::from(program)];
        argv.extend(args);
        let stdin = stdin.map(String::into_bytes);
        let done = self.0.run(&argv, &command, stdin, deadline).await?;
        info!(command = %command, exit_code = done.exit_code(), "ran");
        finished(Executed {
            command,
            exit_code: done.exit_code(),
            output: done.output.clone(),
            mount: None,
        })
    }
}

/// What a successful mount or unmount reports.
fn called(command: &str, output: String) -> Executed {
    Executed {
        command: command.into(),
        exit_code: 0,
        output,
        mount: None,
    }
}

/// The agent's living children (zombies are the reaper's).
fn children() -> Vec<i32> {
    let me = std::process::id() as i32;
    let Ok(all) = procfs::process::all_processes() else {
        return Vec::new();
    };
    all.filter_map(Result::ok)
        .filter_map(|p| p.stat().ok())
        .filter(|s| s.ppid == me && s.state != 'Z')
        .map(|s| s.pid)
        .collect()
}

/// Serves the agent API until `shutdown` resolves.
pub async fn serve(
    listener: UnixListener,
    agent: Arc<Agent>,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let app = Router::new()
        .route(wire::MOUNTS, post(mount))
        .route(wire::UNMOUNTS, post(unmount))
        .route(wire::RUN, post(run))
        .route(wire::STATUS, get(status))
        .with_state(agent);
    http::serve(listener, app, http::Limits::default(), shutdown).await
}

async fn mount(
    State(a): State<Arc<Agent>>,
    ConnectInfo(info): ConnectInfo<PeerInfo>,
    bytes: Bytes,
) -> Answer {
    let r = async {
        a.check_peer(info)?;
        a.mount(body(&bytes)?).await
    };
    r.await.into()
}

async fn unmount(
    State(a): State<Arc<Agent>>,
    ConnectInfo(info): ConnectInfo<PeerInfo>,
    bytes: Bytes,
) -> Answer {
    let r = async {
        a.check_peer(info)?;
        a.unmount(body(&bytes)?).await
    };
    r.await.into()
}

async fn run(
    State(a): State<Arc<Agent>>,
    ConnectInfo(info): ConnectInfo<PeerInfo>,
    bytes: Bytes,
) -> Answer {
    let r = async {
        a.check_peer(info)?;
        a.run(body(&bytes)?).await
    };
    r.await.into()
}

async fn status(State(a): State<Arc<Agent>>, ConnectInfo(info): ConnectInfo<PeerInfo>) -> Answer {
    a.check_peer(info).map(|_| a.status()).into()
}
