//! The daemon's configuration: one YAML document, with an embedded default so that
//! `sidemount serve` needs no file at all.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use crate::policy::Policy;

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
        key: &'static str,
        reason: String,
    },
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    pub kubelet_root: PathBuf,
    #[serde(default)]
    pub target_roots: Vec<PathBuf>,
    #[serde(default)]
    pub bind_source_roots: Vec<PathBuf>,
    #[serde(default)]
    pub allowed_uids: Vec<u32>,
    pub request_timeout_seconds: u64,
}

impl Default for Config {
    fn default() -> Self {
        Config::parse(DEFAULT_YAML, "embedded default").expect("the embedded default is valid")
    }
}

impl Config {
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        Config::parse(&text, &path.display().to_string())
    }

    /// Parses and validates a document; `origin` names it in errors.
    pub fn parse(text: &str, origin: &str) -> Result<Self, ConfigError> {
        let config: Config =
            serde_yaml_ng::from_str(text).map_err(|source| ConfigError::Parse {
                origin: origin.into(),
                source,
            })?;
        let invalid = |key, reason: String| ConfigError::Invalid {
            origin: origin.into(),
            key,
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
        if config.request_timeout_seconds == 0 {
            return Err(invalid(
                "request_timeout_seconds",
                "must be at least 1".into(),
            ));
        }
        Ok(config)
    }

    pub fn request_timeout(&self) -> Duration {
        Duration::from_secs(self.request_timeout_seconds)
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
        Policy {
            target_roots: or_default(
                &self.target_roots,
                vec![root.join("pods"), root.join("plugins")],
            ),
            bind_source_roots: or_default(&self.bind_source_roots, vec![root.clone()]),
            allowed_uids: self.allowed_uids.clone(),
        }
    }
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
    }
}
