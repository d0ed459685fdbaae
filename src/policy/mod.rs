//! What the daemon may act on: which peers it serves, where mount targets and bind
//! sources may lie (resolved without following symlinks), what request fields may
//! contain, and which option values must never be shown.

mod checked;
mod error;
pub mod fd_source;
mod fields;
mod resolve;
pub mod sources;

use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};

use crate::api::wire::{MountRequest, UnmountRequest};
use crate::mount::options::MountOptions;
use crate::ns::beneath::Kind;

pub use checked::{CheckedMount, CheckedSource, CheckedTarget};
pub use error::PolicyError;
pub use fields::check_fstype;
pub use sources::SourceRules;

use fields::{check_fields, check_target_bytes};
use resolve::{resolve, resolve_source, without_links};
use sources::Source;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Policy {
    /// Directories mount targets must lie under (default: <kubelet-root>/pods and
    /// <kubelet-root>/plugins; the daemon builds this).
    pub target_roots: Vec<PathBuf>,
    /// Directories a bind, overlay-layer or loop-file source must lie under
    /// (default: the kubelet root).
    pub bind_source_roots: Vec<PathBuf>,
    /// Peer uids allowed besides 0.
    pub allowed_uids: Vec<u32>,
    /// What may be mounted from where (see [`sources`]).
    pub sources: SourceRules,
    /// Option keys whose values are secrets, besides the built-in ones.
    pub sensitive_keys: Vec<String>,
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

    /// The request's options, parsed once where it enters, secrets marked: those the
    /// caller marked, the built-in sensitive keys and the configured ones.
    pub fn options(&self, req: &MountRequest) -> MountOptions {
        MountOptions::of(req, &self.sensitive_keys)
    }

    /// Validates a mount request, with its parsed `options`, of a peer with `uid` and resolves its paths, once,
    /// to handles: the target (a directory, or a file for a bind) beneath a target
    /// root, and a bind, move or loop source, or each overlay layer, beneath a
    /// source root. Its type and source must pass the source rules (see
    /// [`sources`]). After this nothing resolves the request's names again.
    /// `caller_source` is the caller's own handle on a bind source it named by a
    /// file descriptor (see [`fd_source`]): located below the source roots and
    /// proven to be the same file, instead of resolving `req.source`.
    pub fn check_mount(
        &self,
        req: &MountRequest,
        options: &MountOptions,
        uid: u32,
        caller_source: Option<&OwnedFd>,
    ) -> Result<CheckedMount, PolicyError> {
        self.check_mount_beneath(req, options, uid, &self.target_roots, caller_source)
    }

    /// [`Policy::check_mount`] of a request the daemon makes again on a staging
    /// point of its own (a heal): the target is resolved beneath `staging`, a
    /// directory only root can write, instead of the target roots; the rest is
    /// checked as the caller's request was.
    pub fn check_staged(
        &self,
        req: &MountRequest,
        options: &MountOptions,
        staging: &Path,
    ) -> Result<CheckedMount, PolicyError> {
        self.check_mount_beneath(req, options, 0, &[staging.to_owned()], None)
    }

    fn check_mount_beneath(
        &self,
        req: &MountRequest,
        options: &MountOptions,
        uid: u32,
        roots: &[PathBuf],
        caller_source: Option<&OwnedFd>,
    ) -> Result<CheckedMount, PolicyError> {
        check_fields(req)?;
        // A remount names no source the kernel uses: one given is checked as for a
        // new mount, none is needed.
        let remount = options.has("remount");
        let bind = is_bind(req, options) && !(remount && req.source.is_empty());
        let kind = if bind || remount {
            Kind::Any
        } else {
            Kind::Directory
        };
        if caller_source.is_some() && !bind {
            return Err(PolicyError::FdSourceNotBind {
                source_name: req.source.clone(),
            });
        }
        let source = match self.sources.check(req, options, bind, uid == 0) {
            Err(refusal) => return Err(PolicyError::SourceRefused(refusal)),
            Ok(Source::Path { path, .. }) => Some(match caller_source {
                Some(handle) => fd_source::locate(handle, &self.bind_source_roots)?,
                None => resolve_source(&path, &self.bind_source_roots, Kind::Any)?,
            }),
            Ok(Source::DeviceNode { path, rdev }) => {
                Some(resolve::device_node(&path, rdev, &self.bind_source_roots)?)
            }
            Ok(Source::Name | Source::Device) => None,
        };
        let layers = sources::overlay_layers(options)
            .into_iter()
            .map(|(key, layer)| {
                let checked = resolve_source(&layer, &self.bind_source_roots, Kind::Directory)?;
                Ok((key, checked))
            })
            .collect::<Result<_, PolicyError>>()?;
        // mount(8)'s `X-mount.mkdir`: the missing directories made below the root,
        // once everything else passed.
        if let Some(mode) = options.mkdir_mode()? {
            resolve::make_dirs(&req.target, roots, mode)?;
        }
        let target = resolve("target", &req.target, roots, kind)?;
        if let (true, false, Some(source)) = (bind, remount, &source) {
            resolve::same_kind(source, &target)?;
        }
        Ok(CheckedMount {
            target,
            source,
            layers,
        })
    }

    /// The request as it is executed for a peer with `uid`: one that is not root
    /// always gets `nosuid,nodev`.
    pub fn enforced(&self, mut req: MountRequest, uid: u32) -> MountRequest {
        if uid != 0 {
            sources::force_nosuid_nodev(&mut req);
        }
        req
    }

    /// Resolves a target beneath `roots` (an agent's own view of the daemon's
    /// target roots) with the same rules: no symlink, no `..`, strictly below.
    pub fn resolve_target(path: &Path, roots: &[PathBuf]) -> Result<CheckedTarget, PolicyError> {
        check_target_bytes(path)?;
        resolve("target", path, roots, Kind::Any)
    }

    /// Validates an unmount request's target the same way (it must exist, lie below a
    /// root and have no symlink components) and resolves it to handles. A target
    /// reached through symbolic links is first replaced by where they lead, as
    /// umount(8) canonicalizes its argument (see [`without_links`]).
    pub fn check_unmount(&self, req: &UnmountRequest) -> Result<CheckedTarget, PolicyError> {
        check_target_bytes(&req.target)?;
        let target = without_links(&req.target, &self.target_roots)?;
        resolve("target", &target, &self.target_roots, Kind::Any).map_err(|e| match e {
            PolicyError::Missing { path, .. } => PolicyError::NoMountPoint { path },
            e => e,
        })
    }
}

