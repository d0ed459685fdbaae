//! What one VCS container is made from: the create request (kubelet root rshared,
//! socket directory, agent, security, binds, env) and the labels that name its VCS
//! and the hash of its configuration.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use bollard::models::{
    ContainerCreateBody, DeviceMapping, HostConfig, RestartPolicy, RestartPolicyNameEnum,
};
use sha2::{Digest, Sha256};

use crate::vcs::{bind_parts, socket_path, Mode, Vcs};

/// Label that marks a container as a VCS container and names its VCS.
pub const LABEL_VCS: &str = "io.sidemount.vcs";
/// Label holding the hash of the configuration the container was made from.
pub const LABEL_CONFIG: &str = "io.sidemount.config";
/// Where the agent binary appears inside the container.
const AGENT_IN_CONTAINER: &str = "/.sidemount/sidemount";

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
