//! Where a proc filesystem is mounted, and the paths of one process's entries in it.

use std::path::{Path, PathBuf};

/// Where the proc filesystem to read is mounted: `/proc`, or `/host/proc` when the
/// host's is mounted into a container.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProcRoot(PathBuf);

impl Default for ProcRoot {
    fn default() -> Self {
        ProcRoot(PathBuf::from("/proc"))
    }
}

impl ProcRoot {
    pub fn new(path: impl Into<PathBuf>) -> Self {
        ProcRoot(path.into())
    }

    pub fn path(&self) -> &Path {
        &self.0
    }

    /// `<root>/<pid>/mountinfo`, or `<root>/self/mountinfo` for `None`.
    pub fn mountinfo(&self, pid: Option<u32>) -> PathBuf {
        self.of(pid, "mountinfo")
    }

    /// `<root>/<pid>/ns/mnt`: its inode names the mount namespace.
    pub fn mount_namespace(&self, pid: Option<u32>) -> PathBuf {
        self.of(pid, "ns/mnt")
    }

    /// `<root>/<pid>/root`: the root directory of that process.
    pub fn root(&self, pid: u32) -> PathBuf {
        self.of(Some(pid), "root")
    }

    fn of(&self, pid: Option<u32>, entry: &str) -> PathBuf {
        match pid {
            Some(pid) => self.0.join(pid.to_string()).join(entry),
            None => self.0.join("self").join(entry),
        }
    }
}
