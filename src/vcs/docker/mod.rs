//! The `docker` provider: VCS containers created, adopted, replaced and exec'd into
//! through the Docker Engine API (bollard, version negotiated), each labelled with
//! its VCS and a hash of the configuration it was made from.

mod spec;

use std::future::Future;
use std::time::Duration;

use bollard::exec::{StartExecOptions, StartExecResults};
use bollard::models::ExecConfig;
use bollard::query_parameters::{
    CreateContainerOptionsBuilder, CreateImageOptionsBuilder, RemoveContainerOptionsBuilder,
};
use futures_util::StreamExt;

pub use spec::{Spec, LABEL_CONFIG, LABEL_VCS};

/// How long pulling a missing image may take.
const PULL_TIMEOUT: Duration = Duration::from_secs(600);

#[derive(Debug, thiserror::Error)]
pub enum DockerError {
    #[error("Docker is not reachable ({0}); start dockerd or check DOCKER_HOST")]
    Unreachable(String),
    #[error("Docker did not answer {what} within {after:?}")]
    Timeout { what: String, after: Duration },
    #[error("Docker: {what}: {source}")]
    Api {
        what: String,
        source: bollard::errors::Error,
    },
    #[error("image {image} is not present and cannot be pulled: {reason}; build or load it on this node (hack/build-images.sh builds the project's images)")]
    ImageMissing { image: String, reason: String },
    #[error("the container runtime refused privileged mode for {container} ({message}); set `security: {{privileged: false, capabilities: [SYS_ADMIN], devices: [...], unconfined: true}}` for this VCS to use a capability profile instead")]
    PrivilegedRefused { container: String, message: String },
    #[error("container {container} is {state}")]
    NotRunning { container: String, state: String },
}

/// A connection to the Docker Engine.
#[derive(Clone)]
pub struct Docker {
    api: bollard::Docker,
    timeout: Duration,
}

/// A VCS container as Docker reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Found {
    pub id: String,
    pub running: bool,
    pub state: String,
    /// Its pid in Docker's pid namespace, when running.
    pub pid: Option<u32>,
    /// Made from another configuration than the spec it was looked up for: the
    /// one place that compares a container's configuration hash with the spec's.
    pub outdated: bool,
}

/// The outcome of [`Docker::ensure`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ensured {
    pub found: Found,
    /// Made now, rather than adopted.
    pub created: bool,
}
impl Docker {
    /// Connects (DOCKER_HOST, else the local socket) and negotiates the API version.
    pub async fn connect(timeout: Duration) -> Result<Docker, DockerError> {
        let api = bollard::Docker::connect_with_local_defaults()
            .map_err(|e| DockerError::Unreachable(e.to_string()))?
            .with_timeout(timeout);
        let api = bounded("version negotiation", timeout, api.negotiate_version())
            .await?
            .map_err(|e| DockerError::Unreachable(e.to_string()))?;
        Ok(Docker { api, timeout })
    }

    /// Whether the engine answers now.
    pub async fn ping(&self) -> Result<(), DockerError> {
        bounded("ping", self.timeout, self.api.ping())
            .await?
            .map(|_| ())
            .map_err(|e| DockerError::Unreachable(e.to_string()))
    }

    /// The image, pulled when missing.
    pub async fn ensure_image(&self, image: &str) -> Result<(), DockerError> {
        match bounded("image inspect", self.timeout, self.api.inspect_image(image)).await? {
            Ok(_) => return Ok(()),
            Err(e) if status(&e) != Some(404) => return Err(api("inspect image", e)),
            Err(_) => {}
        }
        let options = CreateImageOptionsBuilder::default()
            .from_image(image)
            .build();
        let pull = async {
            let mut stream = self.api.create_image(Some(options), None, None);
            while let Some(step) = stream.next().await {
                step?;
            }
            Ok::<_, bollard::errors::Error>(())
        };
        bounded("image pull", PULL_TIMEOUT, pull)
            .await?
            .map_err(|e| DockerError::ImageMissing {
                image: image.into(),
                reason: message(&e),
            })
    }

