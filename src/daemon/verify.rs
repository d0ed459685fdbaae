//! Proves that a mount reached every namespace that must see it (the executor's,
//! the host's, the caller's) showing the per-mount options asked in each, or
//! that an unmount left them all, by looking up the target in each; when it did
//! not, names from their mountinfo the mount whose propagation breaks the chain,
//! or the copy that shows other options.

use std::path::{Path, PathBuf};

use crate::api::wire::Sighting;
use crate::executor::Made;
use crate::mount::options::MountOptions;
use crate::mount::syscall::{MountAttr, MountAttrFlags};
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
    #[error("{target} holds mount {now} in the {namespace} namespace after the change, not mount {before} that was changed")]
    NotSame {
        target: String,
        namespace: String,
        before: u32,
        now: String,
    },
    /// `shows`: what it shows, and what was asked.
    #[error("the mount on {target} in the {namespace} namespace shows {shows} after the change")]
    Unchanged {
        target: String,
        namespace: String,
        shows: String,
    },
    /// `shows`: what its per-mount options are, and what was asked.
    #[error("the mount on {target} in the {namespace} namespace shows {shows}")]
    Attributes {
        target: String,
        namespace: String,
        shows: String,
    },
    /// A copy lacked the per-mount options asked and could not be given them.
    #[error("the copy of the mount on {target} in the {namespace} namespace cannot be given the options asked: {cause}")]
    NotGiven {
        target: String,
        namespace: String,
        cause: String,
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

fn sighting(namespace: &Namespace, mount: Option<&Mount>) -> Sighting {
    Sighting {
        namespace: namespace.name.clone(),
        mount_id: mount.map(|m| m.id),
        propagation: mount.map(|m| m.propagation.to_string()),
    }
}

/// After a mount: the new mount on `target` in the executor's namespace (not the
/// one, if any, that was there `before`), showing the per-mount options
/// `wanted`; [`reached`] then proves its copies.
///
/// `made`: the mount the executor made. One it holds by its fd (in the daemon's
/// own namespace) is looked up by its unique id, wherever it landed, and must be
/// on `target`; one an agent reported by its id must be the one on `target`
/// in the agent's namespace.
pub fn mounted(
    target: &Path,
    before: Option<u32>,
    made: &Made,
    wanted: &Wanted,
    views: &Views,
) -> Result<Mount, VerifyError> {
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
    wanted.flags_of(target, &views.executor, &mount)?;
    Ok(mount)
}

/// Where `mount` (the executor's, on `target`) was seen: in the executor's
/// namespace and as a copy in every other one, each showing the per-mount
/// options `wanted`. Fails naming the first namespace it did not reach, or
/// whose copy shows other options.
pub fn reached(
    target: &Path,
    mount: &Mount,
    wanted: &Wanted,
    views: &Views,
) -> Result<Vec<Sighting>, VerifyError> {
    let mut seen = vec![sighting(&views.executor, Some(mount))];
    for ns in &views.others {
        match ns.mount_at(target)?.filter(|m| m.is_copy_of(mount)) {
            Some(copy) => {
                wanted.flags_of(target, ns, &copy)?;
                seen.push(sighting(ns, Some(&copy)));
            }
            None => return Err(missing(target, mount, ns, views)?),
        }
    }
    Ok(seen)
}

/// The other namespaces whose copy of `mount` on `target` lacks the per-mount
/// options `wanted` (a namespace seen twice, once): propagation made it with
/// the flags its original had then, and no later change of the original
/// reaches it.
pub fn lacking(
    target: &Path,
    mount: &Mount,
    wanted: &Wanted,
    views: &Views,
) -> Result<Vec<Namespace>, VerifyError> {
    let mut copies: Vec<u32> = Vec::new();
    let mut lacking = Vec::new();
    for ns in &views.others {
        let copy = ns.mount_at(target)?.filter(|m| m.is_copy_of(mount));
        if let Some(copy) = copy.filter(|c| !wanted.flags_shown_by(c)) {
            if !copies.contains(&copy.id) {
                copies.push(copy.id);
                lacking.push(ns.clone());
            }
        }
    }
    Ok(lacking)
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

/// What a mount or a change asks the mount on its target to show: per-mount
/// options present or absent, and a propagation.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Wanted {
    present: Vec<&'static str>,
    absent: Vec<&'static str>,
    propagation: Option<&'static str>,
}

/// A remount's VFS options as mountinfo shows their effect: option, shown
/// option, whether it is shown.
const SHOWN: &[(&str, &str, bool)] = &[
    ("ro", "ro", true),
    ("rw", "ro", false),
    ("nosuid", "nosuid", true),
    ("suid", "nosuid", false),
    ("nodev", "nodev", true),
    ("dev", "nodev", false),
    ("noexec", "noexec", true),
    ("exec", "noexec", false),
    ("noatime", "noatime", true),
    ("relatime", "relatime", true),
    ("nodiratime", "nodiratime", true),
];

/// The mount attribute mount_setattr(2) sets for each shown per-mount option.
const ATTRIBUTES: &[(&str, MountAttrFlags)] = &[
    ("ro", MountAttrFlags::MOUNT_ATTR_RDONLY),
    ("nosuid", MountAttrFlags::MOUNT_ATTR_NOSUID),
    ("nodev", MountAttrFlags::MOUNT_ATTR_NODEV),
    ("noexec", MountAttrFlags::MOUNT_ATTR_NOEXEC),
    ("noatime", MountAttrFlags::MOUNT_ATTR_NOATIME),
    ("relatime", MountAttrFlags::MOUNT_ATTR_RELATIME),
    ("nodiratime", MountAttrFlags::MOUNT_ATTR_NODIRATIME),
];

/// The atime modes: one is set by clearing the others.
const ATIME: &[&str] = &["noatime", "relatime"];

/// The per-mount options a new mount is held to in every namespace: those that
/// restrict what its users may do there.
const RESTRICTING: &[&str] = &["ro", "nosuid", "nodev", "noexec"];

/// Propagation options, with or without `make-` and `r`, as the kind they set.
const PROPAGATION: &[&str] = &["shared", "slave", "private", "unbindable"];

impl Wanted {
    /// What `options` of a change ask for; the last of each kind counts.
    pub fn of(options: &MountOptions) -> Wanted {
        Wanted::asked(options, options.has("remount"))
    }

    /// What `options` of a new mount hold it to: the per-mount options among
    /// them that restrict its users (the last of a flag's pair counts).
    pub fn of_mount(options: &MountOptions) -> Wanted {
        let asked = Wanted::asked(options, true);
        Wanted {
            present: asked
                .present
                .into_iter()
                .filter(|o| RESTRICTING.contains(o))
                .collect(),
            ..Wanted::default()
        }
    }

    /// The per-mount options (when `flags`) and the propagation `options` ask.
    fn asked(options: &MountOptions, flags: bool) -> Wanted {
        let mut wanted = Wanted::default();
        for option in options.iter() {
            let name = option.name().strip_prefix("make-").unwrap_or(option.name());
            let flat = name.strip_prefix('r').unwrap_or(name);
            if let Some(kind) = PROPAGATION.iter().find(|k| **k == flat || **k == name) {
                wanted.propagation = Some(kind);
            }
            if let Some((_, shown, on)) = SHOWN.iter().find(|(n, ..)| *n == name).filter(|_| flags)
            {
                wanted.present.retain(|s| s != shown);
                wanted.absent.retain(|s| s != shown);
                match on {
                    true => wanted.present.push(shown),
                    false => wanted.absent.push(shown),
                }
            }
        }
        wanted
    }

    /// Whether any per-mount option is asked.
    pub fn names_flags(&self) -> bool {
        !self.present.is_empty() || !self.absent.is_empty()
    }

    /// The attributes mount_setattr(2) sets and clears on a mount to make it
    /// show the per-mount options asked.
    pub fn attributes(&self) -> MountAttr {
        let of = |names: &[&str]| {
            ATTRIBUTES
                .iter()
                .filter(|(name, _)| names.contains(name))
                .fold(MountAttrFlags::empty(), |all, (_, attr)| all | *attr)
        };
        let mut clear = of(&self.absent);
        if self.present.iter().any(|o| ATIME.contains(o)) {
            clear |= MountAttrFlags::MOUNT_ATTR__ATIME;
        }
        MountAttr::flags(of(&self.present), clear)
    }

    /// Whether `mount` shows the per-mount options asked.
    fn flags_shown_by(&self, mount: &Mount) -> bool {
        let options: Vec<&str> = mount.options.split(',').collect();
        self.present.iter().all(|o| options.contains(o))
            && !self.absent.iter().any(|o| options.contains(o))
    }

    /// `mount`, on `target` in `ns`, shows the per-mount options asked.
    fn flags_of(&self, target: &Path, ns: &Namespace, mount: &Mount) -> Result<(), VerifyError> {
        match self.flags_shown_by(mount) {
            true => Ok(()),
            false => Err(VerifyError::Attributes {
                target: target.display().to_string(),
                namespace: ns.name.clone(),
                shows: format!("{}, not {self}", mount.options),
            }),
        }
    }

    /// Whether `mount` shows what was asked.
    fn shown_by(&self, mount: &Mount) -> bool {
        let p = &mount.propagation;
        self.flags_shown_by(mount)
            && match self.propagation {
                None => true,
                Some("shared") => p.shared.is_some(),
                Some("unbindable") => p.unbindable,
                // A slave of nothing is private: both only leave their peers.
                Some("slave") => p.shared.is_none() && !p.unbindable,
                Some(_) => p.is_private() && !p.unbindable,
            }
    }
}

impl std::fmt::Display for Wanted {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let absent = self.absent.iter().map(|o| format!("no {o}"));
        let all: Vec<String> = self
            .present
            .iter()
            .map(|o| o.to_string())
            .chain(absent)
            .chain(self.propagation.map(str::to_owned))
            .collect();
        f.write_str(&all.join(","))
    }
}

