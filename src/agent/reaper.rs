//! Child processes for a PID 1 (or a child subreaper): one loop reaps every child,
//! the commands it started and the orphans that land on it (FUSE daemons that fork
//! into the background), so none stays a zombie and no exit status is stolen.

use std::collections::HashMap;
use std::ffi::OsString;
use std::io::{Read, Write};
use std::os::fd::OwnedFd;
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::process::{ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use nix::sys::signal::{killpg, Signal};
use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
use nix::unistd::Pid;
use tokio::sync::oneshot;

use crate::mount::exec::ExecError;

/// Output beyond this is dropped (a command's chatter, not data).
const MAX_OUTPUT: usize = 1 << 20;
/// After a command exits, how long to wait for output still in the pipe: a child
/// that went to the background may hold it open.
const DRAIN: Duration = Duration::from_millis(200);

#[derive(Default)]
struct Table {
    /// Commands waiting for their exit status.
    waiting: HashMap<i32, oneshot::Sender<ExitStatus>>,
    /// Statuses reaped before their command registered (it exited at once).
    early: HashMap<i32, ExitStatus>,
    /// Process groups of commands still running, for SIGTERM forwarding.
    running: Vec<i32>,
}

/// Starts commands and reaps every child. Must be the only waiter in the process:
/// tokio::process (which waits for its own children) must not be used beside it.
#[derive(Clone)]
pub struct Reaper {
    table: Arc<Mutex<Table>>,
}

/// How a command ended.
#[derive(Debug)]
pub struct Finished {
    pub status: ExitStatus,
    pub output: String,
}

impl Finished {
    /// The exit code, or 128 + the signal, as shells report it.
    pub fn exit_code(&self) -> i32 {
        self.status
            .code()
            .or_else(|| self.status.signal().map(|s| 128 + s))
            .unwrap_or(-1)
    }
}

impl Reaper {
    /// Becomes a child subreaper (a no-op for PID 1) and starts the reaping loop on
    /// SIGCHLD. Needs a tokio runtime.
    pub fn start() -> std::io::Result<Reaper> {
        nix::sys::prctl::set_child_subreaper(true)?;
        let mut sigchld = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::child())?;
        let reaper = Reaper {
            table: Arc::default(),
        };
        let r = reaper.clone();
        tokio::spawn(async move {
            loop {
                r.reap();
                if sigchld.recv().await.is_none() {
                    return;
                }
            }
        });
        Ok(reaper)
    }

    /// Reaps every child that has exited; hands each status to its command.
    fn reap(&self) {
        loop {
            let (pid, status) = match waitpid(None, Some(WaitPidFlag::WNOHANG)) {
                Ok(WaitStatus::Exited(pid, code)) => (pid, ExitStatus::from_raw(code << 8)),
                Ok(WaitStatus::Signaled(pid, sig, _)) => (pid, ExitStatus::from_raw(sig as i32)),
                Ok(WaitStatus::StillAlive) | Err(_) => return,
                Ok(_) => continue,
            };
            let mut t = self.table.lock().unwrap();
            t.running.retain(|&g| g != pid.as_raw());
            match t.waiting.remove(&pid.as_raw()) {
                Some(tx) => {
                    let _ = tx.send(status);
                }
                // Ours, but not registered yet; an orphan's status is dropped later.
                None => {
                    t.early.insert(pid.as_raw(), status);
                }
            }
            if t.early.len() > 1024 {
                t.early.clear();
            }
        }
    }

    /// Runs `argv` in its own process group with stdout and stderr combined and
    /// `stdin` as its input (none: /dev/null); kills the group when `deadline`
    /// passes. `shown` is how messages name the command.
    pub async fn run(
        &self,
        argv: &[OsString],
        shown: &str,
        stdin: Option<Vec<u8>>,
        deadline: Duration,
    ) -> Result<Finished, ExecError> {
        let spawn_err = |source| ExecError::Spawn {
            command: shown.to_owned(),
            source,
        };
        let (program, args) = argv
            .split_first()
            .ok_or_else(|| spawn_err(std::io::Error::other("empty command")))?;
        let (reader, writer) = std::io::pipe().map_err(spawn_err)?;
        let writer = OwnedFd::from(writer);
        let mut child = std::process::Command::new(program)
            .args(args)
            .env("LC_ALL", "C")
            .stdin(match stdin {
                Some(_) => Stdio::piped(),
                None => Stdio::null(),
            })
            .stdout(writer.try_clone().map_err(spawn_err)?)
            .stderr(writer)
            .process_group(0)
            .spawn()
            .map_err(spawn_err)?;
        let pid = child.id() as i32;
        // The input is written from a thread of its own, so a command that does
        // not read it all still ends (the write then fails, EPIPE).
        if let (Some(input), Some(mut pipe)) = (stdin, child.stdin.take()) {
            std::thread::spawn(move || pipe.write_all(&input));
        }
        // The pipe's write ends now live only in the child.
        drop(child);
        let rx = self.register(pid);
        let output = tokio::task::spawn_blocking(move || {
            let mut buf = Vec::new();
            let _ = reader.take(MAX_OUTPUT as u64).read_to_end(&mut buf);
            buf
        });
        let status = match tokio::time::timeout(deadline, rx).await {
            Ok(Ok(status)) => status,
            Ok(Err(_)) => return Err(spawn_err(std::io::Error::other("reaper stopped"))),
            Err(_) => {
                let _ = killpg(Pid::from_raw(pid), Signal::SIGKILL);
                return Err(ExecError::Timeout {
                    command: shown.to_owned(),
                    after: deadline,
                });
            }
        };
        let output = match tokio::time::timeout(DRAIN, output).await {
            Ok(Ok(buf)) => String::from_utf8_lossy(&buf).into_owned(),
            _ => String::new(),
        };
        Ok(Finished { status, output })
    }

    /// Starts `argv`, a daemon of the VCS (iscsid), in its own process group with
    /// the agent's stdout and stderr; the receiver gets its exit status.
    pub fn start_daemon(&self, argv: &[String]) -> std::io::Result<oneshot::Receiver<ExitStatus>> {
        let (program, args) = argv
            .split_first()
            .ok_or_else(|| std::io::Error::other("empty command"))?;
        let child = std::process::Command::new(program)
            .args(args)
            .stdin(Stdio::null())
            .process_group(0)
            .spawn()?;
        Ok(self.register(child.id() as i32))
    }

    /// Registers `pid`, just started, for its exit status (it may be reaped already)
    /// and as running.
    fn register(&self, pid: i32) -> oneshot::Receiver<ExitStatus> {
        let (tx, rx) = oneshot::channel();
        let mut t = self.table.lock().unwrap();
        match t.early.remove(&pid) {
            Some(status) => {
                let _ = tx.send(status);
            }
            None => {
                t.waiting.insert(pid, tx);
                t.running.push(pid);
            }
        }
        rx
    }

    /// Whether any command is still running.
    pub fn busy(&self) -> bool {
        !self.table.lock().unwrap().running.is_empty()
    }

    /// Sends `signal` to every command still running (their process groups).
    pub fn signal_running(&self, signal: Signal) {
        for &g in &self.table.lock().unwrap().running {
            let _ = killpg(Pid::from_raw(g), signal);
        }
    }
}