    /// The container of `spec`, if there is one, and whether it was made from
    /// `spec`.
    pub async fn find(&self, spec: &Spec) -> Result<Option<Found>, DockerError> {
        let name = &spec.container_name();
        let inspected = bounded(
            "container inspect",
            self.timeout,
            self.api.inspect_container(name, None),
        )
        .await?;
        let c = match inspected {
            Ok(c) => c,
            Err(e) if status(&e) == Some(404) => return Ok(None),
            Err(e) => return Err(api(&format!("inspect {name}"), e)),
        };
        let state = c.state.unwrap_or_default();
        let running = state.running.unwrap_or(false);
        Ok(Some(Found {
            id: c.id.unwrap_or_default(),
            running,
            state: state
                .status
                .map_or_else(|| "unknown".into(), |s| s.to_string()),
            pid: state
                .pid
                .and_then(|p| u32::try_from(p).ok())
                .filter(|&p| running && p > 0),
            outdated: c
                .config
                .and_then(|c| c.labels)
                .and_then(|mut l| l.remove(LABEL_CONFIG))
                .is_none_or(|hash| hash != spec.config_hash()),
        }))
    }

    /// Creates and starts the container for `spec`; the image must be present.
    pub async fn create(&self, spec: &Spec) -> Result<Found, DockerError> {
        let name = spec.container_name();
        let options = CreateContainerOptionsBuilder::default().name(&name).build();
        bounded(
            "container create",
            self.timeout,
            self.api.create_container(Some(options), spec.body()),
        )
        .await?
        .map_err(|e| api(&format!("create {name}"), e))?;
        self.start(spec).await
    }

    /// Starts a stopped container; a refused privileged mode is removed again and
    /// reported as such.
    pub async fn start(&self, spec: &Spec) -> Result<Found, DockerError> {
        let name = &spec.container_name();
        let started = bounded(
            "container start",
            self.timeout,
            self.api.start_container(name, None),
        )
        .await?;
        if let Err(e) = started {
            let text = message(&e);
            if text.contains("unable to apply caps") {
                let _ = self.remove(name).await;
                return Err(DockerError::PrivilegedRefused {
                    container: name.into(),
                    message: text,
                });
            }
            return Err(api(&format!("start {name}"), e));
        }
        self.find(spec)
            .await?
            .ok_or_else(|| DockerError::NotRunning {
                container: name.into(),
                state: "gone right after it started".into(),
            })
    }

    /// Makes sure the container for `spec` runs: creates it when there is none,
    /// starts it when stopped, and otherwise adopts it as it is. A container made
    /// from another configuration is kept (`found.outdated`): only an explicit
    /// upgrade replaces it.
    pub async fn ensure(&self, spec: &Spec) -> Result<Ensured, DockerError> {
        let found = match self.find(spec).await? {
            Some(f) if f.running => f,
            Some(_) => self.start(spec).await?,
            None => {
                self.ensure_image(&spec.vcs.image).await?;
                let f = self.create(spec).await?;
                return Ok(Ensured {
                    found: f,
                    created: true,
                });
            }
        };
        Ok(Ensured {
            found,
            created: false,
        })
    }

    /// Replaces the container by one made from `spec` (the image is checked first,
    /// so a missing image leaves the old container running).
    pub async fn replace(&self, spec: &Spec) -> Result<Found, DockerError> {
        self.ensure_image(&spec.vcs.image).await?;
        self.remove(&spec.container_name()).await?;
        self.create(spec).await
    }

    /// Removes a container, running or not.
    pub async fn remove(&self, name: &str) -> Result<(), DockerError> {
        let options = RemoveContainerOptionsBuilder::default().force(true).build();
        match bounded(
            "container remove",
            self.timeout,
            self.api.remove_container(name, Some(options)),
        )
        .await?
        {
            Err(e) if status(&e) != Some(404) => Err(api(&format!("remove {name}"), e)),
            _ => Ok(()),
        }
    }