/// Whether a mount request takes a path as its source: a bind mount (options contain
/// "bind" or "rbind", or fstype is "none", "bind" or "rbind"), or a move (option
/// "move"). Sensitive options count too: they reach mount(8)'s `-o` as well.
pub fn is_bind(req: &MountRequest, options: &MountOptions) -> bool {
    matches!(req.fstype.as_str(), "none" | "bind" | "rbind") || options.binds()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;

    use crate::api::wire::{ApiError, ErrorCode};

    impl Policy {
        /// A root peer's request checked with its options, as the daemon parses them.
        fn check(&self, req: &MountRequest) -> Result<CheckedMount, PolicyError> {
            self.check_mount(req, &self.options(req), 0, None)
        }
    }

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
            sources: SourceRules::default(),
            sensitive_keys: vec![],
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
        assert_eq!(
            policy.check(&mount(&with_slash)).unwrap().target.path,
            volume
        );
        let csi = dir.path().join("plugins/csi");
        assert_eq!(policy.check(&mount(&csi)).unwrap().target.path, csi);
        let unmount = UnmountRequest {
            target: volume.clone(),
            ..Default::default()
        };
        assert_eq!(policy.check_unmount(&unmount).unwrap().path, volume);
    }

    #[test]
    fn refuses_targets_outside_the_roots() {
        let (dir, policy) = fixture();
        let err = policy.check(&mount("/etc/x")).unwrap_err();
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
        let err = policy.check(&mount(&sibling)).unwrap_err();
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
            let err = policy.check(&mount(dir.path().join(target))).unwrap_err();
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
        let err = policy.check(&mount(&target)).unwrap_err();
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
            let err = policy.check(&mount(&target)).unwrap_err();
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
        let err = policy.check(&mount(&link)).unwrap_err();
        assert!(matches!(err, PolicyError::Symlink { ref component, .. } if component == "link"));
        assert_names(
            &err,
            &[&format!("target {}: component 'link'", link.display())],
        );
        // An unmount follows it, as umount(8) does, while it stays below the roots.
        let unmount = |target: &Path| UnmountRequest {
            target: target.to_owned(),
            ..Default::default()
        };
        let checked = policy.check_unmount(&unmount(&link)).unwrap();
        assert_eq!(checked.path, dir.path().join("pods/uid/volumes/v"));
        let out = dir.path().join("pods/uid/out");
        symlink(dir.path().join("podsX/v"), &out).unwrap();
        let err = policy.check_unmount(&unmount(&out)).unwrap_err();
        assert!(matches!(err, PolicyError::OutsideRoots { .. }), "{err:?}");
    }

    #[test]
    fn refuses_missing_targets_and_files() {
        let (dir, policy) = fixture();
        let missing = dir.path().join("pods/uid/volumes/nope");
        let err = policy.check(&mount(&missing)).unwrap_err();
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
            target: missing.clone(),
            ..Default::default()
        };
        let err = policy.check_unmount(&unmount).unwrap_err();
        assert!(matches!(err, PolicyError::NoMountPoint { .. }), "{err:?}");
        assert_names(
            &err,
            &[&format!("{}: no mount point specified", missing.display())],
        );

        let file = dir.path().join("plugins/csi/file");
        let err = policy.check(&mount(&file)).unwrap_err();
        assert!(matches!(err, PolicyError::NotADirectory { .. }), "{err:?}");
        assert_names(&err, &["component 'file' is not a directory"]);
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
                let err = policy.check(&req).unwrap_err();
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
        let err = policy.check(&req).unwrap_err();
        assert!(matches!(err, PolicyError::DashSource { .. }), "{err:?}");
        assert_eq!(err.to_string(), "source '-oremount' begins with '-'");
        assert_eq!(err.code(), ErrorCode::BadRequest);
    }

    #[test]
    fn bind_sources_must_lie_below_bind_roots_without_symlinks() {
        let (dir, policy) = fixture();
        let target = dir.path().join("pods/uid/volumes/v");
        let file = dir.path().join("plugins/csi/file");
        let ok = bind(dir.path().join("plugins/csi").to_str().unwrap(), &target);
        assert_eq!(policy.check(&ok).unwrap().target.path, target);

        let err = policy.check(&bind("/etc", &target)).unwrap_err();
        assert!(
            matches!(err, PolicyError::OutsideRoots { what: "source", .. }),
            "{err:?}"
        );
        assert_names(&err, &["source /etc is outside the allowed roots"]);

        // A directory onto a file, a file onto a directory: mount(8)'s words.
        let dir_source = dir.path().join("plugins/csi");
        let file_target = dir.path().join("pods/uid/volumes/file");
        std::fs::write(&file_target, "").unwrap();
        let err = policy
            .check(&bind(dir_source.to_str().unwrap(), &file_target))
            .unwrap_err();
        assert!(
            matches!(
                err,
                PolicyError::BindKind {
                    source_is_dir: true,
                    ..
                }
            ),
            "{err:?}"
        );
        assert_names(
            &err,
            &[&format!(
                "{}: mount point is not a directory",
                file_target.display()
            )],
        );
        let err = policy
            .check(&bind(file.to_str().unwrap(), &target))
            .unwrap_err();
        assert!(
            matches!(
                err,
                PolicyError::BindKind {
                    source_is_dir: false,
                    ..
                }
            ),
            "{err:?}"
        );
        assert_names(&err, &["Not a directory"]);
        assert!(policy
            .check(&bind(file.to_str().unwrap(), &file_target))
            .is_ok());

        // A missing source in mount(8)'s words.
        let gone = dir.path().join("plugins/gone");
        let err = policy
            .check(&bind(gone.to_str().unwrap(), &target))
            .unwrap_err();
        assert!(matches!(err, PolicyError::Missing { .. }), "{err:?}");
        assert_names(
            &err,
            &[&format!("special device {} does not exist", gone.display())],
        );

        symlink("/etc", dir.path().join("plugins/etc")).unwrap();
        let via_link = dir.path().join("plugins/etc/passwd");
        let err = policy
            .check(&bind(via_link.to_str().unwrap(), &target))
            .unwrap_err();
        assert!(
            matches!(err, PolicyError::Symlink { what: "source", .. }),
            "{err:?}"
        );
        assert_names(&err, &["component 'etc' is a symbolic link"]);

        let err = policy.check(&bind("plugins/csi", &target)).unwrap_err();
        assert!(matches!(err, PolicyError::NotAbsolute { .. }), "{err:?}");
        assert_names(&err, &["source plugins/csi is not an absolute path"]);

        // "bind" hidden among sensitive options still makes it a bind mount.
        let mut hidden = mount(&target);
        hidden.source = "/etc".into();
        hidden.sensitive_options = vec!["ro,rbind".into()];
        let err = policy.check(&hidden).unwrap_err();
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
        let is_bind = |r: MountRequest| is_bind(&r, &MountOptions::of(&r, &[]));
        assert!(is_bind(req("", &["bind"])));
        assert!(is_bind(req("", &["ro,rbind"])));
        assert!(is_bind(req("", &["move"])));
        assert!(is_bind(req("none", &[])));
        assert!(is_bind(req("bind", &["ro"])));
        assert!(!is_bind(req("tmpfs", &["size=1m", "binding=x"])));
        assert!(!is_bind(req("", &[])));
    }

    #[test]
    fn checks_filesystem_types() {
        let (dir, policy) = fixture();
        let target = dir.path().join("pods/uid/volumes/v");
        for good in ["", "ext4", "fuse.sshfs", "nfs4", "ceph_x+y-z"] {
            let mut req = mount(&target);
            req.fstype = good.into();
            policy.check(&req).unwrap();
        }
        for bad in ["a b", "EXT4", "fuse/x"] {
            let mut req = mount(&target);
            req.fstype = bad.into();
            let err = policy.check(&req).unwrap_err();
            assert!(matches!(err, PolicyError::BadFstype { .. }), "{err:?}");
            assert_eq!(
                err.to_string(),
                format!("filesystem type '{bad}' has characters other than [a-z0-9._+-]")
            );
        }
        let mut req = mount(&target);
        req.fstype = "a".repeat(65);
        let err = policy.check(&req).unwrap_err();
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
        let err = policy.check(&req).unwrap_err();
        assert!(
            matches!(err, PolicyError::TooManyOptions { count: 65 }),
            "{err:?}"
        );

        let mut req = mount(&target);
        req.options.push("x".repeat(4097));
        let err = policy.check(&req).unwrap_err();
        assert_eq!(
            err.to_string(),
            "option 3 is 4097 bytes long (at most 4096)"
        );

        let mut req = mount(&target);
        req.options.insert(1, String::new());
        let err = policy.check(&req).unwrap_err();
        assert!(matches!(err, PolicyError::EmptyOption { .. }), "{err:?}");
        assert_eq!(err.to_string(), "option 2 is empty");

        let mut req = mount(&target);
        req.source = "s".repeat(4097);
        let err = policy.check(&req).unwrap_err();
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
