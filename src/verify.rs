//! Proves from mountinfo that a mount reached every namespace that must see it (the
//! executor's, the host's, the caller's), or that an unmount left them all; when it
//! did not, names the mount whose propagation breaks the chain.

use std::path::{Path, PathBuf};
use std::rc::Rc;

use crate::mountinfo::{Mount, MountTable, MountinfoError};
use crate::propagation::{link_mounts, tables, Link, Namespace};
use crate::wire::Sighting;

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

impl Views {
    /// The executor's table, then the others', each namespace read once.
    fn tables(&self) -> Result<Vec<Rc<MountTable>>, MountinfoError> {
        let mut all = vec![&self.executor];
        all.extend(&self.others);
        tables(&all)
    }
}

/// Ids of the mounts stacked on `target`, to tell a new one from old ones.
pub fn mounts_on(table: &MountTable, target: &Path) -> Vec<u32> {
    table
        .mounts
        .iter()
        .filter(|m| m.target == target)
        .map(|m| m.id)
        .collect()
}

/// The same filesystem directory mounted on `target` in another namespace.
fn copy_of<'t>(table: &'t MountTable, target: &Path, original: &Mount) -> Option<&'t Mount> {
    table.by_target(target).filter(|m| {
        (m.major, m.minor) == (original.major, original.minor) && m.root == original.root
    })
}

fn sighting(namespace: &Namespace, mount: Option<&Mount>) -> Sighting {
    Sighting {
        namespace: namespace.name.clone(),
        mount_id: mount.map(|m| m.id),
        propagation: mount.map(|m| m.propagation.to_string()),
    }
}

/// After a mount: the new mount in the executor's namespace (one not in `before`),
/// and where it was seen. Fails naming the first namespace it did not reach.
pub fn mounted(
    target: &Path,
    before: &[u32],
    views: &Views,
) -> Result<(Mount, Vec<Sighting>), VerifyError> {
    let all = views.tables()?;
    let (table, others) = all.split_first().expect("the executor's table");
    let mount = table
        .by_target(target)
        .filter(|m| !before.contains(&m.id))
        .cloned()
        .ok_or_else(|| VerifyError::NotMounted {
            target: target.display().to_string(),
            namespace: views.executor.name.clone(),
        })?;
    let mut seen = vec![sighting(&views.executor, Some(&mount))];
    for (ns, other) in views.others.iter().zip(others) {
        if let Some(copy) = copy_of(other, target, &mount) {
            seen.push(sighting(ns, Some(copy)));
            continue;
        }
        // Not there: compare the mounts that hold the target's place on each side.
        let (cause, remedy) = match (table.by_id(mount.parent), other.containing(target)) {
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
        return Err(VerifyError::Missing {
            target: target.display().to_string(),
            namespace: ns.name.clone(),
            cause,
            remedy,
        });
    }
    Ok((mount, seen))
}

/// After an unmount of `mount`: gone from every namespace.
pub fn unmounted(
    target: &Path,
    mount: &Mount,
    views: &Views,
) -> Result<Vec<Sighting>, VerifyError> {
    let still = |ns: &Namespace, found: Option<&Mount>| match found {
        Some(m) => Err(VerifyError::StillMounted {
            target: target.display().to_string(),
            namespace: ns.name.clone(),
            mount_id: m.id,
        }),
        None => Ok(sighting(ns, None)),
    };
    let all = views.tables()?;
    let (executor, others) = all.split_first().expect("the executor's table");
    let mut seen = vec![still(&views.executor, executor.by_id(mount.id))?];
    for (ns, other) in views.others.iter().zip(others) {
        seen.push(still(ns, copy_of(other, target, mount))?);
    }
    Ok(seen)
}