/// After a change of mount `before` on `target`: the same mount is still there in
/// the executor's namespace and shows what was asked (`wanted`); [`reached`]
/// then proves its copies, which must show the per-mount options asked
/// (propagation is each mount's own: only the executor's is changed).
pub fn changed(
    target: &Path,
    before: u32,
    wanted: &Wanted,
    views: &Views,
) -> Result<Mount, VerifyError> {
    let executor = &views.executor;
    let mount = executor.mount_at(target)?;
    let mount = match mount {
        Some(m) if m.id == before => m,
        other => {
            return Err(VerifyError::NotSame {
                target: target.display().to_string(),
                namespace: executor.name.clone(),
                before,
                now: other.map_or("none".into(), |m| m.id.to_string()),
            })
        }
    };
    if !wanted.shown_by(&mount) {
        return Err(VerifyError::Unchanged {
            target: target.display().to_string(),
            namespace: executor.name.clone(),
            shows: format!("{} ({}), not {wanted}", mount.options, mount.propagation),
        });
    }
    Ok(mount)
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
            ns.mount_at(target)?.filter(|m| m.is_copy_of(mount)),
        )?);
    }
    Ok(seen)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ns::mountinfo::MountTable;

    fn wanted(options: &[&str]) -> Wanted {
        let options: Vec<String> = options.iter().map(|o| o.to_string()).collect();
        Wanted::of(&MountOptions::new(&options, &[], &[]))
    }

    fn mount(line: &str) -> Mount {
        MountTable::parse(line.as_bytes()).unwrap().mounts.remove(0)
    }

    #[test]
    fn a_copy_is_the_same_directory_or_in_the_originals_peer_group() {
        let original = mount("40 20 0:30 /v/sub /k/t rw shared:7 - tmpfs tmpfs rw");
        let peer = mount("90 80 0:30 /v/sub /k/t rw shared:7 - tmpfs tmpfs rw");
        let renamed_peer = mount("90 80 0:30 /v/evil /k/t rw shared:7 - tmpfs tmpfs rw");
        let renamed_slave = mount("90 80 0:30 /v/evil /k/t rw master:7 - tmpfs tmpfs rw");
        let other_dir = mount("90 80 0:30 /v/evil /k/t rw shared:8 - tmpfs tmpfs rw");
        let other_device = mount("90 80 0:31 /v/sub /k/t rw shared:7 - tmpfs tmpfs rw");
        assert!(peer.is_copy_of(&original));
        assert!(renamed_peer.is_copy_of(&original) && renamed_slave.is_copy_of(&original));
        assert!(!other_dir.is_copy_of(&original) && !other_device.is_copy_of(&original));
        let private = mount("40 20 0:30 /v/sub /k/t rw - tmpfs tmpfs rw");
        assert!(!renamed_peer.is_copy_of(&private) && peer.is_copy_of(&private));
    }

    #[test]
    fn a_change_is_seen_by_its_flags_and_propagation() {
        let ro_private = mount("30 20 0:30 / /k/a ro,nosuid,relatime - tmpfs tmpfs rw");
        let rw_shared = mount("30 20 0:30 / /k/a rw,relatime shared:4 - tmpfs tmpfs rw");
        let slave = mount("30 20 0:30 / /k/a rw master:4 - tmpfs tmpfs rw");
        let unbindable = mount("30 20 0:30 / /k/a rw unbindable - tmpfs tmpfs rw");
        let ro = wanted(&["bind,remount,ro"]);
        assert_eq!(ro.to_string(), "ro");
        assert!(ro.shown_by(&ro_private) && !ro.shown_by(&rw_shared));
        let rw = wanted(&["remount,ro,rw,suid"]);
        assert_eq!(rw.to_string(), "no ro,no nosuid");
        assert!(rw.shown_by(&rw_shared) && !rw.shown_by(&ro_private));
        // Flags count only in a remount; propagation alone is checked alone.
        let private = wanted(&["make-rprivate", "ro"]);
        assert_eq!(private.to_string(), "private");
        assert!(private.shown_by(&ro_private) && !private.shown_by(&rw_shared));
        assert!(!private.shown_by(&slave) && !private.shown_by(&unbindable));
        let shared = wanted(&["rshared"]);
        assert!(shared.shown_by(&rw_shared) && !shared.shown_by(&slave));
        let as_slave = wanted(&["slave"]);
        assert!(as_slave.shown_by(&slave) && as_slave.shown_by(&ro_private));
        assert!(!as_slave.shown_by(&rw_shared));
        let no_bind = wanted(&["runbindable"]);
        assert!(no_bind.shown_by(&unbindable) && !no_bind.shown_by(&slave));
    }

    #[test]
    fn a_copy_is_given_the_attributes_asked_and_a_new_mount_the_restricting_ones() {
        let attrs = |w: &Wanted| {
            let a = w.attributes();
            (
                MountAttrFlags::from_bits_retain(a.attr_set as u32),
                MountAttrFlags::from_bits_retain(a.attr_clr as u32),
            )
        };
        use MountAttrFlags as F;
        assert_eq!(
            attrs(&wanted(&["bind,remount,ro,nosuid"])),
            (F::MOUNT_ATTR_RDONLY | F::MOUNT_ATTR_NOSUID, F::empty())
        );
        assert_eq!(
            attrs(&wanted(&["remount,rw,dev,noatime"])),
            (
                F::MOUNT_ATTR_NOATIME,
                F::MOUNT_ATTR_RDONLY | F::MOUNT_ATTR_NODEV | F::MOUNT_ATTR__ATIME
            )
        );
        assert!(!wanted(&["make-private"]).names_flags());
        // A new mount is held to what restricts its users, the last of a pair.
        let options = |list: &[&str]| {
            let list: Vec<String> = list.iter().map(|o| o.to_string()).collect();
            Wanted::of_mount(&MountOptions::new(&list, &[], &[]))
        };
        let ro = options(&["bind,ro,noatime,nosuid,suid,private"]);
        assert_eq!(ro.to_string(), "ro");
        let rw_copy = mount("90 80 0:30 / /k/a rw,relatime shared:7 - tmpfs tmpfs rw");
        let ro_copy = mount("90 80 0:30 / /k/a ro,relatime shared:7 - tmpfs tmpfs rw");
        assert!(ro.flags_shown_by(&ro_copy) && !ro.flags_shown_by(&rw_copy));
        assert!(!options(&["ro,rw", "exec"]).names_flags());
    }
}
