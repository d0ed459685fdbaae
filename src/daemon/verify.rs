//! Proves that a mount reached every namespace that must see it (the executor's,
//! the host's, the caller's), or that an unmount left them all, by looking up the
//! target in each; when it did not, names from their mountinfo the mount whose
//! propagation breaks the chain.

use std::path::{Path, PathBuf};

use crate::api::wire::Sighting;
use crate::executor::Made;
use crate::ns::mountinfo::{normalize, Mount, MountinfoError};
use crate::ns::namespace::{tables, Namespace};
use crate::ns::propagation::{link_mounts, Link};
use crate::ns::statmount;

#[derive(Debug, thiserror::Error)]
pub enum VerifyError {
    #[error("{target} is not a new mount point in the {namespace} namespace after the mount command succeeded")]
    NotMounted { target: String, namespace: String },
    #[error("the mount on {target} did not reach the {namespace} namespace: {cause}")]
    Missing {
        target: String,
        namespace: String,
        cause: String,
        remedy: Option<String>,
    },
    #[error("{target} is still mounted in the {namespace} namespace (mount {mount_id}) after the unmount")]
    StillMounted {
        target: String,
        namespace: String,
        mount_id: u32,
    },
    #[error("the mount made for {target} landed on {found}")]
    Elsewhere { target: String, found: String },
    #[error(transparent)]
    Read(#[from] MountinfoError),
}

impl VerifyError {
    pub fn remedy(&self) -> Option<&str> {
        match self {
            VerifyError::Missing { remedy, .. } => remedy.as_deref(),
            _ => None,
        }
    }
}

/// The namespaces a mount must reach. The caller's is absent when its pid is not
/// visible from the daemon.
#[derive(Debug, Clone)]
pub struct Views {
    pub executor: Namespace,
    pub others: Vec<Namespace>,
    /// The path whose propagation carries mounts between them (the kubelet root):
    /// what a broken chain is reported against, and what the remedy shares.
    pub shared_root: PathBuf,
}

/// The same filesystem directory as `original`, mounted in another namespace.
fn is_copy(mount: &Mount, original: &Mount) -> bool {
    (mount.major, mount.minor) == (original.major, original.minor) && mount.root == original.root
}

fn sighting(namespace: &Namespace, mount: Option<&Mount>) -> Sighting {
    Sighting {
        namespace: namespace.name.clone(),
        mount_id: mount.map(|m| m.id),
        propagation: mount.map(|m| m.propagation.to_string()),
    }
}

/// After a mount: the new mount on `target` in the executor's namespace (not the
/// one, if any, that was there `before`), and where it was seen. Fails naming
/// the first namespace it did not reach.
///
/// `made`: the mount the executor made. One it holds by its fd (in the daemon's
/// own namespace) is looked up by its unique id, wherever it landed, and must be
/// on `target`; one an agent reported by its id must be the one on `target`
/// in the agent's namespace.
pub fn mounted(
    target: &Path,
    before: Option<u32>,
    made: &Made,
    views: &Views,
) -> Result<(Mount, Vec<Sighting>), VerifyError> {
    let not_mounted = || VerifyError::NotMounted {
        target: target.display().to_string(),
        namespace: views.executor.name.clone(),
    };
    let by_id = made.id().map(statmount::by_id).and_then(|found| found.ok());
    let mount = match by_id {
        Some(Some(m)) if m.target == normalize(target) => m,
        Some(Some(m)) => {
            return Err(VerifyError::Elsewhere {
                target: target.display().to_string(),
                found: m.target.display().to_string(),
            })
        }
        Some(None) => return Err(not_mounted()),
        // No id (an agent's mount), or the kernel cannot look one up.
        None => views
            .executor
            .mount_at(target)?
            .filter(|m| Some(m.id) != before)
            .filter(|m| made.reported.is_none_or(|id| id == m.id))
            .ok_or_else(not_mounted)?,
    };
    let mut seen = vec![sighting(&views.executor, Some(&mount))];
    for ns in &views.others {
        match ns.mount_at(target)?.filter(|m| is_copy(m, &mount)) {
            Some(copy) => seen.push(sighting(ns, Some(&copy))),
            None => return Err(missing(target, &mount, ns, views)?),
        }
    }
    Ok((mount, seen))
}

/// Why `mount` did not reach `ns`, from both namespaces' tables: the mounts that
/// hold the target's place on each side, and the one whose propagation breaks
/// the chain between them.
fn missing(
    target: &Path,
    mount: &Mount,
    ns: &Namespace,
    views: &Views,
) -> Result<VerifyError, MountinfoError> {
    let all = tables(&[&views.executor, ns])?;
    let (cause, remedy) = match (all[0].by_id(mount.parent), all[1].containing(target)) {
        (Some(parent), Some(holder)) => {
            match link_mounts(&views.shared_root, parent, &views.executor, holder, ns) {
                Link::Broken(b) => (b.to_string(), Some(b.remedy())),
                ok => (
                    format!("propagation looked intact ({ok:?}) but the mount is absent"),
                    None,
                ),
            }
        }
        _ => ("no mount holds the target there".to_string(), None),
    };
    Ok(VerifyError::Missing {
        target: target.display().to_string(),
        namespace: ns.name.clone(),
        cause,
        remedy,
    })
}

/// After an unmount of `mount`: gone from every namespace.
pub fn unmounted(
    target: &Path,
    mount: &Mount,
    views: &Views,
) -> Result<Vec<Sighting>, VerifyError> {
    let still = |ns: &Namespace, found: Option<Mount>| match found {
        Some(m) => Err(VerifyError::StillMounted {
            target: target.display().to_string(),
            namespace: ns.name.clone(),
            mount_id: m.id,
        }),
        None => Ok(sighting(ns, None)),
    };
    let executor = &views.executor;
    let mut seen = vec![still(
        executor,
        executor.mount_at(target)?.filter(|m| m.id == mount.id),
    )?];
    for ns in &views.others {
        seen.push(still(
            ns,
            ns.mount_at(target)?.filter(|m| is_copy(m, mount)),
        )?);
    }
    Ok(seen)
}
