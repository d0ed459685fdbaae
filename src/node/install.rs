//! Creates the `mount.TYPE`/`umount.TYPE` links that make mount(8) call sidemount,
//! and the command shims (`iscsiadm`) the kubelet execs by name, without ever
//! overwriting a file that is not sidemount's.

use std::fs;
use std::io;
use std::os::unix::fs::symlink;
use std::path::{Path, PathBuf};

use crate::api::fstype::FsType;
use crate::mount::helper::{installed_names, is_command_name, is_ours};

#[derive(Debug, thiserror::Error)]
pub enum InstallError {
    #[error("invalid type '{0}': want one or more of a-z 0-9 . _ + -")]
    InvalidType(String),
    #[error(
        "invalid command '{0}': want a program name of letters, digits and . _ + -, not sidemount's own nor a mount helper's"
    )]
    InvalidCommand(String),
    #[error("binary {0} is not an absolute path")]
    RelativeBinary(PathBuf),
    #[error(
        "{path} exists and is not sidemount's ({what}): remove it first or pick another --dir"
    )]
    Occupied { path: PathBuf, what: String },
    #[error("{path}: {source}")]
    Io { path: PathBuf, source: io::Error },
}

/// One helper link.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Installed {
    pub path: PathBuf,
    /// false: it was already our link.
    pub created: bool,
}

/// For each type, creates DIR/mount.TYPE and DIR/umount.TYPE as symlinks to `binary`
/// (absolute path); for a type with a subtype (`fuse.sshfs`) also DIR/umount.MAIN,
/// since umount(8) looks helpers up by the main type mountinfo reports (`fuse`). Idempotent: an existing symlink whose text is `binary`, or that
/// canonicalizes to the same file, is left as is (created=false). Anything else at
/// one of those paths is an error, and then nothing is created for any type: all
/// paths are checked before any is created. Creates DIR if missing.
/// Each of `commands` (`iscsiadm`) becomes DIR/COMMAND, a command shim, the same way.
pub fn install_helpers(
    dir: &Path,
    binary: &Path,
    types: &[String],
    commands: &[String],
) -> Result<Vec<Installed>, InstallError> {
    if !binary.is_absolute() {
        return Err(InstallError::RelativeBinary(binary.to_owned()));
    }
    let mut names = Vec::new();
    for fstype in types {
        let fstype =
            FsType::new(fstype).map_err(|_| InstallError::InvalidType(fstype.to_owned()))?;
        names.extend(installed_names(&fstype));
    }
    for command in commands {
        if !is_command_name(command) {
            return Err(InstallError::InvalidCommand(command.to_owned()));
        }
        names.push(command.to_owned());
    }
    let mut plan: Vec<Installed> = Vec::new();
    for name in names {
        let path = dir.join(name);
        if plan.iter().all(|i| i.path != path) {
            let created = !is_our_link(&path, binary)?;
            plan.push(Installed { path, created });
        }
    }
    fs::create_dir_all(dir).map_err(io_at(dir))?;
    for new in plan.iter().filter(|i| i.created) {
        create_link(&new.path, binary)?;
    }
    Ok(plan)
}

/// Ok(true): `path` is a symlink to `binary`; Ok(false): nothing is there.
fn is_our_link(path: &Path, binary: &Path) -> Result<bool, InstallError> {
    let meta = match fs::symlink_metadata(path) {
        Ok(meta) => meta,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(false),
        Err(e) => return Err(io_at(path)(e)),
    };
    let what = if meta.file_type().is_symlink() {
        if is_ours(path, binary) {
            return Ok(true);
        }
        let target = fs::read_link(path).map_err(io_at(path))?;
        format!("a symlink to {}", target.display())
    } else if meta.is_dir() {
        "a directory".to_owned()
    } else if meta.is_file() {
        "a regular file".to_owned()
    } else {
        "a special file".to_owned()
    };
    Err(InstallError::Occupied {
        path: path.to_owned(),
        what,
    })
}

