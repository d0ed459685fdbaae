//! The `docker` provider: VCS containers created, adopted, replaced and exec'd into
//! through the Docker Engine API (bollard, version negotiated), each labelled with
//! its VCS and a hash of the configuration it was made from.

use std::collections::HashMap;
use std::future::Future;
use std::path::{Path, PathBuf};
use std::time::Duration;

use bollard::exec::{StartExecOptions, StartExecResults};
use bollard::models::{
    ContainerCreateBody, DeviceMapping, ExecConfig, HostConfig, RestartPolicy,
    RestartPolicyNameEnum,
};
use bollard::query_parameters::{
    CreateContainerOptionsBuilder, CreateImageOptionsBuilder, RemoveContainerOptionsBuilder,
};
use futures_util::StreamExt;
use sha2::{Digest, Sha256};

use crate::vcs::{bind_parts, socket_path, Mode, Vcs};

/// Label that marks a container as a VCS container and names its VCS.
pub const LABEL_VCS: &str = "io.sidemount.vcs";
/// Label holding the hash of the configuration the container was made from.
pub const LABEL_CONFIG: &str = "io.sidemount.config";
/// Where the agent binary appears inside the container.
const AGENT_IN_CONTAINER: &str = "/.sidemount/sidemount";
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

/// What the daemon needs to make one VCS container.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Spec {
    pub vcs: Vcs,
    pub kubelet_root: PathBuf,
    /// The daemon's socket directory; agent sockets live in `agents/` below it.
    pub socket_dir: PathBuf,
    /// The (static) sidemount binary, bound read-only as the agent.
    pub agent_binary: PathBuf,
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

impl Spec {
    pub fn container_name(&self) -> String {
        self.vcs.container_name()
    }

    pub fn agent_socket(&self) -> PathBuf {
        socket_path(&self.socket_dir, &self.vcs.name)
    }

    /// Changes whenever anything the container is made from changes.
    pub fn config_hash(&self) -> String {
        let mut h = Sha256::new();
        h.update(serde_json::to_vec(&self.vcs).unwrap_or_default());
        for p in [&self.kubelet_root, &self.socket_dir, &self.agent_binary] {
            h.update(p.as_os_str().as_encoded_bytes());
            h.update([0]);
        }
        h.finalize()[..8]
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect()
    }

    /// The create request: kubelet root rshared, the socket directory, the agent as
    /// entrypoint (agent mode), and the VCS's security, network, binds and env.
    pub fn body(&self) -> ContainerCreateBody {
        let v = &self.vcs;
        let s = &v.security;
        let path = |p: &Path| p.to_string_lossy().into_owned();
        let root = path(&self.kubelet_root);
        let sockets = path(&self.socket_dir);
        let mut binds = vec![
            format!("{root}:{root}:rshared"),
            format!("{sockets}:{sockets}"),
        ];
        // A privileged container sees devices that appear later (loop, iSCSI, RBD)
        // only through the host's /dev.
        if s.privileged {
            binds.push("/dev:/dev".into());
        }
        let (entrypoint, cmd, init) = match v.mode {
            Mode::Agent => {
                binds.push(format!(
                    "{}:{AGENT_IN_CONTAINER}:ro",
                    path(&self.agent_binary)
                ));
                let socket = path(&self.agent_socket());
                let argv = [
                    AGENT_IN_CONTAINER,
                    "agent",
                    "--vcs",
                    &v.name,
                    "--socket",
                    &socket,
                ];
                let mut argv = argv.map(String::from).to_vec();
                for daemon in &v.daemons {
                    argv.extend(["--daemon".into(), daemon.clone()]);
                }
                (argv, vec![], false)
            }
            // No agent: a long sleep under Docker's init, which reaps the clients.
            Mode::Exec => (vec!["sleep".into()], vec!["infinity".into()], true),
        };
        binds.extend(v.binds.iter().filter_map(|b| bind_parts(b)));
        let devices = s
            .devices
            .iter()
            .map(|d| DeviceMapping {
                path_on_host: Some(path(d)),
                path_in_container: Some(path(d)),
                cgroup_permissions: Some("rwm".into()),
            })
            .collect();
        let security_opt = if s.unconfined {
            vec!["seccomp=unconfined".into(), "apparmor=unconfined".into()]
        } else {
            vec![]
        };
        let labels = HashMap::from([
            (LABEL_VCS.to_string(), v.name.clone()),
            (LABEL_CONFIG.to_string(), self.config_hash()),
        ]);
        ContainerCreateBody {
            image: Some(v.image.clone()),
            entrypoint: Some(entrypoint),
            cmd: Some(cmd),
            env: Some(v.env.iter().map(|(k, val)| format!("{k}={val}")).collect()),
            labels: Some(labels),
            host_config: Some(HostConfig {
                binds: Some(binds),
                privileged: Some(s.privileged),
                cap_add: Some(s.capabilities.clone()),
                devices: Some(devices),
                security_opt: Some(security_opt),
                network_mode: v.host_network.then(|| "host".into()),
                init: Some(init),
                restart_policy: Some(RestartPolicy {
                    name: Some(RestartPolicyNameEnum::UNLESS_STOPPED),
                    maximum_retry_count: None,
                }),
                ..Default::default()
            }),
            ..Default::default()
        }
    }
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

