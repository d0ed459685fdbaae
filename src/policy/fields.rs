//! The syntax of a request's fields, checked before anything is resolved: lengths,
//! NUL and newlines, option injection through the source, the filesystem type's
//! alphabet.

use std::os::unix::ffi::OsStrExt;
use std::path::Path;

use crate::api::fstype::FsType;
use crate::api::wire::MountRequest;
use crate::policy::PolicyError;

/// Most options (plain and sensitive together) one request may carry.
pub(super) const MAX_OPTIONS: usize = 64;
/// Longest source, target or single option, in bytes (PATH_MAX).
const MAX_FIELD: usize = 4096;

/// The syntax of every field: lengths, NUL and newlines, option injection through the
/// source, the filesystem type's alphabet.
pub(super) fn check_fields(req: &MountRequest) -> Result<(), PolicyError> {
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

pub(super) fn check_target_bytes(target: &Path) -> Result<(), PolicyError> {
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
    // A list (`xfs,ext4`) leaves the type to be probed among those named.
    for one in fstype.split(',') {
        FsType::new(one).map_err(|_| PolicyError::BadFstype {
            fstype: fstype.to_owned(),
        })?;
    }
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
