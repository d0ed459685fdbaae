//! What the daemon may act on: which peers it serves, where mount targets and bind
//! sources may lie (resolved without following symlinks), what request fields may
//! contain, and which option values must never be shown.

use std::ffi::OsStr;
use std::fmt;
use std::os::fd::OwnedFd;
use std::os::unix::ffi::OsStrExt;
use std::path::{Component, Path, PathBuf};

use nix::errno::Errno;
use nix::fcntl::{open, openat, openat2, OFlag, OpenHow, ResolveFlag};
use nix::sys::stat::{fstat, Mode, SFlag};

use crate::api::fstype::FsType;
use crate::api::wire::{ApiError, ErrorCode, MountRequest, UnmountRequest};
use crate::ns::mountinfo::normalize;

/// Most options (plain and sensitive together) one request may carry.
const MAX_OPTIONS: usize = 64;
/// Longest source, target or single option, in bytes (PATH_MAX).
const MAX_FIELD: usize = 4096;
/// Longest filesystem type, in bytes.
/// Option keys whose values are secrets (compared case-insensitively).
const SENSITIVE_KEYS: &[&str] = &[
    "password",
    "passwd",
    "pass",
    "secret",
    "key",
    "token",
    "credentials",
    "auth",
];
/// What a secret is replaced with.
const REDACTED: &str = "<redacted>";

