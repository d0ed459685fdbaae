//! Which mount points one umount(8)-style request names, found as umount(8) finds
//! them, in the caller's own table: the target itself; for a block device, its
//! latest mount; with `-R`, every mount at or below the target, deepest first.

use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};

use crate::ns::mountinfo::{normalize, MountTable};

#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum PlanError {
    /// A device that no mount in the caller's namespace comes from.
    #[error("{0}: not mounted")]
    NotMounted(PathBuf),
}

/// The targets to unmount, in order, for `umount [-R] NAMED`. A path that is not a
/// block device is passed on as it is (the daemon decides whether it is mounted).
pub fn targets(
    named: &Path,
    recursive: bool,
    table: &MountTable,
) -> Result<Vec<PathBuf>, PlanError> {
    // A mount point first, as umount(8) looks: a device node bound onto a file
    // (a raw block volume's map) is one, not the device.
    let mount_point = table.by_target(named).is_some();
    let top = match device_number(named) {
        Some(dev) if !mount_point => latest_mount_of(named, dev, table)?,
        _ => named.to_owned(),
    };
    if !recursive {
        return Ok(vec![top]);
    }
    let top = normalize(&top);
    // Mountinfo lists a mount after the one it sits on: backwards is deepest first.
    let below: Vec<PathBuf> = table
        .mounts
        .iter()
        .rev()
        .filter(|m| m.target.starts_with(&top))
        .map(|m| m.target.clone())
        .collect();
    Ok(if below.is_empty() { vec![top] } else { below })
}

/// (major, minor) of `path` when it is a block device.
fn device_number(path: &Path) -> Option<(u32, u32)> {
    let meta = std::fs::metadata(path).ok()?;
    meta.file_type().is_block_device().then(|| {
        let rdev = meta.rdev();
        (
            nix::sys::stat::major(rdev) as u32,
            nix::sys::stat::minor(rdev) as u32,
        )
    })
}

/// The target of the latest mount whose device or source is `device`.
fn latest_mount_of(
    device: &Path,
    (major, minor): (u32, u32),
    table: &MountTable,
) -> Result<PathBuf, PlanError> {
    table
        .mounts
        .iter()
        .rev()
        .find(|m| (m.major, m.minor) == (major, minor) || Path::new(&m.source) == device)
        .map(|m| m.target.clone())
        .ok_or_else(|| PlanError::NotMounted(device.to_owned()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn table(lines: &[&str]) -> MountTable {
        MountTable::parse(lines.join("\n").as_bytes()).unwrap()
    }

    const TABLE: &[&str] = &[
        "20 1 0:20 / / rw - tmpfs root rw",
        "30 20 0:30 / /k/a rw shared:1 - tmpfs tmpfs rw",
        "31 30 0:31 / /k/a/b rw - tmpfs tmpfs rw",
        "32 31 0:32 / /k/a/b/c rw - tmpfs tmpfs rw",
        "33 20 0:33 / /k/ab rw - tmpfs tmpfs rw",
        "34 30 0:34 / /k/a/d rw - tmpfs tmpfs rw",
    ];

    #[test]
    fn a_directory_is_passed_on_alone() {
        let t = table(TABLE);
        assert_eq!(
            targets(Path::new("/k/a"), false, &t),
            Ok(vec![PathBuf::from("/k/a")])
        );
        assert_eq!(
            targets(Path::new("/k/none"), false, &t),
            Ok(vec![PathBuf::from("/k/none")])
        );
    }

    #[test]
    fn recursive_is_deepest_first_and_stays_below() {
        let t = table(TABLE);
        let want: Vec<PathBuf> = ["/k/a/d", "/k/a/b/c", "/k/a/b", "/k/a"]
            .iter()
            .map(PathBuf::from)
            .collect();
        assert_eq!(targets(Path::new("/k/a/"), true, &t), Ok(want));
        // Nothing mounted there: the daemon answers "not mounted".
        assert_eq!(
            targets(Path::new("/k/x"), true, &t),
            Ok(vec![PathBuf::from("/k/x")])
        );
    }

    #[test]
    fn a_device_names_its_latest_mount() {
        let t = table(&[
            "20 1 0:20 / / rw - tmpfs root rw",
            "40 20 7:0 / /k/first rw - ext4 /dev/loop0 rw",
            "41 20 7:0 / /k/second rw - ext4 /dev/loop0 rw",
            "42 20 7:1 / /k/other rw - ext4 /dev/loop1 rw",
        ]);
        assert_eq!(
            latest_mount_of(Path::new("/dev/x"), (7, 0), &t),
            Ok(PathBuf::from("/k/second"))
        );
        // btrfs shows an anonymous device number: the source names it.
        assert_eq!(
            latest_mount_of(Path::new("/dev/loop1"), (9, 9), &t),
            Ok(PathBuf::from("/k/other"))
        );
        assert_eq!(
            latest_mount_of(Path::new("/dev/loop5"), (7, 5), &t),
            Err(PlanError::NotMounted(PathBuf::from("/dev/loop5")))
        );
    }

    #[test]
    fn a_device_node_bound_onto_a_mount_point_is_that_mount_point() {
        // A block device node stands for one bound onto a mount point.
        let Some(node) = crate::testing::block_device_or_skip(
            "a_device_node_bound_onto_a_mount_point_is_that_mount_point",
        ) else {
            return;
        };
        let t = table(&[
            "20 1 0:20 / / rw - tmpfs root rw",
            &format!("40 20 0:5 /x {} rw - devtmpfs devtmpfs rw", node.display()),
        ]);
        assert_eq!(targets(&node, false, &t), Ok(vec![node.clone()]));
    }
}