/// Makes the link under a temporary name in the same directory, then hard-links
/// that symlink into place (linkat fails on an existing name, and does not follow
/// the symlink): `path` never exists half made, and whatever appeared there since
/// it was checked is not replaced. Works on glibc and musl alike.
fn create_link(path: &Path, binary: &Path) -> Result<(), InstallError> {
    let name = path.file_name().unwrap_or_default().to_string_lossy();
    let tmp = path.with_file_name(format!(".{name}.sidemount-{}", std::process::id()));
    // A leftover of an earlier run that had the same pid.
    match fs::remove_file(&tmp) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(io_at(&tmp)(e)),
        _ => {}
    }
    symlink(binary, &tmp).map_err(io_at(&tmp))?;
    let placed = fs::hard_link(&tmp, path);
    let _ = fs::remove_file(&tmp);
    placed.map_err(io_at(path))
}

fn io_at(path: &Path) -> impl FnOnce(io::Error) -> InstallError + '_ {
    move |source| InstallError::Io {
        path: path.to_owned(),
        source,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn types(list: &[&str]) -> Vec<String> {
        list.iter().map(|s| s.to_string()).collect()
    }

    /// A temp dir holding a stand-in binary, and the (not yet existing) DIR.
    fn setup() -> (tempfile::TempDir, PathBuf, PathBuf) {
        let tmp = tempfile::tempdir().unwrap();
        let binary = tmp.path().join("sidemount");
        fs::write(&binary, "#!/bin/true\n").unwrap();
        let dir = tmp.path().join("sbin");
        (tmp, binary, dir)
    }

    fn names(dir: &Path) -> Vec<String> {
        let mut names: Vec<String> = fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        names
    }

    #[test]
    fn creates_both_links_then_leaves_them() {
        let (_tmp, binary, dir) = setup();
        let wanted = types(&["nfs", "fuse.sshfs"]);
        let paths = [
            "mount.nfs",
            "umount.nfs",
            "mount.fuse.sshfs",
            "umount.fuse.sshfs",
            "umount.fuse",
        ]
        .map(|n| dir.join(n));
        let first = install_helpers(&dir, &binary, &wanted, &[]).unwrap();
        let made = |created| {
            paths
                .iter()
                .map(|p| Installed {
                    path: p.clone(),
                    created,
                })
                .collect::<Vec<_>>()
        };
        assert_eq!(first, made(true));
        for path in &paths {
            assert_eq!(fs::read_link(path).unwrap(), binary);
        }
        assert_eq!(
            names(&dir),
            [
                "mount.fuse.sshfs",
                "mount.nfs",
                "umount.fuse",
                "umount.fuse.sshfs",
                "umount.nfs"
            ]
        );
        assert_eq!(
            install_helpers(&dir, &binary, &wanted, &[]).unwrap(),
            made(false)
        );
    }

    #[test]
    fn a_relative_link_to_the_same_binary_is_ours() {
        let (_tmp, binary, dir) = setup();
        fs::create_dir(&dir).unwrap();
        symlink("../sidemount", dir.join("mount.nfs")).unwrap();
        let got = install_helpers(&dir, &binary, &types(&["nfs", "nfs"]), &[]).unwrap();
        assert_eq!(
            got,
            [
                Installed {
                    path: dir.join("mount.nfs"),
                    created: false
                },
                Installed {
                    path: dir.join("umount.nfs"),
                    created: true
                },
            ]
        );
        assert_eq!(
            fs::read_link(dir.join("mount.nfs")).unwrap(),
            Path::new("../sidemount")
        );
    }

    #[test]
    fn a_regular_file_in_the_way_stops_everything() {
        let (_tmp, binary, dir) = setup();
        fs::create_dir(&dir).unwrap();
        let theirs = dir.join("umount.cifs");
        fs::write(&theirs, "real helper").unwrap();
        let err =
            install_helpers(&dir, &binary, &types(&["nfs", "cifs", "ceph"]), &[]).unwrap_err();
        assert_eq!(
            err.to_string(),
            format!(
                "{} exists and is not sidemount's (a regular file): remove it first or pick another --dir",
                theirs.display()
            )
        );
        assert_eq!(names(&dir), ["umount.cifs"]);
        assert_eq!(fs::read_to_string(&theirs).unwrap(), "real helper");
    }

    #[test]
    fn a_symlink_elsewhere_or_a_directory_is_not_ours() {
        let (_tmp, binary, dir) = setup();
        fs::create_dir(&dir).unwrap();
        symlink("/bin/true", dir.join("mount.nfs")).unwrap();
        let err = install_helpers(&dir, &binary, &types(&["nfs"]), &[]).unwrap_err();
        assert!(
            err.to_string()
                .ends_with("mount.nfs exists and is not sidemount's (a symlink to /bin/true): remove it first or pick another --dir"),
            "{err}"
        );
        fs::create_dir(dir.join("umount.cifs")).unwrap();
        let err = install_helpers(&dir, &binary, &types(&["cifs"]), &[]).unwrap_err();
        assert!(
            err.to_string()
                .contains("umount.cifs exists and is not sidemount's (a directory)"),
            "{err}"
        );
        assert_eq!(names(&dir), ["mount.nfs", "umount.cifs"]);
    }

    #[test]
    fn invalid_types_and_relative_binaries_create_nothing() {
        let (_tmp, binary, dir) = setup();
        for bad in ["a/b", "", "NFS", "nfs "] {
            let err = install_helpers(&dir, &binary, &types(&["nfs", bad]), &[]).unwrap_err();
            assert_eq!(
                err.to_string(),
                format!("invalid type '{bad}': want one or more of a-z 0-9 . _ + -")
            );
        }
        let err = install_helpers(&dir, Path::new("sidemount"), &types(&["nfs"]), &[]).unwrap_err();
        assert_eq!(err.to_string(), "binary sidemount is not an absolute path");
        assert!(!dir.exists());
    }

    #[test]
    fn command_shims_are_links_like_helpers() {
        let (_tmp, binary, dir) = setup();
        let commands = types(&["iscsiadm", "rbd"]);
        let got = install_helpers(&dir, &binary, &[], &commands).unwrap();
        assert!(got.iter().all(|i| i.created), "{got:?}");
        assert_eq!(names(&dir), ["iscsiadm", "rbd"]);
        assert_eq!(fs::read_link(dir.join("iscsiadm")).unwrap(), binary);
        // Idempotent, beside helpers.
        let again = install_helpers(&dir, &binary, &types(&["nfs"]), &commands).unwrap();
        assert_eq!(
            again.iter().filter(|i| i.created).count(),
            2,
            "only the nfs helpers are new: {again:?}"
        );
        // Never over another program's file, and then nothing is made.
        fs::write(dir.join("gluster"), "the real one").unwrap();
        let err =
            install_helpers(&dir, &binary, &types(&["ceph"]), &types(&["gluster"])).unwrap_err();
        assert!(
            err.to_string()
                .contains("gluster exists and is not sidemount's (a regular file)"),
            "{err}"
        );
        assert!(!dir.join("mount.ceph").exists());
        for bad in ["sidemount", "mount.nfs", "a/b", ".x", ""] {
            let err = install_helpers(&dir, &binary, &[], &types(&[bad])).unwrap_err();
            assert!(
                err.to_string()
                    .starts_with(&format!("invalid command '{bad}'")),
                "{err}"
            );
        }
    }

    #[test]
    fn a_stale_temporary_link_is_replaced() {
        let (_tmp, binary, dir) = setup();
        fs::create_dir(&dir).unwrap();
        let stale = dir.join(format!(".mount.nfs.sidemount-{}", std::process::id()));
        symlink("/bin/false", &stale).unwrap();
        install_helpers(&dir, &binary, &types(&["nfs"]), &[]).unwrap();
        assert_eq!(fs::read_link(dir.join("mount.nfs")).unwrap(), binary);
        assert_eq!(names(&dir), ["mount.nfs", "umount.nfs"]);
    }
}
