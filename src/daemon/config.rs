//! The daemon's configuration: one YAML document, with an embedded default so that
//! `sidemount serve` needs no file at all.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use crate::api::fstype::FsType;
use crate::policy::{Policy, SourceRules};
use crate::vcs::Vcs;

/// The configuration `sidemount serve` uses when it is given no file.
pub const DEFAULT_YAML: &str = include_str!("default-config.yaml");

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    /// serde names the unknown or mistyped key, with its line and column.
    #[error("{origin}: {source}")]
    Parse {
        origin: String,
        source: serde_yaml_ng::Error,
    },
    #[error("{origin}: {key}: {reason}")]
    Invalid {
        origin: String,
        key: String,
        reason: String,
    },
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    #[serde(default = "default_kubelet_root")]
    pub kubelet_root: PathBuf,
    #[serde(default)]
    pub target_roots: Vec<PathBuf>,
    #[serde(default)]
    pub bind_source_roots: Vec<PathBuf>,
    #[serde(default)]
    pub allowed_uids: Vec<u32>,
    /// Option keys whose values are secrets, besides the built-in ones (password,
    /// secret, key, token, ...): executed, but never shown.
    #[serde(default)]
    pub sensitive_option_keys: Vec<String>,
    /// Block devices that may be mounted, as glob patterns (default: iSCSI, RBD,
    /// NVMe and device-mapper paths; see `policy::sources`).
    #[serde(default)]
    pub block_device_patterns: Vec<String>,
    /// The devices that back `/` and the kubelet root may be mounted too.
    #[serde(default)]
    pub allow_root_devices: bool,
    /// Pseudo filesystems (proc, sysfs, devtmpfs, ...) that may be mounted.
    #[serde(default)]
    pub allowed_pseudo_filesystems: Vec<String>,
    /// Peers other than root may mount loop files and block devices (always
    /// nosuid,nodev).
    #[serde(default)]
    pub allow_non_root_devices: bool,
    #[serde(default = "default_request_timeout")]
    pub request_timeout_seconds: u64,
    /// How long the daemon waits at start for each VCS agent to answer.
    #[serde(default = "default_agent_wait")]
    pub agent_wait_seconds: u64,
    /// Volume-client containers; types none of them claims stay on the host executor.
    #[serde(default)]
    pub vcs: Vec<Vcs>,
}

fn default_kubelet_root() -> PathBuf {
    PathBuf::from("/var/lib/kubelet")
}

fn default_request_timeout() -> u64 {
    120
}

fn default_agent_wait() -> u64 {
    30
}

impl Default for Config {
    fn default() -> Self {
        Config::parse(DEFAULT_YAML, "embedded default").expect("the embedded default is valid")
    }
}

