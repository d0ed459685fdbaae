//! What the daemon may act on: which peers it serves, where mount targets and bind
//! sources may lie (resolved without following symlinks), what request fields may
//! contain, and which option values must never be shown.

mod error;
mod fields;
mod redact;
mod resolve;

use std::path::{Path, PathBuf};

use crate::api::wire::{MountRequest, UnmountRequest};

pub use error::PolicyError;
pub use fields::check_fstype;
pub use redact::{redacted_options, scrub};

use fields::{check_fields, check_target_bytes};
use resolve::resolve;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Policy {
    /// Directories mount targets must lie under (default: <kubelet-root>/pods and
    /// <kubelet-root>/plugins; the daemon builds this).
    pub target_roots: Vec<PathBuf>,
    /// Directories a bind mount's source must lie under (default: the kubelet root).
    pub bind_source_roots: Vec<PathBuf>,
    /// Peer uids allowed besides 0.
    pub allowed_uids: Vec<u32>,
}

impl Policy {
    /// Peer credentials check: uid 0 or one of allowed_uids.
    pub fn check_peer(&self, uid: u32) -> Result<(), PolicyError> {
        if uid == 0 || self.allowed_uids.contains(&uid) {
            return Ok(());
        }
        Err(PolicyError::UidNotAllowed {
            uid,
            allowed: std::iter::once(0)
                .chain(self.allowed_uids.iter().copied())
                .collect(),
        })
    }

    /// Validates a mount request and returns its target as resolved: the requested
    /// path, lexically normalized (no `.`, no trailing slash), which is where the
    /// kernel found it since no component below its root is a symlink. Bind (and
    /// move) sources are resolved the same way under `bind_source_roots`.
    pub fn check_mount(&self, req: &MountRequest) -> Result<PathBuf, PolicyError> {
        check_fields(req)?;
        let target = resolve("target", &req.target, &self.target_roots, true)?;
        if is_bind(req) {
            resolve(
                "source",
                Path::new(&req.source),
                &self.bind_source_roots,
                false,
            )?;
        }
        Ok(target)
    }

    /// Validates an unmount request's target the same way (it must exist, lie below a
    /// root and have no symlink components).
    pub fn check_unmount(&self, req: &UnmountRequest) -> Result<PathBuf, PolicyError> {
        check_target_bytes(&req.target)?;
        resolve("target", &req.target, &self.target_roots, true)
    }
}

