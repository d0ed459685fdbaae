//! The helper programs mount(8) and umount(8) start for a filesystem type
//! (`mount.nfs`, `umount.fuse.sshfs`): their names, the directories they are
//! looked up in, and whether one is sidemount's own. install-helpers, the host
//! executor and check all decide these through here.

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use crate::api::fstype::FsType;

/// Where libmount looks for helpers (its FS_SEARCH_PATH), and /usr/sbin, where
/// newer util-linux looks too.
pub const HELPER_DIRS: &[&str] = &["/sbin", "/sbin/fs.d", "/sbin/fs", "/usr/sbin"];

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
    let found = HELPER_DIRS
        .iter()
        .flat_map(|dir| {
            lookup_names(kind, fstype)
                .into_iter()
                .map(move |n| Path::new(dir).join(n))
        })
        .find(|h| h.exists());
    match (found, me) {
        (None, _) => Helper::None,
        (Some(h), Some(me)) if is_ours(&h, me) => Helper::Sidemount,
        (Some(_), _) => Helper::Other,
    }
}

/// The names mount(8) tries for a type, in its order: `mount.fuse.sshfs`, then
/// `mount.fuse`. None for no type.
pub fn lookup_names(kind: &str, fstype: &str) -> Vec<String> {
    if fstype.is_empty() {
        return Vec::new();
    }
    let mut names = vec![format!("{kind}.{fstype}")];
    if let Some((main, _subtype)) = fstype.split_once('.') {
        names.push(format!("{kind}.{main}"));
    }
    names
}

/// The helpers sidemount puts in place for a type so that every call for it
/// reaches the daemon: `mount.TYPE`, `umount.TYPE`, and for a type with a subtype
/// (`fuse.sshfs`) `umount.MAIN`, the name umount(8) looks up by the main type
/// mountinfo reports (`fuse`).
pub fn installed_names(fstype: &FsType) -> Vec<String> {
    let mut names = vec![format!("mount.{fstype}"), format!("umount.{fstype}")];
    if let Some(main) = fstype.main() {
        names.push(format!("umount.{main}"));
    }
    names
}

/// Whether `name`, the file name sidemount was started as, makes it a command shim
/// (`iscsiadm`, see `install-helpers --commands`): neither sidemount's own name
/// (`sidemount`, `sidemount-static`) nor a mount helper's.
pub fn is_shim_name(name: &str) -> bool {
    !name.is_empty()
        && !name.starts_with("sidemount")
        && !name.starts_with("mount.")
        && !name.starts_with("umount.")
}

/// Whether `name` may be installed as a command shim: a shim name (see
/// [`is_shim_name`]) of letters, digits and `. _ + -`, not hidden.
pub fn is_command_name(name: &str) -> bool {
    is_shim_name(name)
        && !name.starts_with('.')
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '+' | '-'))
}

/// Whether the helper at `path` is `binary`: a symlink whose text is `binary`, or
/// a path that resolves to the same file.
pub fn is_ours(path: &Path, binary: &Path) -> bool {
    if std::fs::read_link(path).is_ok_and(|text| text == binary) {
        return true;
    }
    matches!(
        (std::fs::canonicalize(path), std::fs::canonicalize(binary)),
        (Ok(a), Ok(b)) if a == b
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn helper_names_follow_mount8() {
        assert_eq!(
            lookup_names("mount", "fuse.sshfs"),
            ["mount.fuse.sshfs", "mount.fuse"]
        );
        assert_eq!(lookup_names("umount", "nfs"), ["umount.nfs"]);
        assert!(lookup_names("mount", "").is_empty());
        let sshfs = FsType::new("fuse.sshfs").unwrap();
        assert_eq!(
            installed_names(&sshfs),
            ["mount.fuse.sshfs", "umount.fuse.sshfs", "umount.fuse"]
        );
        // Every name installed for a type is one mount(8) or umount(8) looks up.
        for name in installed_names(&sshfs) {
            let (kind, _) = name.split_once('.').unwrap();
            assert!(lookup_names(kind, sshfs.as_str()).contains(&name), "{name}");
        }
        assert!(HELPER_DIRS.contains(&"/usr/sbin"));
    }

    #[test]
    fn shim_names_are_neither_sidemount_nor_helpers() {
        for shim in ["iscsiadm", "rbd", "mkfs.ext4", "gluster"] {
            assert!(is_shim_name(shim), "{shim}");
            assert!(is_command_name(shim), "{shim}");
        }
        for not in [
            "sidemount",
            "sidemount-static",
            "mount.nfs",
            "umount.fuse",
            "",
        ] {
            assert!(!is_shim_name(not), "{not:?}");
            assert!(!is_command_name(not), "{not:?}");
        }
        for bad in ["a/b", ".hidden", "x y", "..", "rbd\0"] {
            assert!(!is_command_name(bad), "{bad:?}");
        }
    }

    #[test]
    fn no_helper_for_a_type_nobody_serves() {
        assert_eq!(helper("mount", "sidemount-no-such-type"), Helper::None);
    }

    #[test]
    fn a_helper_is_ours_when_it_is_the_binary() {
        let dir = tempfile::tempdir().unwrap();
        let binary = dir.path().join("sidemount");
        let other = dir.path().join("mount.nfs.real");
        for f in [&binary, &other] {
            std::fs::write(f, "").unwrap();
        }
        let link = |name: &str, to: &Path| {
            let path = dir.path().join(name);
            std::os::unix::fs::symlink(to, &path).unwrap();
            path
        };
        assert!(is_ours(&link("mount.nfs", &binary), &binary));
        let through = link("bin", dir.path());
        assert!(is_ours(
            &link("mount.ceph", &through.join("sidemount")),
            &binary
        ));
        assert!(!is_ours(&link("mount.fuse", &other), &binary));
        assert!(!is_ours(&other, &binary));
        assert!(is_ours(&binary, &binary));
        // A dangling link is ours only by its text.
        let gone = dir.path().join("gone");
        assert!(is_ours(&link("umount.nfs", &gone), &gone));
        assert!(!is_ours(&dir.path().join("absent"), &binary));
    }
}
