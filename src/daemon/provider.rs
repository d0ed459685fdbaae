//! Brings up the volume-client containers a configuration names and keeps a handle
//! on each: the docker provider's containers are created or adopted, every agent is
//! awaited; health and upgrades go through the same handles.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use tracing::{error, info, warn};

use crate::api::wire::VcsStatus;
use crate::daemon::config::Config;
use crate::executor::{self, Executor};
use crate::ns::mountinfo::ProcRoot;
use crate::vcs::docker::{Docker, DockerError, Spec};
use crate::vcs::{Mode, Provider, Vcs};

/// Deadline of one Docker API call.
const DOCKER_TIMEOUT: Duration = Duration::from_secs(30);

/// Where VCS containers find the daemon's things.
pub struct Layout {
    /// The daemon's socket directory (agent sockets go in `agents/` below it).
    pub socket_dir: PathBuf,
    /// The static sidemount binary given to containers as their agent.
    pub agent_binary: PathBuf,
    /// The daemon's proc, where executors' namespaces are read.
    pub proc: ProcRoot,
}

/// One configured VCS and how it is reached.
pub struct Handle {
    pub vcs: Vcs,
    pub executor: Arc<dyn Executor>,
    /// The docker provider's engine and container spec.
    pub docker: Option<(Docker, Spec)>,
    /// The agent, in agent mode.
    pub agent: Option<Arc<executor::AgentClient>>,
}

/// Makes a handle for every VCS of `config`, creating or adopting the docker
/// provider's containers, then waits for their agents. A VCS that cannot be brought
/// up is reported and left unhealthy: its requests fail with the reason.
pub async fn bring_up(config: &Config, layout: &Layout) -> Result<Vec<Handle>, DockerError> {
    let needs_docker = config.vcs.iter().any(|v| v.provider == Provider::Docker);
    let docker = match needs_docker {
        true => Some(Docker::connect(DOCKER_TIMEOUT).await?),
        false => None,
    };
    let mut handles = Vec::new();
    for vcs in &config.vcs {
        let spec = Spec {
            vcs: vcs.clone(),
            kubelet_root: config.kubelet_root.clone(),
            socket_dir: layout.socket_dir.clone(),
            agent_binary: layout.agent_binary.clone(),
        };
        let docker = docker
            .as_ref()
            .filter(|_| vcs.provider == Provider::Docker)
            .map(|d| (d.clone(), spec.clone()));
        if let Some((d, spec)) = &docker {
            match d.ensure(spec).await {
                Ok(e) if e.found.outdated => {
                    warn!(vcs = %vcs.name, container = %spec.container_name(),
                    "adopted a container made from another configuration; `sidemount upgrade {}` replaces it", vcs.name)
                }
                Ok(e) => info!(vcs = %vcs.name, container = %spec.container_name(),
                    created = e.created, "volume-client container running"),
                Err(e) => {
                    error!(vcs = %vcs.name, error = %e, "cannot bring up the volume-client container")
                }
            }
        }
        let (executor, agent): (Arc<dyn Executor>, _) = match vcs.mode {
            Mode::Agent => {
                let a = Arc::new(executor::AgentClient::new(
                    &vcs.name,
                    spec.agent_socket(),
                    layout.proc.clone(),
                    docker.clone(),
                ));
                (a.clone(), Some(a))
            }
            Mode::Exec => {
                let (d, spec) = docker.clone().expect("exec mode is validated to be docker");
                let e = executor::DockerExec::new(d, spec, layout.proc.clone());
                (Arc::new(e), None)
            }
        };
        handles.push(Handle {
            vcs: vcs.clone(),
            executor,
            docker,
            agent,
        });
    }
    let wait = config.agent_wait();
    let waits = handles.iter().filter_map(|h| {
        let agent = h.agent.clone()?;
        let name = h.vcs.name.clone();
        Some(async move {
            match agent.wait(wait).await {
                Ok(_) => info!(vcs = %name, socket = %agent.socket().display(), "agent answers"),
                Err(e) => error!(vcs = %name, error = %e, "agent does not answer"),
            }
        })
    });
    futures_util::future::join_all(waits).await;
    Ok(handles)
}

impl Handle {
    /// Whether the container runs (docker) and the agent answers (agent mode).
    pub async fn status(&self) -> VcsStatus {
        let mut status = VcsStatus {
            name: self.vcs.name.clone(),
            types: self.vcs.types.clone(),
            provider: format!("{:?}", self.vcs.provider).to_lowercase(),
            mode: format!("{:?}", self.vcs.mode).to_lowercase(),
            reached_at: String::new(),
            run: self.vcs.run.clone(),
            healthy: true,
            note: String::new(),
        };
        let mut problems = Vec::new();
        if let Some((docker, spec)) = &self.docker {
            status.reached_at = spec.container_name();
            match docker.find(spec).await {
                Ok(Some(f)) if f.running => {
                    if f.outdated {
                        problems.push(format!(
                            "outdated: made from another configuration; `sidemount upgrade {}` replaces it",
                            self.vcs.name
                        ));
                    }
                }
                Ok(Some(f)) => problems.push(format!("container is {}", f.state)),
                Ok(None) => problems.push("container is missing".into()),
                Err(e) => problems.push(e.to_string()),
            }
        }
        if let Some(agent) = &self.agent {
            if self.docker.is_none() {
                status.reached_at = agent.socket().display().to_string();
            }
            if let Err(e) = agent.status(Duration::from_secs(5)).await {
                problems.push(e.to_string());
            }
        }
        // Being outdated is worth a note, not a failed health check.
        status.healthy = problems.iter().all(|p| p.starts_with("outdated"));
        status.note = problems.join("; ");
        status
    }
}
