//! What one volume-client (VCS) container is: the configuration entry that says which
//! filesystem types it mounts, which image runs it, who runs it and how it is
//! reached; and the seed's shorter ways to name one (flat ConfigMap, flags).

pub mod docker;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::api::fstype::{FsType, FsTypeError};

/// One volume-client container.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Vcs {
    /// Names the executor, the container and the agent socket (see [`executor_name`],
    /// [`container_name`] and [`socket_path`]).
    pub name: String,
    /// The filesystem types it mounts, as mount(8) names them: `nfs`, `fuse.sshfs`;
    /// none for a VCS that only runs commands (iSCSI: `iscsiadm`).
    #[serde(default)]
    pub types: Vec<FsType>,
    /// A tag or a digest.
    pub image: String,
    #[serde(default)]
    pub provider: Provider,
    #[serde(default)]
    pub mode: Mode,
    /// The client's daemon (FUSE) must outlive the mount call: the container must
    /// stay up while any of its mounts exist.
    #[serde(default)]
    pub long_running: bool,
    #[serde(default)]
    pub security: Security,
    #[serde(default)]
    pub host_network: bool,
    /// Extra binds, `HOST_PATH` or `HOST_PATH:CONTAINER_PATH`, read-only unless
    /// they end in `:rw` (state the client keeps, like iscsid's node database)
    /// (`/lib/modules`, `/etc/ceph`).
    #[serde(default)]
    pub binds: Vec<String>,
    #[serde(default)]
    pub env: BTreeMap<String, String>,
    /// The programs `sidemount run` may execute in it (`rbd`, `iscsiadm`).
    #[serde(default)]
    pub run: Vec<String>,
    /// Daemons of the client the agent keeps running (`iscsid -f`: iscsiadm
    /// needs it), each `PROGRAM ARGS...` split at whitespace.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub daemons: Vec<String>,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Provider {
    /// The daemon creates, adopts and replaces the container through the Docker API.
    #[default]
    Docker,
    /// Someone else runs it (a native sidecar); the daemon only talks to its agent.
    External,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    /// Requests go to the agent injected as the container's PID 1.
    #[default]
    Agent,
    /// `docker exec` per request, for images that cannot run the agent.
    Exec,
}

/// How much of the host the container gets.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Security {
    #[serde(default = "yes")]
    pub privileged: bool,
    /// Capabilities to add when not privileged: `SYS_ADMIN`.
    #[serde(default)]
    pub capabilities: Vec<String>,
    /// Host devices to pass when not privileged: `/dev/fuse`.
    #[serde(default)]
    pub devices: Vec<PathBuf>,
    /// Unconfined seccomp and AppArmor profiles when not privileged.
    #[serde(default)]
    pub unconfined: bool,
}

fn yes() -> bool {
    true
}

impl Default for Security {
    fn default() -> Self {
        Security {
            privileged: true,
            capabilities: Vec::new(),
            devices: Vec::new(),
            unconfined: false,
        }
    }
}

impl Vcs {
    /// A VCS with every default, for the seed's forms that only name a plugin and an
    /// image.
    pub fn for_plugin(plugin: &str, image: &str) -> Result<Vcs, FsTypeError> {
        let types = plugin_types(plugin)?;
        Ok(Vcs {
            name: plugin.to_owned(),
            long_running: types.iter().any(|t| t.as_str().starts_with("fuse")),
            types,
            image: image.to_owned(),
            provider: Provider::default(),
            mode: Mode::default(),
            security: Security::default(),
            host_network: true,
            binds: Vec::new(),
            env: BTreeMap::new(),
            run: Vec::new(),
            daemons: Vec::new(),
        })
    }

    /// The executor's name in records and status.
    pub fn executor_name(&self) -> String {
        executor_name(&self.name)
    }

    /// The docker provider's container.
    pub fn container_name(&self) -> String {
        container_name(&self.name)
    }

