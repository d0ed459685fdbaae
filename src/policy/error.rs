//! Why the daemon refuses a request: each refusal names the field or path at fault
//! and maps to a stable wire error code.

use std::fmt;
use std::path::{Path, PathBuf};

use nix::errno::Errno;

use crate::api::wire::{ApiError, ErrorCode};
use crate::policy::fields::MAX_OPTIONS;

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
    #[error("{what} {path} is outside the allowed roots ({}; configuration key `{}`)", comma_list(.roots.iter().map(|r| r.display())), roots_key(.what))]
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
    #[error(transparent)]
    MkdirMode(#[from] crate::mount::options::BadMkdirMode),
    /// A directory bound onto a file, or a file onto a directory, in mount(8)'s
    /// words for what the kernel answers.
    #[error("{}: {}", .target.display(), bind_kind_text(*.source_is_dir))]
    BindKind {
        target: PathBuf,
        source_is_dir: bool,
    },
    /// An unmount of a path that does not exist, in umount(8)'s words.
    #[error("{}: no mount point specified", .path.display())]
    NoMountPoint { path: PathBuf },
    /// What may be mounted: the rule broken and the configuration key that allows it.
    #[error("{}: refused by the {} rule (configuration key `{}` changes it)", .0.detail, .0.rule, .0.key)]
    SourceRefused(crate::policy::sources::Refusal),
    #[error("cannot take fd {fd} of the caller (pid {}): {errno}", .pid.map_or("not visible to the daemon".into(), |p| p.to_string()))]
    CallerFd {
        fd: i32,
        pid: Option<u32>,
        errno: Errno,
    },
    #[error("source {path}: the caller's file is not what that path names below the roots (moved or replaced meanwhile)")]
    NotTheCallersFile { path: PathBuf },
    #[error("source {path}: the device node changed while it was checked")]
    DeviceReplaced { path: PathBuf },
    #[error("source {source_name}: a source given as the caller's file descriptor is taken only for a bind")]
    FdSourceNotBind { source_name: String },
    #[error("cannot resolve {what} {path}: {errno}")]
    Unresolvable {
        what: &'static str,
        path: PathBuf,
        errno: Errno,
    },
}

/// The configuration key that lists the roots a `what` must lie below.
fn roots_key(what: &str) -> &'static str {
    match what {
        "target" => "target_roots",
        _ => "bind_source_roots",
    }
}

/// mount(8)'s words for a bind whose source and target are not of one kind.
fn bind_kind_text(source_is_dir: bool) -> &'static str {
    match source_is_dir {
        true => "mount point is not a directory",
        false => "mount(2) system call failed: Not a directory",
    }
}

/// A missing path reads as mount(8) words it: "/x: mount point does not exist"
/// for a target, "special device /y does not exist" for a source.
fn missing_text(what: &str, path: &Path) -> String {
    match what {
        "target" => format!("{}: mount point does not exist", path.display()),
        "source" => format!("special device {} does not exist", path.display()),
        _ => format!("{what} {} does not exist", path.display()),
    }
}

impl PolicyError {
    pub fn code(&self) -> ErrorCode {
        match self {
            PolicyError::UidNotAllowed { .. } => ErrorCode::Forbidden,
            PolicyError::SourceRefused(_)
            | PolicyError::NotTheCallersFile { .. }
            | PolicyError::DeviceReplaced { .. } => ErrorCode::SourceNotAllowed,
            PolicyError::OutsideRoots { what, .. } if *what != "target" => {
                ErrorCode::SourceNotAllowed
            }
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
            | PolicyError::CallerFd { .. }
            | PolicyError::FdSourceNotBind { .. }
            | PolicyError::Missing { .. }
            | PolicyError::NoMountPoint { .. }
            | PolicyError::BindKind { .. }
            | PolicyError::MkdirMode(_) => ErrorCode::BadRequest,
        }
    }
}

impl From<PolicyError> for ApiError {
    fn from(e: PolicyError) -> Self {
        ApiError::new(e.code(), e.to_string())
    }
}

fn comma_list<T: fmt::Display>(items: impl Iterator<Item = T>) -> String {
    items.map(|i| i.to_string()).collect::<Vec<_>>().join(", ")
}
