//! The agent client, an executor: mounts made by the agent inside a VCS container,
//! reached on its unix socket. With the docker provider a dead container is brought
//! back (started, or made again) before the request is given up.

use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::Duration;

use nix::sys::socket::{getsockopt, sockopt::PeerCredentials};

use super::{namespace_of, ExecError, Executor, Expected, Made, UnmountFlags};
use crate::api::client::{Client, ClientError};
use crate::api::wire::AgentStatus;
use crate::api::wire::{self, Executed, MountRequest, RunRequest, UnmountRequest};
use crate::mount::exec::finished;
use crate::mount::options::MountOptions;
use crate::ns::mountinfo::ProcRoot;
use crate::ns::namespace::Namespace;
use crate::policy::{CheckedMount, CheckedTarget};
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
        let context = |e: crate::vcs::docker::DockerError| ExecError::Revive {
            vcs: self.name.clone(),
            socket: self.socket.clone(),
            source: Box::new(e),
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
            other => ExecError::Unreachable(other),
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
        Err(ExecError::ExternalAgentSilent {
            vcs: self.name.clone(),
            socket: self.socket.clone(),
            source: e,
        })
    }

    /// The agent's pid comes from the socket's peer credentials (of the connection
    /// `ready` just made, else of a new one), so it is right for any provider and
    /// after any restart.
    async fn namespace(&self) -> Result<Namespace, ExecError> {
        let seen = self.seen.lock().unwrap().take();
        let pid = match seen {
            Some(pid) => Some(pid),
            None => {
                let stream = UnixStream::connect(&self.socket).map_err(|source| {
                    ExecError::AgentUnreachable {
                        vcs: self.name.clone(),
                        socket: self.socket.clone(),
                        source,
                    }
                })?;
                peer_pid(&stream)
            }
        };
        let pid = pid.ok_or_else(|| ExecError::AgentPidHidden {
            vcs: self.name.clone(),
        })?;
        Ok(namespace_of(&self.name, &self.proc, Some(pid)))
    }

    /// The agent parses the request's options again where the request enters it,
    /// resolves the target again beneath the kubelet root in its own namespace,
    /// with the same rules, and mounts onto that handle.
    async fn mount(
        &self,
        req: &MountRequest,
        _options: &MountOptions,
        checked: &CheckedMount,
        deadline: Duration,
    ) -> Result<Made, ExecError> {
        let req = MountRequest {
            timeout_seconds: Some(deadline.as_secs().max(1)),
            beneath: vec![checked.target.root.clone()],
            ..req.clone()
        };
        let done = self.call(wire::MOUNTS, &req, deadline).await?;
        let reported = done.mount.as_ref().and_then(|s| s.mount_id);
        Ok(Made {
            output: finished(done)?,
            mount: None,
            reported,
            held: None,
        })
    }

    async fn unmount(
        &self,
        target: CheckedTarget,
        expected: Option<Expected>,
        _fstype: &str,
        flags: UnmountFlags,
        deadline: Duration,
    ) -> Result<String, ExecError> {
        // The agent resolves the target itself; a handle held here on the mount
        // would keep it busy.
        let CheckedTarget { path, root, fd, .. } = target;
        drop(fd);
        let req = UnmountRequest {
            target: path,
            beneath: vec![root],
            mount_id: expected.map(|e| e.id),
            unique_id: expected.and_then(|e| e.unique),
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