    /// Runs `argv` in a running container (`docker exec`); returns its exit code and
    /// combined output. On `deadline` the process is killed.
    pub async fn exec(
        &self,
        container: &str,
        argv: Vec<String>,
        deadline: Duration,
    ) -> Result<(i64, String), DockerError> {
        let config = ExecConfig {
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
            if let StartExecResults::Attached { mut output, .. } = started {
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::vcs::Security;

    fn spec() -> Spec {
        let mut vcs = Vcs::for_plugin("sshfs", "sidemount/vcs-sshfs:latest").unwrap();
        vcs.security = Security {
            privileged: false,
            capabilities: vec!["SYS_ADMIN".into()],
            devices: vec!["/dev/fuse".into()],
            unconfined: true,
        };
        vcs.binds = vec![
            "/keys".into(),
            "/etc/ceph:/conf".into(),
            "/var/lib/iscsi:/etc/iscsi:rw".into(),
        ];
        Spec {
            vcs,
            kubelet_root: "/var/lib/kubelet".into(),
            socket_dir: "/run/sidemount".into(),
            agent_binary: "/usr/local/bin/sidemount".into(),
        }
    }

    #[test]
    fn the_container_shares_the_kubelet_root_and_runs_the_agent() {
        let s = spec();
        let body = s.body();
        let hc = body.host_config.unwrap();
        assert_eq!(
            hc.binds.unwrap(),
            [
                "/var/lib/kubelet:/var/lib/kubelet:rshared",
                "/run/sidemount:/run/sidemount",
                "/usr/local/bin/sidemount:/.sidemount/sidemount:ro",
                "/keys:/keys:ro",
                "/etc/ceph:/conf:ro",
                "/var/lib/iscsi:/etc/iscsi:rw",
            ]
        );
        assert_eq!(
            body.entrypoint.unwrap(),
            [
                "/.sidemount/sidemount",
                "agent",
                "--vcs",
                "sshfs",
                "--socket",
                "/run/sidemount/agents/sshfs.sock"
            ]
        );
        assert_eq!(hc.privileged, Some(false));
        assert_eq!(hc.cap_add.unwrap(), ["SYS_ADMIN"]);
        assert_eq!(hc.network_mode.as_deref(), Some("host"));
        assert_eq!(
            body.labels.unwrap()[LABEL_CONFIG],
            s.config_hash(),
            "the hash is on the container"
        );
    }

    #[test]
    fn the_hash_follows_the_configuration() {
        let a = spec();
        let mut b = spec();
        assert_eq!(a.config_hash(), b.config_hash());
        b.vcs.image = "sidemount/vcs-sshfs:2".into();
        assert_ne!(a.config_hash(), b.config_hash());
        let mut c = spec();
        c.vcs.mode = Mode::Exec;
        let body = c.body();
        assert_eq!(body.entrypoint.unwrap(), ["sleep"]);
        assert_eq!(body.host_config.unwrap().init, Some(true));
        // The daemons it keeps are part of the agent's command line, so of the hash.
        let mut d = spec();
        d.vcs.daemons = vec!["iscsid -f".into()];
        assert_ne!(a.config_hash(), d.config_hash());
        let argv = d.body().entrypoint.unwrap();
        assert_eq!(argv[argv.len() - 2..], ["--daemon", "iscsid -f"]);
    }
}