    /// Checks one entry; the error names the key and the entry.
    pub fn validate(&self) -> Result<(), (String, String)> {
        let key = |k: &str| format!("vcs[{}].{k}", self.name);
        let ok_name = !self.name.is_empty()
            && self.name.len() <= 48
            && self
                .name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
            && self.name.starts_with(|c: char| c.is_ascii_alphanumeric());
        if !ok_name {
            return Err((
                "vcs[].name".into(),
                format!(
                    "{:?} must be 1-48 letters, digits, '-' or '_', starting with a letter or digit",
                    self.name
                ),
            ));
        }
        if self.types.is_empty() && self.run.is_empty() {
            return Err((
                key("types"),
                "must name at least one filesystem type (or, for a VCS that only runs commands, a `run` program)".into(),
            ));
        }
        if self.image.trim().is_empty() || self.image.contains(char::is_whitespace) {
            return Err((key("image"), format!("{:?} is not an image", self.image)));
        }
        if self.provider == Provider::External && self.mode == Mode::Exec {
            return Err((
                key("mode"),
                "exec needs the docker provider: an external container is reached only through its agent".into(),
            ));
        }
        let s = &self.security;
        if s.privileged && (!s.capabilities.is_empty() || !s.devices.is_empty() || s.unconfined) {
            return Err((
                key("security"),
                "capabilities, devices and unconfined apply only with privileged: false".into(),
            ));
        }
        if let Some(b) = self.binds.iter().find(|b| bind_parts(b).is_none()) {
            return Err((
                key("binds"),
                format!("{b:?} is not HOST_PATH[:CONTAINER_PATH][:rw] (absolute paths)"),
            ));
        }
        if let Some(d) = s.devices.iter().find(|d| !d.is_absolute()) {
            return Err((
                key("security.devices"),
                format!("{} is not an absolute path", d.display()),
            ));
        }
        if let Some(k) = self
            .env
            .keys()
            .find(|k| k.is_empty() || k.contains('=') || k.contains('\0'))
        {
            return Err((key("env"), format!("{k:?} is not a variable name")));
        }
        if let Some(r) = self.run.iter().find(|r| r.is_empty() || r.contains('\0')) {
            return Err((key("run"), format!("{r:?} is not a program")));
        }
        if let Some(d) = self
            .daemons
            .iter()
            .find(|d| d.trim().is_empty() || d.contains('\0'))
        {
            return Err((key("daemons"), format!("{d:?} is not a command")));
        }
        if !self.daemons.is_empty() && self.mode == Mode::Exec {
            return Err((
                key("daemons"),
                "need mode: agent (the agent keeps them running)".into(),
            ));
        }
        Ok(())
    }

    /// Whether `run` may execute `program`: by its name or its full path as listed.
    pub fn allows(&self, program: &str) -> bool {
        self.run.iter().any(|r| r == program)
    }
}

/// `HOST_PATH[:CONTAINER_PATH][:rw|:ro]` as Docker's `HOST:CONTAINER:MODE`, both
/// paths absolute; read-only unless `:rw`.
pub fn bind_parts(bind: &str) -> Option<String> {
    let (paths, mode) = match bind.rsplit_once(':') {
        Some((paths, mode @ ("rw" | "ro"))) => (paths, mode),
        _ => (bind, "ro"),
    };
    let (host, inside) = paths.split_once(':').unwrap_or((paths, paths));
    (host.starts_with('/') && inside.starts_with('/') && !inside.contains(':'))
        .then(|| format!("{host}:{inside}:{mode}"))
}

/// The filesystem types a kubelet plugin mounts, for the seed's forms.
fn plugin_types(plugin: &str) -> Result<Vec<FsType>, FsTypeError> {
    let types: &[&str] = match plugin {
        "nfs" => &["nfs", "nfs4"],
        "cephfs" | "ceph" => &["ceph"],
        "glusterfs" => &["glusterfs"],
        "sshfs" => &["fuse.sshfs"],
        other => &[other],
    };
    types.iter().map(|t| FsType::new(t)).collect()
}

/// Parses `--vcs NAME=IMAGE`.
pub fn from_flag(flag: &str) -> Result<Vcs, String> {
    match flag.split_once('=') {
        Some((name, image)) if !name.is_empty() && !image.is_empty() => {
            Vcs::for_plugin(name, image).map_err(|e| format!("--vcs {flag:?}: {e}"))
        }
        _ => Err(format!("--vcs {flag:?}: expected NAME=IMAGE")),
    }
}

/// Takes the seed's `--NAME_mount_container=IMAGE` (or `... IMAGE`) flags out of
/// `args`, as `NAME=IMAGE`, leaving the rest for the argument parser.
pub fn take_mount_container_flags(args: &mut Vec<String>) -> Result<Vec<String>, String> {
    let mut found = Vec::new();
    let mut i = 0;
    while i < args.len() {
        let Some(rest) = args[i].strip_prefix("--") else {
            i += 1;
            continue;
        };
        let (flag, inline) = match rest.split_once('=') {
            Some((f, v)) => (f, Some(v.to_owned())),
            None => (rest, None),
        };
        let Some(name) = flag.strip_suffix("_mount_container") else {
            i += 1;
            continue;
        };
        let name = name.to_owned();
        args.remove(i);
        let image = match inline {
            Some(v) => v,
            None if i < args.len() => args.remove(i),
            None => return Err(format!("--{name}_mount_container needs an IMAGE")),
        };
        found.push(format!("{name}={image}"));
    }
    Ok(found)
}

/// The agent socket of the VCS `vcs` under the daemon's socket directory:
/// `<socket dir>/agents/NAME.sock`.
pub fn socket_path(socket_dir: &Path, vcs: &str) -> PathBuf {
    socket_dir.join("agents").join(format!("{vcs}.sock"))
}