    /// Runs `argv` in a running container (`docker exec`), with `stdin` as its
    /// input (none: nothing attached); returns its exit code and combined output.
    /// On `deadline` the process is killed.
    pub async fn exec(
        &self,
        container: &str,
        argv: Vec<String>,
        stdin: Option<String>,
        deadline: Duration,
    ) -> Result<(i64, String), DockerError> {
        let config = ExecConfig {
            attach_stdin: Some(stdin.is_some()),
            attach_stdout: Some(true),
            attach_stderr: Some(true),
            env: Some(vec!["LC_ALL=C".into()]),
            cmd: Some(argv),
            ..Default::default()
        };
        let created = bounded(
            "exec create",
            self.timeout,
            self.api.create_exec(container, config),
        )
        .await?
        .map_err(|e| api(&format!("exec in {container}"), e))?;
        let id = created.id;
        let run = async {
            let started = self
                .api
                .start_exec(&id, Some(StartExecOptions::default()))
                .await?;
            let mut text = String::new();
            if let StartExecResults::Attached { mut output, input } = started {
                // Written by a task of its own, then closed: a command that does
                // not read it all still ends.
                if let Some(text) = stdin {
                    let mut input = input;
                    tokio::spawn(async move {
                        use tokio::io::AsyncWriteExt;
                        let _ = input.write_all(text.as_bytes()).await;
                        let _ = input.shutdown().await;
                    });
                }
                while let Some(chunk) = output.next().await {
                    text.push_str(&chunk?.to_string());
                }
            }
            Ok::<_, bollard::errors::Error>(text)
        };
        let output = match tokio::time::timeout(deadline, run).await {
            Ok(r) => r.map_err(|e| api(&format!("exec in {container}"), e))?,
            Err(_) => {
                self.kill_exec(&id).await;
                return Err(DockerError::Timeout {
                    what: format!("exec in {container}"),
                    after: deadline,
                });
            }
        };
        let inspected = bounded("exec inspect", self.timeout, self.api.inspect_exec(&id))
            .await?
            .map_err(|e| api("exec inspect", e))?;
        Ok((inspected.exit_code.unwrap_or(-1), output))
    }

    /// Kills an exec'd process that overran its deadline (by its pid on the host).
    async fn kill_exec(&self, id: &str) {
        let pid = bounded("exec inspect", self.timeout, self.api.inspect_exec(id))
            .await
            .ok()
            .and_then(|r| r.ok())
            .and_then(|r| r.pid)
            .and_then(|p| i32::try_from(p).ok())
            .filter(|&p| p > 0);
        if let Some(pid) = pid {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid),
                nix::sys::signal::Signal::SIGKILL,
            );
        }
    }
}

/// Runs a Docker call with a deadline of its own.
async fn bounded<T>(
    what: &str,
    after: Duration,
    call: impl Future<Output = T>,
) -> Result<T, DockerError> {
    tokio::time::timeout(after, call)
        .await
        .map_err(|_| DockerError::Timeout {
            what: what.into(),
            after,
        })
}

fn status(e: &bollard::errors::Error) -> Option<u16> {
    match e {
        bollard::errors::Error::DockerResponseServerError { status_code, .. } => Some(*status_code),
        _ => None,
    }
}

/// The engine's own message, without bollard's wrapping.
fn message(e: &bollard::errors::Error) -> String {
    match e {
        bollard::errors::Error::DockerResponseServerError { message, .. } => message.clone(),
        other => other.to_string(),
    }
}

fn api(what: &str, source: bollard::errors::Error) -> DockerError {
    match &source {
        bollard::errors::Error::DockerResponseServerError { .. } => DockerError::Api {
            what: what.into(),
            source,
        },
        // Anything but an answer from the engine means the engine is not there.
        _ => DockerError::Unreachable(format!("{what}: {source}")),
    }
}