#[derive(Debug, thiserror::Error)]
pub enum PolicyError {
    #[error("uid {uid} may not use sidemount (allowed: {})", comma_list(.allowed.iter()))]
    UidNotAllowed { uid: u32, allowed: Vec<u32> },
    #[error("{field} contains {what}")]
    BadCharacter { field: String, what: &'static str },
    #[error("{field} is {len} bytes long (at most {max})")]
    TooLong {
        field: String,
        len: usize,
        max: usize,
    },
    #[error("{count} options (at most {MAX_OPTIONS}, sensitive ones included)")]
    TooManyOptions { count: usize },
    #[error("{field} is empty")]
    EmptyOption { field: String },
    #[error("source '{value}' begins with '-'")]
    DashSource { value: String },
    #[error("filesystem type '{fstype}' has characters other than [a-z0-9._+-]")]
    BadFstype { fstype: String },
    #[error("{what} {path} is not an absolute path")]
    NotAbsolute { what: &'static str, path: PathBuf },
    #[error("{what} {path} contains '..'")]
    DotDot { what: &'static str, path: PathBuf },
    #[error("{what} {path} is outside the allowed roots ({})", comma_list(.roots.iter().map(|r| r.display())))]
    OutsideRoots {
        what: &'static str,
        path: PathBuf,
        roots: Vec<PathBuf>,
    },
    #[error("{what} {path} is an allowed root itself: it must lie below one")]
    IsRoot { what: &'static str, path: PathBuf },
    #[error("{what} {path}: component '{component}' is a symbolic link")]
    Symlink {
        what: &'static str,
        path: PathBuf,
        component: String,
    },
    #[error("{what} {path}: component '{component}' is not a directory")]
    NotADirectory {
        what: &'static str,
        path: PathBuf,
        component: String,
    },
    #[error("{}", missing_text(.what, .path))]
    Missing { what: &'static str, path: PathBuf },
    #[error("cannot resolve {what} {path}: {errno}")]
    Unresolvable {
        what: &'static str,
        path: PathBuf,
        errno: Errno,
    },
}

/// A missing target reads as mount(8)'s "/x: mount point does not exist".
fn missing_text(what: &str, path: &Path) -> String {
    match what {
        "target" => format!("{}: mount point does not exist", path.display()),
        _ => format!("{what} {} does not exist", path.display()),
    }
}

impl PolicyError {
    pub fn code(&self) -> ErrorCode {
        match self {
            PolicyError::UidNotAllowed { .. } => ErrorCode::Forbidden,
            PolicyError::OutsideRoots { .. }
            | PolicyError::IsRoot { .. }
            | PolicyError::Symlink { .. }
            | PolicyError::NotADirectory { .. } => ErrorCode::TargetNotAllowed,
            PolicyError::Unresolvable { .. } => ErrorCode::Internal,
            PolicyError::BadCharacter { .. }
            | PolicyError::TooLong { .. }
            | PolicyError::TooManyOptions { .. }
            | PolicyError::EmptyOption { .. }
            | PolicyError::DashSource { .. }
            | PolicyError::BadFstype { .. }
            | PolicyError::NotAbsolute { .. }
            | PolicyError::DotDot { .. }
            | PolicyError::Missing { .. } => ErrorCode::BadRequest,
        }
    }
}

impl From<PolicyError> for ApiError {
    fn from(e: PolicyError) -> Self {
        ApiError::new(e.code(), e.to_string())
    }
}

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

/// The request's options, then one "<redacted>" per sensitive option, with secrets
/// replaced: an option equal to a sensitive one becomes "<redacted>", and within
/// each comma-separated piece `KEY=value` whose key is sensitive (case-insensitive)
/// the value becomes "<redacted>".
pub fn redacted_options(req: &MountRequest) -> Vec<String> {
    let plain = req.options.iter().map(|o| {
        if req.sensitive_options.contains(o) {
            REDACTED.to_owned()
        } else {
            o.split(',')
                .map(|piece| match secret(piece) {
                    Some((key, _)) => format!("{key}={REDACTED}"),
                    None => piece.to_owned(),
                })
                .collect::<Vec<_>>()
                .join(",")
        }
    });
    let sensitive = req.sensitive_options.iter().map(|_| REDACTED.to_owned());
    plain.chain(sensitive).collect()
}

/// Removes every secret value (values of sensitive-key options, and each whole
/// caller-marked sensitive option and its value parts) from free text, e.g. an
/// executor's output or an error message, replacing it with "<redacted>". Empty
/// values are not replaced.
pub fn scrub(req: &MountRequest, text: &str) -> String {
    let keyed = req
        .options
        .iter()
        .chain(&req.sensitive_options)
        .flat_map(|o| o.split(','))
        .filter_map(|piece| secret(piece).map(|(_, value)| value));
    let marked = req.sensitive_options.iter().flat_map(|o| {
        let values = o.split(',').filter_map(|piece| piece.split_once('='));
        std::iter::once(o.as_str()).chain(values.map(|(_, value)| value))
    });
    let mut secrets: Vec<&str> = keyed.chain(marked).filter(|s| !s.is_empty()).collect();
    // Longest first, so that no part of a longer secret survives a shorter one.
    secrets.sort_by_key(|s| std::cmp::Reverse(s.len()));
    secrets.iter().fold(text.to_owned(), |text, secret| {
        text.replace(secret, REDACTED)
    })
}

/// Key and value of one option piece `KEY=value` whose key is sensitive.
fn secret(piece: &str) -> Option<(&str, &str)> {
    let (key, value) = piece.split_once('=')?;
    SENSITIVE_KEYS
        .iter()
        .any(|k| k.eq_ignore_ascii_case(key))
        .then_some((key, value))
}

/// The syntax of every field: lengths, NUL and newlines, option injection through the
/// source, the filesystem type's alphabet.
fn check_fields(req: &MountRequest) -> Result<(), PolicyError> {
    check_target_bytes(&req.target)?;
    check_len(req.source.len(), MAX_FIELD, "source")?;
    check_bytes(req.source.as_bytes(), || format!("source {:?}", req.source))?;
    if req.source.starts_with('-') {
        return Err(PolicyError::DashSource {
            value: req.source.clone(),
        });
    }
    check_fstype(&req.fstype)?;
    check_options(req)
}

fn check_target_bytes(target: &Path) -> Result<(), PolicyError> {
    let bytes = target.as_os_str().as_bytes();
    check_len(bytes.len(), MAX_FIELD, "target")?;
    check_bytes(bytes, || format!("target {target:?}"))
}

/// No type (mount(8) finds it), or one [`FsType`] accepts: the alphabet the
/// configuration's types are held to.
pub fn check_fstype(fstype: &str) -> Result<(), PolicyError> {
    if fstype.is_empty() {
        return Ok(());
    }
    check_len(fstype.len(), FsType::MAX_LEN, "filesystem type")?;
    check_bytes(fstype.as_bytes(), || format!("filesystem type {fstype:?}"))?;
    FsType::new(fstype).map_err(|_| PolicyError::BadFstype {
        fstype: fstype.to_owned(),
    })?;
    Ok(())
}

/// Options are named by kind and 1-based position, never by value.
fn check_options(req: &MountRequest) -> Result<(), PolicyError> {
    let count = req.options.len() + req.sensitive_options.len();
    if count > MAX_OPTIONS {
        return Err(PolicyError::TooManyOptions { count });
    }
    for (kind, list) in [
        ("option", &req.options),
        ("sensitive option", &req.sensitive_options),
    ] {
        for (i, option) in list.iter().enumerate() {
            let field = format!("{kind} {}", i + 1);
            if option.is_empty() {
                return Err(PolicyError::EmptyOption { field });
            }
            check_len(option.len(), MAX_FIELD, &field)?;
            check_bytes(option.as_bytes(), || field.clone())?;
        }
    }
    Ok(())
}

fn check_len(len: usize, max: usize, field: &str) -> Result<(), PolicyError> {
    if len > max {
        return Err(PolicyError::TooLong {
            field: field.to_owned(),
            len,
            max,
        });
    }
    Ok(())
}

/// Refuses NUL and newline; `field` names the value in the message.
fn check_bytes(value: &[u8], field: impl FnOnce() -> String) -> Result<(), PolicyError> {
    let what = if value.contains(&0) {
        "a NUL byte"
    } else if value.contains(&b'\n') {
        "a newline"
    } else {
        return Ok(());
    };
    Err(PolicyError::BadCharacter {
        field: field(),
        what,
    })
}

/// Checks that `path` lies strictly below one of `roots` and resolves it from there
/// without following any symlink; `dir`: it must be a directory. Returns the
/// normalized path. The roots themselves are trusted configuration and are opened
/// normally.
fn resolve(
    what: &'static str,
    path: &Path,
    roots: &[PathBuf],
    dir: bool,
) -> Result<PathBuf, PolicyError> {
    if !path.is_absolute() {
        return Err(PolicyError::NotAbsolute {
            what,
            path: path.to_owned(),
        });
    }
    if path.components().any(|c| c == Component::ParentDir) {
        return Err(PolicyError::DotDot {
            what,
            path: path.to_owned(),
        });
    }
    let path = normalize(path);
    let roots: Vec<PathBuf> = roots.iter().map(|r| normalize(r)).collect();
    let below = roots.iter().find_map(|root| {
        let rest = path.strip_prefix(root).ok()?;
        (!rest.as_os_str().is_empty()).then_some((root, rest))
    });
    let Some((root, rest)) = below else {
        return Err(if roots.contains(&path) {
            PolicyError::IsRoot { what, path }
        } else {
            PolicyError::OutsideRoots { what, path, roots }
        });
    };
    match beneath(root, rest, dir) {
        Ok(()) => Ok(path),
        Err(Fault::Root(errno)) => Err(PolicyError::Unresolvable {
            what: "allowed root",
            path: root.clone(),
            errno,
        }),
        Err(Fault::Errno(errno)) => Err(PolicyError::Unresolvable { what, path, errno }),
        Err(Fault::Missing) => Err(PolicyError::Missing { what, path }),
        Err(Fault::Symlink(component)) => Err(PolicyError::Symlink {
            what,
            path,
            component,
        }),
        Err(Fault::NotADirectory(component)) => Err(PolicyError::NotADirectory {
            what,
            path,
            component,
        }),
    }
}

/// Why `rest` could not be resolved below its root.
#[derive(Debug, PartialEq, Eq)]
enum Fault {
    /// The root itself cannot be opened.
    Root(Errno),
    Missing,
    Symlink(String),
    NotADirectory(String),
    Errno(Errno),
}

/// Opens `rest` (relative, normalized, no `..`) below `root` with openat2, which
/// refuses symlinks and escapes in the kernel. When openat2 fails, for whatever
/// reason (missing before Linux 5.6 or filtered by seccomp, or a refusal), the walk
/// resolves again one component at a time: it is as strict, and names the component
/// at fault.
fn beneath(root: &Path, rest: &Path, dir: bool) -> Result<(), Fault> {
    let root = open(
        root,
        OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
        Mode::empty(),
    )
    .map_err(Fault::Root)?;
    let mut flags = OFlag::O_PATH | OFlag::O_CLOEXEC;
    if dir {
        flags |= OFlag::O_DIRECTORY;
    }
    let how = OpenHow::new().flags(flags).resolve(
        ResolveFlag::RESOLVE_BENEATH
            | ResolveFlag::RESOLVE_NO_SYMLINKS
            | ResolveFlag::RESOLVE_NO_MAGICLINKS,
    );
    match openat2(&root, rest, how) {
        Ok(_) => Ok(()),
        Err(_) => walk(&root, rest, dir),
    }
}

/// Opens each component of `rest` relative to the previous one with O_NOFOLLOW
/// (which with O_PATH yields the symlink itself), and refuses symlinks and
/// non-directories on the way.
fn walk(root: &OwnedFd, rest: &Path, dir: bool) -> Result<(), Fault> {
    let names: Vec<&OsStr> = rest.iter().collect();
    let mut current: Option<OwnedFd> = None;
    for (i, name) in names.iter().enumerate() {
        let parent = current.as_ref().unwrap_or(root);
        let flags = OFlag::O_PATH | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC;
        let fd = openat(parent, *name, flags, Mode::empty()).map_err(|e| match e {
            Errno::ENOENT => Fault::Missing,
            e => Fault::Errno(e),
        })?;
        let mode = fstat(&fd).map_err(Fault::Errno)?.st_mode;
        let kind = SFlag::from_bits_truncate(mode) & SFlag::S_IFMT;
        let component = || name.to_string_lossy().into_owned();
        if kind == SFlag::S_IFLNK {
            return Err(Fault::Symlink(component()));
        }
        let last = i + 1 == names.len();
        if kind != SFlag::S_IFDIR && (dir || !last) {
            return Err(Fault::NotADirectory(component()));
        }
        current = Some(fd);
    }
    Ok(())
}

fn comma_list<T: fmt::Display>(items: impl Iterator<Item = T>) -> String {
    items.map(|i| i.to_string()).collect::<Vec<_>>().join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;

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

    fn secret_request() -> MountRequest {
        MountRequest {
            source: "//server/share".into(),
            target: "/k/pods/x".into(),
            fstype: "cifs".into(),
            options: vec![
                "rw,password=hunter2".into(),
                "Key=abc".into(),
                "uid=1000".into(),
                "domain=corp".into(),
            ],
            sensitive_options: vec!["user=alice,pin=4242".into()],
            caller_pid: None,
            timeout_seconds: None,
        }
    }

    #[test]
    fn redacts_sensitive_options() {
        let mut req = secret_request();
        // An option the caller marked sensitive is hidden whole, wherever it appears.
        req.options.push("domain=corp".into());
        req.sensitive_options.push("domain=corp".into());
        assert_eq!(
            redacted_options(&req),
            vec![
                "rw,password=<redacted>",
                "Key=<redacted>",
                "uid=1000",
                "<redacted>",
                "<redacted>",
                "<redacted>",
                "<redacted>",
            ]
        );
    }

    #[test]
    fn scrubs_secrets_from_text() {
        let req = secret_request();
        assert_eq!(
            scrub(&req, "mount error: password=hunter2 failed"),
            "mount error: password=<redacted> failed"
        );
        let text = "opts user=alice,pin=4242 key abc, pin 4242 for alice; uid=1000 domain=corp";
        assert_eq!(
            scrub(&req, text),
            "opts <redacted> key <redacted>, pin <redacted> for <redacted>; uid=1000 domain=corp"
        );
        // Empty values are not secrets to hunt for.
        let mut empty = secret_request();
        empty.options = vec!["password=".into()];
        empty.sensitive_options.clear();
        assert_eq!(scrub(&empty, "password= is empty"), "password= is empty");
    }
}