/// The container of the VCS `vcs` under the docker provider: `sidemount-vcs-NAME`.
pub fn container_name(vcs: &str) -> String {
    format!("sidemount-vcs-{vcs}")
}

/// The executor of the VCS `vcs`, as records, status and messages name it:
/// `vcs/NAME`.
pub fn executor_name(vcs: &str) -> String {
    format!("vcs/{vcs}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seed_flags_are_taken_out_of_the_arguments() {
        let mut args: Vec<String> = [
            "sidemount",
            "serve",
            "--nfs_mount_container=k8/nfs:latest",
            "--socket",
            "/s",
            "--sshfs_mount_container",
            "local/sshfs",
        ]
        .map(String::from)
        .to_vec();
        let found = take_mount_container_flags(&mut args).unwrap();
        assert_eq!(found, ["nfs=k8/nfs:latest", "sshfs=local/sshfs"]);
        assert_eq!(args, ["sidemount", "serve", "--socket", "/s"]);
        let mut args = vec!["--nfs_mount_container".to_string()];
        assert!(take_mount_container_flags(&mut args).is_err());
    }

    #[test]
    fn flags_name_a_plugin_and_an_image() {
        let v = from_flag("nfs=k8io/nfs:latest").unwrap();
        assert_eq!(v.types, ["nfs", "nfs4"]);
        assert_eq!(v.image, "k8io/nfs:latest");
        assert!(v.security.privileged && !v.long_running);
        assert!(from_flag("sshfs=x").unwrap().long_running);
        assert_eq!(
            from_flag("nfs").unwrap_err(),
            "--vcs \"nfs\": expected NAME=IMAGE"
        );
    }

    #[test]
    fn validation_names_the_key() {
        let mut v = Vcs::for_plugin("nfs", "img").unwrap();
        v.security.capabilities = vec!["SYS_ADMIN".into()];
        assert_eq!(v.validate().unwrap_err().0, "vcs[nfs].security");
        let mut v = Vcs::for_plugin("nfs", "img").unwrap();
        v.binds = vec!["etc/ceph".into()];
        assert_eq!(v.validate().unwrap_err().0, "vcs[nfs].binds");
        let mut v = Vcs::for_plugin("nfs", "img").unwrap();
        v.name = "../x".into();
        assert_eq!(v.validate().unwrap_err().0, "vcs[].name");
        let mut v = Vcs::for_plugin("nfs", "img").unwrap();
        v.provider = Provider::External;
        v.mode = Mode::Exec;
        assert_eq!(v.validate().unwrap_err().0, "vcs[nfs].mode");
        assert!(Vcs::for_plugin("nfs", "img").unwrap().validate().is_ok());
        // A VCS that mounts nothing must at least run something.
        let mut v = Vcs::for_plugin("iscsi", "img").unwrap();
        v.types.clear();
        assert_eq!(v.validate().unwrap_err().0, "vcs[iscsi].types");
        v.run = vec!["iscsiadm".into()];
        assert!(v.validate().is_ok());
        v.daemons = vec![" ".into()];
        assert_eq!(v.validate().unwrap_err().0, "vcs[iscsi].daemons");
        v.daemons = vec!["iscsid -f".into()];
        assert!(v.validate().is_ok());
        v.mode = Mode::Exec;
        assert_eq!(v.validate().unwrap_err().0, "vcs[iscsi].daemons");
        assert_eq!(bind_parts("/a:/b").as_deref(), Some("/a:/b:ro"));
        assert_eq!(bind_parts("/a").as_deref(), Some("/a:/a:ro"));
        assert_eq!(bind_parts("/a:rw").as_deref(), Some("/a:/a:rw"));
        assert_eq!(bind_parts("/a:/b:rw").as_deref(), Some("/a:/b:rw"));
        assert_eq!(bind_parts("/a:/b:ro").as_deref(), Some("/a:/b:ro"));
        assert_eq!(bind_parts("/a:/b:/c"), None);
        assert_eq!(bind_parts("/a:b:rw"), None);
    }

    #[test]
    fn a_vcs_names_its_container_socket_and_executor_in_one_place() {
        let v = Vcs::for_plugin("nfs", "img").unwrap();
        assert_eq!(v.container_name(), "sidemount-vcs-nfs");
        assert_eq!(v.executor_name(), "vcs/nfs");
        assert_eq!(
            socket_path(Path::new("/run/sidemount"), &v.name),
            Path::new("/run/sidemount/agents/nfs.sock")
        );
    }

    #[test]
    fn a_type_the_requests_refuse_is_refused_in_the_configuration() {
        let err = from_flag("NFS=img").unwrap_err();
        assert!(err.contains(r#""NFS" has characters other than"#), "{err}");
        let text = "name: a\ntypes: [NFS]\nimage: i\n";
        let err = serde_yaml_ng::from_str::<Vcs>(text)
            .unwrap_err()
            .to_string();
        assert!(err.contains("types") && err.contains(r#""NFS""#), "{err}");
    }
}
