//! The helper programs mount(8) and umount(8) would start for a filesystem type
//! (`mount.nfs`, `umount.fuse.sshfs`): whether there is one, and whether it is this
//! very binary (then util-linux runs with `-i`, or the helper would call the daemon).

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

/// Where libmount looks for helpers (its FS_SEARCH_PATH), and /usr/sbin, where
/// newer util-linux looks too.
const HELPER_DIRS: &[&str] = &["/sbin", "/sbin/fs.d", "/sbin/fs", "/usr/sbin"];

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Helper {
    None,
    /// sidemount's own (`sidemount install-helpers`).
    Sidemount,
    /// Another program's (nfs-common's mount.nfs).
    Other,
}

/// The helper `kind` (`mount` or `umount`) would start for `fstype`.
pub fn helper(kind: &str, fstype: &str) -> Helper {
    static ME: OnceLock<Option<PathBuf>> = OnceLock::new();
    let me = ME.get_or_init(|| std::fs::canonicalize("/proc/self/exe").ok());
    let found = candidates(kind, fstype)
        .into_iter()
        .find(|h| h.exists())
        .and_then(|h| std::fs::canonicalize(h).ok());
    match found {
        None => Helper::None,
        Some(h) if Some(&h) == me.as_ref() => Helper::Sidemount,
        Some(_) => Helper::Other,
    }
}

/// `mount.fuse.sshfs`, then `mount.fuse`, in each helper directory: the names
/// mount(8) tries for a type, in its order.
fn candidates(kind: &str, fstype: &str) -> Vec<PathBuf> {
    if fstype.is_empty() {
        return Vec::new();
    }
    let mut names = vec![format!("{kind}.{fstype}")];
    if let Some((main, _subtype)) = fstype.split_once('.') {
        names.push(format!("{kind}.{main}"));
    }
    HELPER_DIRS
        .iter()
        .flat_map(|dir| names.iter().map(move |n| Path::new(dir).join(n)))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn helper_names_follow_mount8() {
        let sshfs = candidates("mount", "fuse.sshfs");
        assert_eq!(
            sshfs[..2],
            [
                PathBuf::from("/sbin/mount.fuse.sshfs"),
                PathBuf::from("/sbin/mount.fuse")
            ]
        );
        assert_eq!(sshfs.len(), 2 * HELPER_DIRS.len());
        assert_eq!(
            candidates("umount", "nfs")[0],
            PathBuf::from("/sbin/umount.nfs")
        );
        assert!(candidates("mount", "").is_empty());
    }

    #[test]
    fn no_helper_for_a_type_nobody_serves() {
        assert_eq!(helper("mount", "sidemount-no-such-type"), Helper::None);
    }
}