impl Config {
    /// Reads a YAML file, or a ConfigMap mounted as a volume: a directory with one
    /// file per key (the `..data` entries the kubelet adds are skipped).
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let read = |path: &Path| {
            std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
                path: path.to_owned(),
                source,
            })
        };
        let text = match path.is_dir() {
            false => read(path)?,
            true => {
                let entries = std::fs::read_dir(path).map_err(|source| ConfigError::Read {
                    path: path.to_owned(),
                    source,
                })?;
                let mut data = serde_yaml_ng::Mapping::new();
                for entry in entries.filter_map(Result::ok) {
                    let name = entry.file_name().to_string_lossy().into_owned();
                    if !name.starts_with('.') && entry.path().is_file() {
                        data.insert(name.into(), read(&entry.path())?.into());
                    }
                }
                let mut map = serde_yaml_ng::Mapping::new();
                map.insert("kind".into(), "ConfigMap".into());
                map.insert("data".into(), data.into());
                serde_yaml_ng::to_string(&map).expect("a mapping of strings serializes")
            }
        };
        Config::parse(&text, &path.display().to_string())
    }

    /// Parses and validates a document; `origin` names it in errors. Besides the
    /// full form it accepts the seed's flat ConfigMap data (`volume-plugin`,
    /// `docker-container`) and a whole ConfigMap whose `data` holds either that or
    /// the full form under `sidemount.yaml`.
    pub fn parse(text: &str, origin: &str) -> Result<Self, ConfigError> {
        let parse_err = |source| ConfigError::Parse {
            origin: origin.into(),
            source,
        };
        let value: serde_yaml_ng::Value = serde_yaml_ng::from_str(text).map_err(parse_err)?;
        let data = match value.get("kind").and_then(|k| k.as_str()) {
            Some("ConfigMap") => value.get("data").cloned().unwrap_or_default(),
            _ => value,
        };
        let config = if data.get(FLAT_PLUGIN).is_some() {
            flat(data).map_err(parse_err)?
        } else if let Some(full) = data.get(CONFIGMAP_KEY).and_then(|d| d.as_str()) {
            serde_yaml_ng::from_str(full).map_err(parse_err)?
        } else {
            serde_yaml_ng::from_str(text).map_err(parse_err)?
        };
        Config::validate(config, origin)
    }

    /// Adds VCS entries (from flags) and validates the result again.
    pub fn with_vcs(mut self, extra: Vec<Vcs>, origin: &str) -> Result<Self, ConfigError> {
        self.vcs.extend(extra);
        Config::validate(self, origin)
    }

    fn validate(config: Config, origin: &str) -> Result<Self, ConfigError> {
        let invalid = |key: &str, reason: String| ConfigError::Invalid {
            origin: origin.into(),
            key: key.into(),
            reason,
        };
        let absolute = |key, paths: &[PathBuf]| match paths.iter().find(|p| !p.is_absolute()) {
            Some(p) => Err(invalid(
                key,
                format!("{} is not an absolute path", p.display()),
            )),
            None => Ok(()),
        };
        absolute("kubelet_root", std::slice::from_ref(&config.kubelet_root))?;
        absolute("target_roots", &config.target_roots)?;
        absolute("bind_source_roots", &config.bind_source_roots)?;
        let bad_key = |k: &&String| k.is_empty() || k.contains([',', '=', '"']);
        if let Some(k) = config.sensitive_option_keys.iter().find(bad_key) {
            return Err(invalid(
                "sensitive_option_keys",
                format!("{k:?} is not an option key"),
            ));
        }
        if config.request_timeout_seconds == 0 {
            return Err(invalid(
                "request_timeout_seconds",
                "must be at least 1".into(),
            ));
        }
        let mut claimed: Vec<(&FsType, &str)> = Vec::new();
        for (i, v) in config.vcs.iter().enumerate() {
            v.validate()
                .map_err(|(key, reason)| invalid(&key, reason))?;
            if config.vcs[..i].iter().any(|o| o.name == v.name) {
                return Err(invalid(
                    "vcs[].name",
                    format!("{:?} names two entries", v.name),
                ));
            }
            for t in &v.types {
                if let Some((_, other)) = claimed.iter().find(|(ct, _)| *ct == t) {
                    return Err(invalid(
                        &format!("vcs[{}].types", v.name),
                        format!("{:?} is already claimed by vcs {other:?}", t.as_str()),
                    ));
                }
                claimed.push((t, &v.name));
            }
        }
        Ok(config)
    }

    pub fn request_timeout(&self) -> Duration {
        Duration::from_secs(self.request_timeout_seconds)
    }

    pub fn agent_wait(&self) -> Duration {
        Duration::from_secs(self.agent_wait_seconds)
    }

    /// The request policy, with the defaults that follow from the kubelet root.
    pub fn policy(&self) -> Policy {
        let or_default = |paths: &[PathBuf], default: Vec<PathBuf>| {
            if paths.is_empty() {
                default
            } else {
                paths.to_vec()
            }
        };
        let root = &self.kubelet_root;
        let mut sources = SourceRules {
            block_devices: self.block_device_patterns.clone(),
            root_devices: self.allow_root_devices,
            pseudo_filesystems: self.allowed_pseudo_filesystems.clone(),
            non_root_devices: self.allow_non_root_devices,
            ..SourceRules::default()
        };
        if sources.block_devices.is_empty() {
            sources.block_devices = SourceRules::default().block_devices;
        }
        sources.protect(&[Path::new("/"), root]);
        Policy {
            target_roots: or_default(
                &self.target_roots,
                vec![root.join("pods"), root.join("plugins")],
            ),
            bind_source_roots: or_default(&self.bind_source_roots, vec![root.clone()]),
            allowed_uids: self.allowed_uids.clone(),
            sources,
            sensitive_keys: self.sensitive_option_keys.clone(),
        }
    }
}

