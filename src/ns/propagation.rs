//! Mount propagation between namespaces: whether a path in one namespace reaches
//! another (the same mount, or one peer group), or which mount breaks the chain.

use std::fmt;
use std::path::{Path, PathBuf};

use serde::Serialize;

use crate::ns::mountinfo::{normalize, Mount, MountTable, MountinfoError};
use crate::ns::namespace::Namespace;

#[derive(Debug, thiserror::Error)]
pub enum PropagationError {
    #[error(transparent)]
    Mountinfo(#[from] MountinfoError),
    #[error("no mount holds {path} in {namespace}")]
    NoMount { path: PathBuf, namespace: String },
}

/// Whether mounts made below a path in one namespace appear in another.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "status", rename_all = "snake_case")]
pub enum Link {
    /// Both namespaces see the very same mount (they are one namespace).
    SameMount {
        mount_id: u32,
    },
    /// Both hold the path in mounts of one peer group: mounts propagate both ways.
    PeerGroup {
        group: u32,
    },
    Broken(Break),
}

impl Link {
    pub fn is_ok(&self) -> bool {
        !matches!(self, Link::Broken(_))
    }
}

/// The mount (holding `path`) whose propagation stops mounts from travelling between two namespaces.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Break {
    /// The path whose propagation was asked about.
    pub path: PathBuf,
    /// The namespace that holds the offending mount.
    pub namespace: String,
    pub mount_id: u32,
    pub target: PathBuf,
    pub propagation: String,
    pub reason: BreakReason,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum BreakReason {
    /// Neither shared nor a slave: nothing propagates in or out.
    Private,
    /// A slave only: it receives, it does not send back.
    SlaveOnly,
    /// Shared, but in a peer group of its own.
    OtherPeerGroup {
        other_namespace: String,
        other_group: u32,
    },
}

impl fmt::Display for Break {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (path, target) = (self.path.display(), self.target.display());
        if self.path == self.target {
            write!(f, "{path}")?;
        } else {
            write!(f, "{path} lies in mount {target}, which")?;
        }
        match &self.reason {
            BreakReason::Private => write!(
                f,
                " is private in the {} namespace (mount {})",
                self.namespace, self.mount_id
            ),
            BreakReason::SlaveOnly => write!(
                f,
                " is a slave in the {} namespace (mount {}, {}): mounts do not propagate back",
                self.namespace, self.mount_id, self.propagation
            ),
            BreakReason::OtherPeerGroup {
                other_namespace,
                other_group,
            } => write!(
                f,
                " in the {} namespace (mount {}, {}) is not in peer group {other_group} of the {other_namespace} namespace",
                self.namespace, self.mount_id, self.propagation
            ),
        }
    }
}

impl Break {
    /// The command that mends this break.
    pub fn remedy(&self) -> String {
        match self.reason {
            BreakReason::Private => format!(
                "run `sidemount share {}` in the {} namespace",
                self.path.display(),
                self.namespace
            ),
            BreakReason::SlaveOnly | BreakReason::OtherPeerGroup { .. } => format!(
                "bind {} into the {} namespace with `rshared` propagation (docker: `-v {0}:{0}:rshared`; Kubernetes: mountPropagation: Bidirectional), after `sidemount share {0}` on the host",
                self.path.display(),
                self.namespace
            ),
        }
    }
}

/// Compares `path` across two namespaces: do mounts below it in one reach the other?
pub fn link(path: &Path, a: &Namespace, b: &Namespace) -> Result<Link, PropagationError> {
    let path = normalize(path);
    let (ta, tb) = (a.table()?, b.table()?);
    let holder = |t: &MountTable, ns: &Namespace| -> Result<Mount, PropagationError> {
        t.containing(&path)
            .cloned()
            .ok_or_else(|| PropagationError::NoMount {
                path: path.clone(),
                namespace: ns.name.clone(),
            })
    };
    Ok(link_mounts(&path, &holder(&ta, a)?, a, &holder(&tb, b)?, b))
}

/// The decision of `link`, for the two mounts that hold `path`.
pub fn link_mounts(path: &Path, ma: &Mount, a: &Namespace, mb: &Mount, b: &Namespace) -> Link {
    // Mount ids are unique across namespaces: the same id is the same mount.
    if ma.id == mb.id {
        return Link::SameMount { mount_id: ma.id };
    }
    let broken = |m: &Mount, ns: &Namespace, reason| {
        Link::Broken(Break {
            path: path.to_owned(),
            namespace: ns.name.clone(),
            mount_id: m.id,
            target: m.target.clone(),
            propagation: m.propagation.to_string(),
            reason,
        })
    };
    let kind = |m: &Mount| match (m.propagation.shared, m.propagation.master) {
        (Some(_), _) => None,
        (None, Some(_)) => Some(BreakReason::SlaveOnly),
        (None, None) => Some(BreakReason::Private),
    };
    // The side that cannot send is named first: a private host root before a
    // private caller root, since the host is where `share` must run first.
    if let Some(reason) = kind(ma) {
        return broken(ma, a, reason);
    }
    if let Some(reason) = kind(mb) {
        return broken(mb, b, reason);
    }
    let (ga, gb) = (
        ma.propagation.shared.unwrap(),
        mb.propagation.shared.unwrap(),
    );
    if ga == gb {
        Link::PeerGroup { group: ga }
    } else {
        broken(
            mb,
            b,
            BreakReason::OtherPeerGroup {
                other_namespace: a.name.clone(),
                other_group: ga,
            },
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ns::mountinfo::ProcRoot;

    fn mount(id: u32, propagation: &str) -> Mount {
        let line = format!("{id} 1 0:40 / /var/lib/kubelet rw {propagation} - tmpfs tmpfs rw")
            .replace("  ", " ");
        MountTable::parse(line.as_bytes()).unwrap().mounts.remove(0)
    }

    fn ns(name: &str) -> Namespace {
        Namespace::new(name, ProcRoot::default(), None)
    }

    #[test]
    fn link_decides_from_ids_and_peer_groups() {
        let (host, caller) = (ns("host"), ns("caller"));
        let kubelet = Path::new("/var/lib/kubelet");
        let decide =
            |a: &str, b: &str| link_mounts(kubelet, &mount(30, a), &host, &mount(40, b), &caller);
        assert_eq!(decide("shared:7", "shared:7"), Link::PeerGroup { group: 7 });
        assert_eq!(
            decide("shared:7", "shared:7 master:2"),
            Link::PeerGroup { group: 7 }
        );
        let brk = |l: Link| match l {
            Link::Broken(b) => b,
            other => panic!("expected a break, got {other:?}"),
        };
        let b = brk(decide("", "shared:7"));
        assert_eq!(
            (b.namespace.as_str(), b.reason.clone()),
            ("host", BreakReason::Private)
        );
        assert!(b.remedy().contains("sidemount share /var/lib/kubelet"));
        let b = brk(decide("shared:7", "master:7"));
        assert_eq!(
            (b.namespace.as_str(), b.reason.clone()),
            ("caller", BreakReason::SlaveOnly)
        );
        assert!(b.to_string().contains("do not propagate back"), "{b}");
        let b = brk(decide("shared:7", "shared:9"));
        assert_eq!(b.mount_id, 40);
        assert!(matches!(
            b.reason,
            BreakReason::OtherPeerGroup { other_group: 7, .. }
        ));
        // One namespace: the same mount, whatever its propagation.
        assert_eq!(
            link_mounts(
                Path::new("/var/lib/kubelet"),
                &mount(30, ""),
                &host,
                &mount(30, ""),
                &caller
            ),
            Link::SameMount { mount_id: 30 }
        );
    }
}
