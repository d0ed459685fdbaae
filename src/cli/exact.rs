//! Paths are bytes: the argument parsers work on text, so a name that is not
//! UTF-8 reaches them with U+FFFD in place of its bad bytes. Before a request
//! leaves, each path such an argument became is put back exactly as given; a
//! source, which travels as text, is refused with a clear error instead.

use std::ffi::OsString;
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::path::PathBuf;

use super::helper_args::Invocation;

/// The arguments that are not UTF-8, as given and as the parsers saw them.
pub struct Raw(Vec<(OsString, String)>);

impl Raw {
    pub fn of(args: &[OsString]) -> Raw {
        Raw(args
            .iter()
            .filter(|a| a.to_str().is_none())
            .map(|a| (a.clone(), a.to_string_lossy().into_owned()))
            .collect())
    }

    /// `invocation` with its target as given; an error naming a source that is
    /// not UTF-8.
    pub fn restore(&self, mut invocation: Invocation) -> Result<Invocation, String> {
        match &mut invocation {
            Invocation::Mount { request, .. } => {
                if let Some((raw, _)) = self.0.iter().find(|(_, l)| *l == request.source) {
                    return Err(format!(
                        "source {raw:?} is not UTF-8: sources travel as text; only mount points may be any bytes"
                    ));
                }
                request.target = self.exact(&request.target);
            }
            Invocation::Unmount { request, .. } => request.target = self.exact(&request.target),
        }
        Ok(invocation)
    }

    /// `path` with a suffix that is a lossy argument replaced by its bytes.
    fn exact(&self, path: &std::path::Path) -> PathBuf {
        let bytes = path.as_os_str().as_bytes();
        for (raw, lossy) in &self.0 {
            if let Some(head) = bytes.strip_suffix(lossy.as_bytes()) {
                let mut exact = head.to_vec();
                exact.extend_from_slice(raw.as_bytes());
                return PathBuf::from(OsString::from_vec(exact));
            }
        }
        path.to_owned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::wire::{MountRequest, UnmountRequest};
    use std::ffi::OsStr;

    fn bad() -> OsString {
        OsString::from_vec(b"/k/pods/bad\xff".to_vec())
    }

    #[test]
    fn a_target_that_is_not_utf8_is_put_back_exactly() {
        let raw = Raw::of(&[OsString::from("mount"), bad()]);
        let inv = Invocation::Unmount {
            request: UnmountRequest {
                target: PathBuf::from(bad().to_string_lossy().into_owned()),
                ..Default::default()
            },
            verbose: false,
        };
        let Ok(Invocation::Unmount { request, .. }) = raw.restore(inv) else {
            panic!("an unmount");
        };
        assert_eq!(request.target.as_os_str(), bad().as_os_str());
        assert_eq!(OsStr::new("/k/x"), raw.exact(std::path::Path::new("/k/x")));
    }

    #[test]
    fn a_source_that_is_not_utf8_is_refused() {
        let raw = Raw::of(&[bad()]);
        let inv = Invocation::Mount {
            request: MountRequest {
                source: bad().to_string_lossy().into_owned(),
                target: "/k/pods/v".into(),
                ..Default::default()
            },
            fake: false,
            verbose: false,
        };
        let err = raw.restore(inv).unwrap_err();
        assert!(err.contains("is not UTF-8"), "{err}");
    }
}