/// The seed's flat ConfigMap key that marks the form, and the key that holds the
/// full form in a ConfigMap.
const FLAT_PLUGIN: &str = "volume-plugin";
const CONFIGMAP_KEY: &str = "sidemount.yaml";

/// The flat form: the embedded default plus one VCS for the named plugin.
fn flat(data: serde_yaml_ng::Value) -> Result<Config, serde_yaml_ng::Error> {
    #[derive(Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Flat {
        #[serde(rename = "volume-plugin")]
        plugin: String,
        #[serde(rename = "docker-container")]
        image: String,
    }
    let f: Flat = serde_yaml_ng::from_value(data)?;
    let mut config = Config::default();
    let vcs = Vcs::for_plugin(&f.plugin, &f.image).map_err(|e| {
        <serde_yaml_ng::Error as serde::de::Error>::custom(format!("volume-plugin: {e}"))
    })?;
    config.vcs.push(vcs);
    Ok(config)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn embedded_default_serves_the_kubelet_root() {
        let c = Config::default();
        assert_eq!(c.kubelet_root, Path::new("/var/lib/kubelet"));
        let p = c.policy();
        assert_eq!(
            p.target_roots,
            vec![
                PathBuf::from("/var/lib/kubelet/pods"),
                PathBuf::from("/var/lib/kubelet/plugins")
            ]
        );
        assert_eq!(p.bind_source_roots, vec![PathBuf::from("/var/lib/kubelet")]);
        assert_eq!(c.request_timeout(), Duration::from_secs(120));
    }

    #[test]
    fn a_type_requests_would_refuse_is_refused_here() {
        let text = "vcs:\n- {name: a, types: [nfs, NFS], image: i}\n";
        let e = Config::parse(text, "test.yaml").unwrap_err().to_string();
        assert!(
            e.starts_with("test.yaml: vcs[0].types") && e.contains(r#""NFS" has characters"#),
            "{e}"
        );
        let seed = "kind: ConfigMap\ndata: {volume-plugin: NFS, docker-container: i}\n";
        let e = Config::parse(seed, "seed.yaml").unwrap_err().to_string();
        assert!(e.contains("volume-plugin") && e.contains(r#""NFS""#), "{e}");
    }

    #[test]
    fn configured_sensitive_keys_reach_the_policy() {
        let c = Config::parse("sensitive_option_keys: [pin, cred]\n", "test.yaml").unwrap();
        let req = crate::api::wire::MountRequest {
            options: vec!["pin=1234".into(), "mode=0700".into()],
            ..Default::default()
        };
        assert_eq!(
            c.policy().options(&req).shown(),
            vec!["pin=<redacted>", "mode=0700"]
        );
        let e = Config::parse("sensitive_option_keys: [\"a=b\"]\n", "test.yaml").unwrap_err();
        assert_eq!(
            e.to_string(),
            r#"test.yaml: sensitive_option_keys: "a=b" is not an option key"#
        );
    }

    #[test]
    fn errors_name_the_key() {
        let err = |text: &str| Config::parse(text, "test.yaml").unwrap_err().to_string();
        let e = err("kubelet_root: /k\nrequest_timeout_seconds: 5\ncolour: blue\n");
        assert!(
            e.contains("unknown field `colour`") && e.starts_with("test.yaml"),
            "{e}"
        );
        let e = err("kubelet_root: /k\nrequest_timeout_seconds: soon\n");
        assert!(e.contains("request_timeout_seconds"), "{e}");
        let e = err("kubelet_root: k\nrequest_timeout_seconds: 5\n");
        assert_eq!(e, "test.yaml: kubelet_root: k is not an absolute path");
        let e = err("kubelet_root: /k\nrequest_timeout_seconds: 0\n");
        assert_eq!(e, "test.yaml: request_timeout_seconds: must be at least 1");
        let base = "kubelet_root: /k\nrequest_timeout_seconds: 5\nvcs:\n";
        let e = err(&format!(
            "{base}- {{name: a, types: [nfs], image: i, colour: x}}\n"
        ));
        assert!(e.contains("unknown field `colour`"), "{e}");
        let e = err(&format!(
            "{base}- {{name: a, types: [nfs], image: i, mode: fast}}\n"
        ));
        assert!(e.contains("unknown variant `fast`"), "{e}");
        let e = err(&format!(
            "{base}- {{name: a, types: [nfs], image: i}}\n- {{name: a, types: [x], image: i}}\n"
        ));
        assert_eq!(e, "test.yaml: vcs[].name: \"a\" names two entries");
        let e = err(&format!(
            "{base}- {{name: a, types: [nfs], image: i}}\n- {{name: b, types: [nfs4, nfs], image: i}}\n"
        ));
        assert_eq!(
            e,
            "test.yaml: vcs[b].types: \"nfs\" is already claimed by vcs \"a\""
        );
    }

    #[test]
    fn full_form_reads_every_vcs_field() {
        let c = Config::parse(
            r#"
kubelet_root: /var/lib/kubelet
request_timeout_seconds: 60
vcs:
  - name: sshfs
    types: [fuse.sshfs]
    image: sidemount/vcs-sshfs:latest
    long_running: true
    host_network: true
    security: {privileged: false, capabilities: [SYS_ADMIN], devices: [/dev/fuse], unconfined: true}
    binds: [/etc/ssh-keys]
    env: {SSH_AUTH_SOCK: ""}
  - name: ceph
    types: [ceph]
    image: sidemount/vcs-ceph@sha256:0123
    provider: external
    binds: ["/etc/ceph:/etc/ceph", /lib/modules]
    run: [rbd]
"#,
            "t",
        )
        .unwrap();
        assert_eq!(c.vcs.len(), 2);
        let s = &c.vcs[0];
        assert!(s.long_running && !s.security.privileged && s.security.unconfined);
        assert_eq!(s.mode, crate::vcs::Mode::Agent);
        let ceph = &c.vcs[1];
        assert_eq!(ceph.provider, crate::vcs::Provider::External);
        assert!(ceph.security.privileged && ceph.allows("rbd") && !ceph.allows("sh"));
    }

    #[test]
    fn seed_configmap_forms_are_accepted() {
        let flat = "volume-plugin: \"nfs\"\ndocker-container: \"k8io/nfs:latest\"\n";
        let c = Config::parse(flat, "t").unwrap();
        assert_eq!(c.kubelet_root, Path::new("/var/lib/kubelet"));
        assert_eq!(c.vcs[0].name, "nfs");
        assert_eq!(c.vcs[0].image, "k8io/nfs:latest");
        let whole = format!(
            "apiVersion: v1\nkind: ConfigMap\nmetadata: {{name: volume-client}}\ndata:\n  {}",
            flat.replace('\n', "\n  ")
        );
        assert_eq!(Config::parse(&whole, "t").unwrap(), c);
        let full = "kind: ConfigMap\ndata:\n  sidemount.yaml: |\n    kubelet_root: /k\n    request_timeout_seconds: 5\n";
        assert_eq!(
            Config::parse(full, "t").unwrap().kubelet_root,
            Path::new("/k")
        );
        let e = Config::parse("volume-plugin: nfs\nimage: x\n", "t").unwrap_err();
        assert!(e.to_string().contains("unknown field `image`"), "{e}");
    }

    #[test]
    fn a_file_needs_only_what_differs_from_the_default() {
        let c = Config::parse("vcs: []\n", "t").unwrap();
        assert_eq!(c, Config::default());
    }

    /// A ConfigMap volume: one file per key, behind the kubelet's `..data` links.
    #[test]
    fn configmap_volume_directories_are_read_key_by_key() {
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("..2026_11_22_00_00_00.1");
        std::fs::create_dir(&data).unwrap();
        std::fs::write(data.join("volume-plugin"), "nfs").unwrap();
        std::fs::write(data.join("docker-container"), "k8io/nfs:latest").unwrap();
        std::os::unix::fs::symlink(&data, dir.path().join("..data")).unwrap();
        for key in ["volume-plugin", "docker-container"] {
            let link = dir.path().join(key);
            std::os::unix::fs::symlink(format!("..data/{key}"), link).unwrap();
        }
        let c = Config::load(dir.path()).unwrap();
        assert_eq!(
            (c.vcs[0].name.as_str(), c.vcs[0].image.as_str()),
            ("nfs", "k8io/nfs:latest")
        );

        std::fs::write(data.join("docker-container"), "").unwrap();
        std::fs::write(data.join("colour"), "blue").unwrap();
        std::os::unix::fs::symlink("..data/colour", dir.path().join("colour")).unwrap();
        let e = Config::load(dir.path()).unwrap_err().to_string();
        assert!(e.contains("unknown field `colour`"), "{e}");
    }
}