/// Whether a mount request takes a path as its source: a bind mount (options contain
/// "bind" or "rbind", or fstype is "none", "bind" or "rbind"), or a move (option
/// "move"). Sensitive options count too: they reach mount(8)'s `-o` as well.
pub fn is_bind(req: &MountRequest) -> bool {
    matches!(req.fstype.as_str(), "none" | "bind" | "rbind")
        || req
            .options
            .iter()
            .chain(&req.sensitive_options)
            .flat_map(|o| o.split(','))
            .any(|piece| matches!(piece, "bind" | "rbind" | "move"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;

    use nix::fcntl::{open, OFlag};
    use nix::sys::stat::Mode;

    use crate::api::wire::{ApiError, ErrorCode};
    use resolve::{walk, Fault};

    use tempfile::TempDir;

    /// A kubelet root with pods/ and plugins/, a volume directory, a plugin file and
    /// a sibling `podsX` that is not under any root.
    fn fixture() -> (TempDir, Policy) {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        for d in ["pods/uid/volumes/v", "plugins/csi", "podsX/v"] {
            std::fs::create_dir_all(root.join(d)).unwrap();
        }
        std::fs::write(root.join("plugins/csi/file"), "x").unwrap();
        let policy = Policy {
            target_roots: vec![root.join("pods"), root.join("plugins")],
            bind_source_roots: vec![root.to_owned()],
            allowed_uids: vec![1000],
        };
        (dir, policy)
    }

    fn mount(target: impl Into<PathBuf>) -> MountRequest {
        MountRequest {
            source: "tmpfs".into(),
            target: target.into(),
            fstype: "tmpfs".into(),
            options: vec!["rw,nosuid".into(), "size=1m".into()],
            ..Default::default()
        }
    }

    fn bind(source: impl Into<String>, target: impl Into<PathBuf>) -> MountRequest {
        MountRequest {
            source: source.into(),
            target: target.into(),
            options: vec!["bind".into()],
            ..Default::default()
        }
    }

    /// Asserts the error's message names every one of `parts`.
    fn assert_names(err: &PolicyError, parts: &[&str]) {
        let message = err.to_string();
        for part in parts {
            assert!(message.contains(part), "{message:?} lacks {part:?}");
        }
    }

    #[test]
    fn accepts_targets_below_a_root() {
        let (dir, policy) = fixture();
        let volume = dir.path().join("pods/uid/volumes/v");
        let mut with_slash = volume.clone().into_os_string();
        with_slash.push("/");
        assert_eq!(policy.check_mount(&mount(&with_slash)).unwrap(), volume);
        let csi = dir.path().join("plugins/csi");
        assert_eq!(policy.check_mount(&mount(&csi)).unwrap(), csi);
        let unmount = UnmountRequest {
            target: volume.clone(),
            ..Default::default()
        };
        assert_eq!(policy.check_unmount(&unmount).unwrap(), volume);
    }

    #[test]
    fn refuses_targets_outside_the_roots() {
        let (dir, policy) = fixture();
        let err = policy.check_mount(&mount("/etc/x")).unwrap_err();
        assert!(matches!(err, PolicyError::OutsideRoots { .. }), "{err:?}");
        assert_eq!(err.code(), ErrorCode::TargetNotAllowed);
        let pods = dir.path().join("pods");
        assert_names(
            &err,
            &[
                "target /etc/x is outside the allowed roots (",
                &pods.to_string_lossy(),
            ],
        );
        // Whole components: podsX is not under pods.
        let sibling = dir.path().join("podsX/v");
        let err = policy.check_mount(&mount(&sibling)).unwrap_err();
        assert!(matches!(err, PolicyError::OutsideRoots { .. }), "{err:?}");
        assert_names(&err, &[&sibling.to_string_lossy()]);
    }

    #[test]
    fn refuses_a_root_itself() {
        let (dir, policy) = fixture();
        for (target, root) in [
            ("pods", "pods"),
            ("pods/", "pods"),
            ("plugins/.", "plugins"),
        ] {
            let err = policy
                .check_mount(&mount(dir.path().join(target)))
                .unwrap_err();
            assert!(
                matches!(err, PolicyError::IsRoot { .. }),
                "{target}: {err:?}"
            );
            assert_eq!(err.code(), ErrorCode::TargetNotAllowed);
            let root = dir.path().join(root);
            assert_names(
                &err,
                &[&format!("target {} is an allowed root", root.display())],
            );
        }
    }

    #[test]
    fn refuses_dot_dot() {
        let (dir, policy) = fixture();
        let target = dir.path().join("pods/uid/../../podsX/v");
        let err = policy.check_mount(&mount(&target)).unwrap_err();
        assert!(matches!(err, PolicyError::DotDot { .. }), "{err:?}");
        assert_eq!(err.code(), ErrorCode::BadRequest);
        assert_names(
            &err,
            &[&format!("target {} contains '..'", target.display())],
        );
    }

    #[test]
    fn refuses_a_symlink_component_to_etc() {
        let (dir, policy) = fixture();
        symlink("/etc", dir.path().join("pods/uid/evil")).unwrap();
        let target = dir.path().join("pods/uid/evil");
        for target in [target.join("x"), target.join(".")] {
            let err = policy.check_mount(&mount(&target)).unwrap_err();
            assert!(matches!(err, PolicyError::Symlink { .. }), "{err:?}");
            assert_eq!(err.code(), ErrorCode::TargetNotAllowed);
            assert_names(
                &err,
                &[
                    &dir.path().join("pods/uid/evil").to_string_lossy(),
                    "component 'evil' is a symbolic link",
                ],
            );
        }
    }

    #[test]
    fn refuses_a_symlink_as_last_component() {
        let (dir, policy) = fixture();
        // Even one that points inside the root.
        let link = dir.path().join("pods/uid/link");
        symlink(dir.path().join("pods/uid/volumes/v"), &link).unwrap();
        let err = policy.check_mount(&mount(&link)).unwrap_err();
        assert!(matches!(err, PolicyError::Symlink { ref component, .. } if component == "link"));
        assert_names(
            &err,
            &[&format!("target {}: component 'link'", link.display())],
        );
        let unmount = UnmountRequest {
            target: link,
            ..Default::default()
        };
        let err = policy.check_unmount(&unmount).unwrap_err();
        assert!(matches!(err, PolicyError::Symlink { .. }), "{err:?}");
    }

    #[test]
    fn refuses_missing_targets_and_files() {
        let (dir, policy) = fixture();
        let missing = dir.path().join("pods/uid/volumes/nope");
        let err = policy.check_mount(&mount(&missing)).unwrap_err();
        assert!(matches!(err, PolicyError::Missing { .. }), "{err:?}");
        assert_eq!(err.code(), ErrorCode::BadRequest);
        assert_names(
            &err,
            &[&format!(
                "{}: mount point does not exist",
                missing.display()
            )],
        );
        let unmount = UnmountRequest {
            target: missing,
            ..Default::default()
        };
        let err = policy.check_unmount(&unmount).unwrap_err();
        assert!(matches!(err, PolicyError::Missing { .. }), "{err:?}");

        let file = dir.path().join("plugins/csi/file");
        let err = policy.check_mount(&mount(&file)).unwrap_err();
        assert!(matches!(err, PolicyError::NotADirectory { .. }), "{err:?}");
        assert_names(&err, &["component 'file' is not a directory"]);
    }

    #[test]
    fn walk_alone_is_as_strict() {
        let (dir, _) = fixture();
        symlink("/etc", dir.path().join("pods/evil")).unwrap();
        let pods = open(
            &dir.path().join("pods"),
            OFlag::O_PATH | OFlag::O_DIRECTORY,
            Mode::empty(),
        )
        .unwrap();
        assert_eq!(walk(&pods, Path::new("uid/volumes/v"), true), Ok(()));
        assert_eq!(
            walk(&pods, Path::new("evil/ssl"), true),
            Err(Fault::Symlink("evil".into()))
        );
        assert_eq!(
            walk(&pods, Path::new("uid/none"), true),
            Err(Fault::Missing)
        );
        let plugins = open(
            &dir.path().join("plugins"),
            OFlag::O_PATH | OFlag::O_DIRECTORY,
            Mode::empty(),
        )
        .unwrap();
        assert_eq!(walk(&plugins, Path::new("csi/file"), false), Ok(()));
        assert_eq!(
            walk(&plugins, Path::new("csi/file/x"), false),
            Err(Fault::NotADirectory("file".into()))
        );
    }

    #[test]
    fn refuses_nul_and_newline_in_every_field() {
        let (dir, policy) = fixture();
        let good = mount(dir.path().join("pods/uid/volumes/v"));
        let mut cases: Vec<(MountRequest, &str)> = Vec::new();
        for (bad, what) in [("\0", "a NUL byte"), ("\n", "a newline")] {
            let mut r = good.clone();
            r.target = dir.path().join(format!("pods/a{bad}b"));
            cases.push((r, "target \""));
            let mut r = good.clone();
            r.source = format!("tmp{bad}fs");
            cases.push((r, "source \"tmp"));
            let mut r = good.clone();
            r.fstype = format!("tmp{bad}fs");
            cases.push((r, "filesystem type \"tmp"));
            let mut r = good.clone();
            r.options.push(format!("uid=0{bad}"));
            cases.push((r, "option 3 contains"));
            let mut r = good.clone();
            r.sensitive_options = vec![format!("password=x{bad}")];
            cases.push((r, "sensitive option 1 contains"));
            for (req, field) in cases.drain(..) {
                let err = policy.check_mount(&req).unwrap_err();
                assert!(matches!(err, PolicyError::BadCharacter { .. }), "{err:?}");
                assert_eq!(err.code(), ErrorCode::BadRequest);
                assert_names(&err, &[field, what]);
                assert!(!err.to_string().contains(['\0', '\n']), "{err}");
            }
        }
        let unmount = UnmountRequest {
            target: dir.path().join("pods/a\nb"),
            ..Default::default()
        };
        let err = policy.check_unmount(&unmount).unwrap_err();
        assert_names(&err, &["target \"", "a\\nb", "contains a newline"]);
    }

    #[test]
    fn refuses_sources_that_look_like_options() {
        let (dir, policy) = fixture();
        let mut req = mount(dir.path().join("pods/uid/volumes/v"));
        req.source = "-oremount".into();
        let err = policy.check_mount(&req).unwrap_err();
        assert!(matches!(err, PolicyError::DashSource { .. }), "{err:?}");
        assert_eq!(err.to_string(), "source '-oremount' begins with '-'");
        assert_eq!(err.code(), ErrorCode::BadRequest);
    }

    #[test]
    fn bind_sources_must_lie_below_bind_roots_without_symlinks() {
        let (dir, policy) = fixture();
        let target = dir.path().join("pods/uid/volumes/v");
        let file = dir.path().join("plugins/csi/file");
        let ok = bind(file.to_str().unwrap(), &target);
        assert_eq!(policy.check_mount(&ok).unwrap(), target);

        let err = policy.check_mount(&bind("/etc", &target)).unwrap_err();
        assert!(
            matches!(err, PolicyError::OutsideRoots { what: "source", .. }),
            "{err:?}"
        );
        assert_names(&err, &["source /etc is outside the allowed roots"]);

        symlink("/etc", dir.path().join("plugins/etc")).unwrap();
        let via_link = dir.path().join("plugins/etc/passwd");
        let err = policy
            .check_mount(&bind(via_link.to_str().unwrap(), &target))
            .unwrap_err();
        assert!(
            matches!(err, PolicyError::Symlink { what: "source", .. }),
            "{err:?}"
        );
        assert_names(&err, &["component 'etc' is a symbolic link"]);

        let err = policy
            .check_mount(&bind("plugins/csi", &target))
            .unwrap_err();
        assert!(matches!(err, PolicyError::NotAbsolute { .. }), "{err:?}");
        assert_names(&err, &["source plugins/csi is not an absolute path"]);

        // "bind" hidden among sensitive options still makes it a bind mount.
        let mut hidden = mount(&target);
        hidden.source = "/etc".into();
        hidden.sensitive_options = vec!["ro,rbind".into()];
        let err = policy.check_mount(&hidden).unwrap_err();
        assert!(
            matches!(err, PolicyError::OutsideRoots { what: "source", .. }),
            "{err:?}"
        );
    }

    #[test]
    fn recognizes_bind_mounts() {
        let req = |fstype: &str, options: &[&str]| MountRequest {
            fstype: fstype.into(),
            options: options.iter().map(|o| o.to_string()).collect(),
            ..Default::default()
        };
        assert!(is_bind(&req("", &["bind"])));
        assert!(is_bind(&req("", &["ro,rbind"])));
        assert!(is_bind(&req("", &["move"])));
        assert!(is_bind(&req("none", &[])));
        assert!(is_bind(&req("bind", &["ro"])));
        assert!(!is_bind(&req("tmpfs", &["size=1m", "binding=x"])));
        assert!(!is_bind(&req("", &[])));
    }

    #[test]
    fn checks_filesystem_types() {
        let (dir, policy) = fixture();
        let target = dir.path().join("pods/uid/volumes/v");
        for good in ["", "ext4", "fuse.sshfs", "nfs4", "ceph_x+y-z"] {
            let mut req = mount(&target);
            req.fstype = good.into();
            policy.check_mount(&req).unwrap();
        }
        for bad in ["a b", "EXT4", "fuse/x"] {
            let mut req = mount(&target);
            req.fstype = bad.into();
            let err = policy.check_mount(&req).unwrap_err();
            assert!(matches!(err, PolicyError::BadFstype { .. }), "{err:?}");
            assert_eq!(
                err.to_string(),
                format!("filesystem type '{bad}' has characters other than [a-z0-9._+-]")
            );
        }
        let mut req = mount(&target);
        req.fstype = "a".repeat(65);
        let err = policy.check_mount(&req).unwrap_err();
        assert!(
            matches!(err, PolicyError::TooLong { max: 64, .. }),
            "{err:?}"
        );
        assert_names(&err, &["filesystem type is 65 bytes long"]);
    }

    #[test]
    fn bounds_options_and_source() {
        let (dir, policy) = fixture();
        let target = dir.path().join("pods/uid/volumes/v");
        let mut req = mount(&target);
        req.options = vec!["ro".into(); 60];
        req.sensitive_options = vec!["password=x".into(); 5];
        let err = policy.check_mount(&req).unwrap_err();
        assert!(
            matches!(err, PolicyError::TooManyOptions { count: 65 }),
            "{err:?}"
        );

        let mut req = mount(&target);
        req.options.push("x".repeat(4097));
        let err = policy.check_mount(&req).unwrap_err();
        assert_eq!(
            err.to_string(),
            "option 3 is 4097 bytes long (at most 4096)"
        );

        let mut req = mount(&target);
        req.options.insert(1, String::new());
        let err = policy.check_mount(&req).unwrap_err();
        assert!(matches!(err, PolicyError::EmptyOption { .. }), "{err:?}");
        assert_eq!(err.to_string(), "option 2 is empty");

        let mut req = mount(&target);
        req.source = "s".repeat(4097);
        let err = policy.check_mount(&req).unwrap_err();
        assert_eq!(err.to_string(), "source is 4097 bytes long (at most 4096)");
    }

    #[test]
    fn checks_peer_uids() {
        let (_dir, policy) = fixture();
        policy.check_peer(0).unwrap();
        policy.check_peer(1000).unwrap();
        let err = policy.check_peer(65534).unwrap_err();
        assert!(matches!(err, PolicyError::UidNotAllowed { uid: 65534, .. }));
        assert_eq!(
            err.to_string(),
            "uid 65534 may not use sidemount (allowed: 0, 1000)"
        );
        let api = ApiError::from(err);
        assert_eq!(api.code, ErrorCode::Forbidden);
        assert_eq!(
            api.message,
            "uid 65534 may not use sidemount (allowed: 0, 1000)"
        );
    }
}
