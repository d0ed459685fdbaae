//! A filesystem type as mount(8) names it (`nfs4`, `fuse.sshfs`): one alphabet,
//! checked in one place, for the configuration, the requests and install-helpers,
//! so a type the configuration accepts is a type a request can name.

use std::fmt;

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FsTypeError {
    #[error("a filesystem type cannot be empty")]
    Empty,
    #[error("filesystem type is {len} bytes long, more than {}", FsType::MAX_LEN)]
    TooLong { len: usize },
    #[error("filesystem type {fstype:?} has characters other than [a-z0-9._+-]")]
    Alphabet { fstype: String },
}

/// A non-empty filesystem type of at most [`FsType::MAX_LEN`] bytes of
/// `[a-z0-9._+-]`: one file name in a helper directory (`mount.TYPE`), one
/// argument of `-t`, never an option or a path.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct FsType(String);

impl FsType {
    pub const MAX_LEN: usize = 64;

    pub fn new(fstype: &str) -> Result<FsType, FsTypeError> {
        if fstype.is_empty() {
            return Err(FsTypeError::Empty);
        }
        if fstype.len() > Self::MAX_LEN {
            return Err(FsTypeError::TooLong { len: fstype.len() });
        }
        let allowed = |b: u8| matches!(b, b'a'..=b'z' | b'0'..=b'9' | b'.' | b'_' | b'+' | b'-');
        if !fstype.bytes().all(allowed) {
            return Err(FsTypeError::Alphabet {
                fstype: fstype.to_owned(),
            });
        }
        Ok(FsType(fstype.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The main type of a type with a subtype (`fuse` of `fuse.sshfs`), which is
    /// what mountinfo reports and umount(8) looks helpers up by.
    pub fn main(&self) -> Option<&str> {
        self.0.split_once('.').map(|(main, _subtype)| main)
    }
}

impl TryFrom<String> for FsType {
    type Error = FsTypeError;

    fn try_from(s: String) -> Result<Self, Self::Error> {
        FsType::new(&s)
    }
}

impl From<FsType> for String {
    fn from(t: FsType) -> String {
        t.0
    }
}

impl std::str::FromStr for FsType {
    type Err = FsTypeError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        FsType::new(s)
    }
}

impl fmt::Display for FsType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl PartialEq<str> for FsType {
    fn eq(&self, other: &str) -> bool {
        self.0 == other
    }
}

impl PartialEq<&str> for FsType {
    fn eq(&self, other: &&str) -> bool {
        self.0 == *other
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_alphabet_for_every_type() {
        for good in ["ext4", "fuse.sshfs", "nfs4", "ceph_x+y-z", &"a".repeat(64)] {
            assert_eq!(FsType::new(good).unwrap().as_str(), good);
        }
        for bad in ["NFS", "a b", "fuse/x", "nfs,nfs4", "tmp\0fs", "x\ny"] {
            assert_eq!(
                FsType::new(bad),
                Err(FsTypeError::Alphabet { fstype: bad.into() }),
                "{bad:?}"
            );
        }
        assert_eq!(FsType::new(""), Err(FsTypeError::Empty));
        assert_eq!(
            FsType::new(&"a".repeat(65)),
            Err(FsTypeError::TooLong { len: 65 })
        );
    }

    #[test]
    fn a_type_is_checked_when_it_is_read() {
        let t: Vec<FsType> = serde_json::from_str(r#"["nfs", "fuse.sshfs"]"#).unwrap();
        assert_eq!(t, ["nfs", "fuse.sshfs"]);
        assert_eq!((t[0].main(), t[1].main()), (None, Some("fuse")));
        let err = serde_json::from_str::<Vec<FsType>>(r#"["nfs", "NFS"]"#).unwrap_err();
        assert!(
            err.to_string().contains(r#""NFS" has characters other"#),
            "{err}"
        );
        assert_eq!(serde_json::to_string(&t[1]).unwrap(), r#""fuse.sshfs""#);
    }
}
