//! The agent client, an executor: mounts made by the agent inside a VCS container,
//! reached on its unix socket. With the docker provider a dead container is brought
//! back (started, or made again) before the request is given up.

use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::Duration;

use nix::sys::socket::{getsockopt, sockopt::PeerCredentials};

use super::{namespace_of, ExecError, Executor, UnmountFlags};
use crate::api::client::{Client, ClientError};
use crate::api::wire::AgentStatus;
use crate::api::wire::{self, Executed, MountRequest, RunRequest, UnmountRequest};
use crate::mount::exec::finished;
use crate::ns::mountinfo::ProcRoot;
use crate::ns::namespace::Namespace;
use crate::vcs::docker::{Docker, Spec};

/// How long a revived container's agent may take to answer.
const AGENT_START: Duration = Duration::from_secs(30);

pub struct AgentClient {
    name: String,
    socket: PathBuf,
    proc: ProcRoot,
    /// The docker provider's handle: how to bring the container back.
    docker: Option<(Docker, Spec)>,
    /// The agent's pid as `ready` last saw it, for the `namespace` that follows.
    seen: Mutex<Option<u32>>,
}

impl AgentClient {
    /// `docker` is `None` for the external provider.
    pub fn new(vcs: &str, socket: PathBuf, proc: ProcRoot, docker: Option<(Docker, Spec)>) -> Self {
        AgentClient {
            name: crate::vcs::executor_name(vcs),
            socket,
            proc,
            docker,
            seen: Mutex::new(None),
        }
    }

    pub fn socket(&self) -> &Path {
        &self.socket
    }

    /// The agent's status, if it answers within `timeout`.
    pub async fn status(&self, timeout: Duration) -> Result<AgentStatus, ExecError> {
        self.client(timeout)
            .get(wire::STATUS)
            .await
            .map_err(|e| self.unavailable(e))
    }

    /// Waits until the agent answers, for at most `timeout`.
    pub async fn wait(&self, timeout: Duration) -> Result<AgentStatus, ExecError> {
        let start = tokio::time::Instant::now();
        loop {
            match self.status(Duration::from_secs(2)).await {
                Ok(s) => return Ok(s),
                Err(e) if start.elapsed() >= timeout => return Err(e),
                Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
            }
        }
    }

    fn client(&self, timeout: Duration) -> Client {
        Client::of(format!("{} agent", self.name), &self.socket, timeout)
    }

    /// Posts to the agent; when it cannot be reached and Docker runs its container,
    /// brings the container back and tries once more.
    async fn call<B: serde::Serialize>(
        &self,
        path: &str,
        body: &B,
        deadline: Duration,
    ) -> Result<Executed, ExecError> {
        // The agent enforces the deadline; the margin lets its answer arrive.
        let timeout = deadline + Duration::from_secs(5);
        match self.client(timeout).post(path, body).await {
            Err(ClientError::Connect { .. }) if self.docker.is_some() => {
                self.revive().await?;
                self.client(timeout).post(path, body).await
            }
            other => other,
        }
        .map_err(|e| self.unavailable(e))
    }

    async fn revive(&self) -> Result<(), ExecError> {
        let Some((docker, spec)) = &self.docker else {
            return Ok(());
        };
        let context = |e: crate::vcs::docker::DockerError| {
            ExecError::Unavailable(format!(
                "the {} agent at {} cannot be reached, and its container cannot be brought back: {e}",
                self.name,
                self.socket.display()
            ))
        };
        docker.ensure(spec).await.map_err(context)?;
        self.wait(AGENT_START).await.map(|_| ())
    }

    fn unavailable(&self, e: ClientError) -> ExecError {
        match e {
            ClientError::Api(error) => ExecError::Remote {
                context: self.name.clone(),
                error,
            },
            ClientError::Timeout { after, .. } => ExecError::Timeout {
                command: format!("the {} agent", self.name),
                after,
            },
            other => ExecError::Unavailable(other.to_string()),
        }
    }
}

/// The pid of the process at the other end, when it is visible here.
fn peer_pid(stream: &UnixStream) -> Option<u32> {
    getsockopt(stream, PeerCredentials)
        .ok()
        .and_then(|c| u32::try_from(c.pid()).ok())
        .filter(|&p| p > 0)
}

#[async_trait::async_trait]
impl Executor for AgentClient {
    fn name(&self) -> &str {
        &self.name
    }

    /// A dead docker container is brought back before a request; an absent
    /// external one is a clear error at once.
    async fn ready(&self) -> Result<(), ExecError> {
        let e = match UnixStream::connect(&self.socket) {
            Ok(stream) => {
                *self.seen.lock().unwrap() = peer_pid(&stream);
                return Ok(());
            }
            Err(e) => e,
        };
        if self.docker.is_some() {
            return self.revive().await;
        }
        Err(ExecError::Unavailable(format!(
            "the {} agent at {} does not answer ({e}); its container is not run by sidemount (provider external): check the VCS sidecar of the sidemount pod on this node",
            self.name,
            self.socket.display()
        )))
    }

    /// The agent's pid comes from the socket's peer credentials (of the connection
    /// `ready` just made, else of a new one), so it is right for any provider and
    /// after any restart.
    async fn namespace(&self) -> Result<Namespace, ExecError> {
        let seen = self.seen.lock().unwrap().take();
        let pid = match seen {
            Some(pid) => Some(pid),
            None => {
                let stream = UnixStream::connect(&self.socket).map_err(|e| {
                    ExecError::Unavailable(format!(
                        "the {} agent at {} cannot be reached: {e}",
                        self.name,
                        self.socket.display()
                    ))
                })?;
                peer_pid(&stream)
            }
        };
        let pid = pid.ok_or_else(|| {
            ExecError::Unavailable(format!(
                "the {} agent's pid is not visible here: the daemon needs the host's pid namespace (hostPID)",
                self.name
            ))
        })?;
        Ok(namespace_of(&self.name, &self.proc, Some(pid)))
    }

    async fn mount(&self, req: &MountRequest, deadline: Duration) -> Result<String, ExecError> {
        let req = MountRequest {
            timeout_seconds: Some(deadline.as_secs().max(1)),
            ..req.clone()
        };
        finished(self.call(wire::MOUNTS, &req, deadline).await?)
    }

    async fn unmount(
        &self,
        target: &Path,
        _fstype: &str,
        flags: UnmountFlags,
        deadline: Duration,
    ) -> Result<String, ExecError> {
        let req = UnmountRequest {
            target: target.to_owned(),
            lazy: flags.lazy,
            force: flags.force,
            caller_pid: None,
            timeout_seconds: Some(deadline.as_secs().max(1)),
        };
        finished(self.call(wire::UNMOUNTS, &req, deadline).await?)
    }

    async fn run(
        &self,
        command: &[String],
        stdin: Option<&str>,
        deadline: Duration,
    ) -> Result<Executed, ExecError> {
        let req = RunRequest {
            vcs: String::new(),
            command: command.to_vec(),
            stdin: stdin.map(str::to_owned),
            timeout_seconds: Some(deadline.as_secs().max(1)),
        };
        self.call(wire::RUN, &req, deadline).await
    }
}
