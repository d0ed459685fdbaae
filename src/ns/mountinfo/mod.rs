//! `/proc/<pid>/mountinfo`, parsed exactly: the single source of truth for what is
//! mounted where, in which namespace, and with which propagation.

mod parse;
mod proc_root;

use std::collections::HashMap;
use std::ffi::OsString;
use std::fmt;
use std::io::{self, Read};
use std::path::{Component, Path, PathBuf};

use serde::Serialize;

pub use parse::{escape, unescape};
pub use proc_root::ProcRoot;

use parse::parse_line;

/// How many times a table is read before two reads must agree.
const MAX_READS: usize = 10;

#[derive(Debug, thiserror::Error)]
pub enum MountinfoError {
    #[error("cannot read {path}: {source}")]
    Read { path: PathBuf, source: io::Error },
    #[error("{path} line {line}: {reason}")]
    Malformed {
        path: PathBuf,
        line: usize,
        reason: String,
    },
    #[error("{path} kept changing: no two of {MAX_READS} reads agreed")]
    Unstable { path: PathBuf },
}
/// The propagation fields of one mount (optional fields of mountinfo, see
/// `proc_pid_mountinfo(5)`). A mount can be shared and a slave at once.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Propagation {
    /// `shared:N`: member of peer group N.
    pub shared: Option<u32>,
    /// `master:N`: slave of peer group N.
    pub master: Option<u32>,
    /// `propagate_from:N`: nearest dominant peer group visible in this namespace.
    pub propagate_from: Option<u32>,
    /// `unbindable`.
    pub unbindable: bool,
}

impl Propagation {
    /// Neither shared nor a slave.
    pub fn is_private(&self) -> bool {
        self.shared.is_none() && self.master.is_none()
    }
}

/// The words findmnt's PROPAGATION column uses: `shared` or `private`, then
/// `,slave` and `,unbindable` when they apply.
impl fmt::Display for Propagation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(if self.shared.is_some() {
            "shared"
        } else {
            "private"
        })?;
        if self.master.is_some() {
            f.write_str(",slave")?;
        }
        if self.unbindable {
            f.write_str(",unbindable")?;
        }
        Ok(())
    }
}

/// One line of mountinfo, with every escaped field decoded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mount {
    pub id: u32,
    pub parent: u32,
    pub major: u32,
    pub minor: u32,
    /// The path inside the filesystem that is mounted (not `/` for bind mounts).
    pub root: PathBuf,
    pub target: PathBuf,
    pub options: String,
    pub propagation: Propagation,
    pub fstype: String,
    pub source: OsString,
    pub super_options: String,
}

impl Mount {
    /// Whether `path` (absolute, normalized) lies in this mount's subtree, by whole
    /// path components: `/var/lib/kube` does not contain `/var/lib/kubelet`.
    pub fn contains(&self, path: &Path) -> bool {
        path.starts_with(&self.target)
    }

    /// Whether this is `original`'s filesystem directory, mounted in another
    /// namespace: the same device and root, or a member or slave of the peer
    /// group `original` made, which only its propagated copies join. The root
    /// alone can differ between two reads: it is the path of a directory a pod
    /// may rename meanwhile.
    pub fn is_copy_of(&self, original: &Mount) -> bool {
        let peers = original.propagation.shared.is_some_and(|g| {
            self.propagation.shared == Some(g) || self.propagation.master == Some(g)
        });
        (self.major, self.minor) == (original.major, original.minor)
            && (self.root == original.root || peers)
    }
}

/// A consistent snapshot of one namespace's mount table, in kernel order (a later
/// entry on the same target covers an earlier one).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MountTable {
    pub mounts: Vec<Mount>,
}

impl MountTable {
    /// Reads the table of `pid` (`None`: this process) under `proc`, so that a table
    /// changing while it is read is never half seen.
    pub fn read(proc: &ProcRoot, pid: Option<u32>) -> Result<Self, MountinfoError> {
        Self::read_path(&proc.mountinfo(pid))
    }

    /// The kernel makes each read(2) of mountinfo under the namespace lock, so a
    /// table that came in one read is a snapshot; a longer one is read again until
    /// two reads agree.
    pub fn read_path(path: &Path) -> Result<Self, MountinfoError> {
        let parse = |text: &[u8]| Self::parse(text).map_err(|e| e.at(path));
        let (mut previous, snapshot) = read_counting(path)?;
        if snapshot {
            return parse(&previous);
        }
        for _ in 1..MAX_READS {
            let (current, _) = read_counting(path)?;
            if current == previous {
                return parse(&current);
            }
            previous = current;
        }
        Err(MountinfoError::Unstable {
            path: path.to_owned(),
        })
    }

    /// Parses mountinfo text. Errors name the 1-based line and what is wrong,
    /// including a mount id listed twice or parent ids that form a cycle: every walk
    /// over the parents of a table that parsed ends.
    pub fn parse(text: &[u8]) -> Result<Self, LineError> {
        let lines: Vec<(usize, Mount)> = text
            .split(|&b| b == b'\n')
            .enumerate()
            .filter(|(_, line)| !line.is_empty())
            .map(|(i, line)| {
                let line_error = |reason| LineError {
                    line: i + 1,
                    reason,
                };
                parse_line(line).map(|m| (i + 1, m)).map_err(line_error)
            })
            .collect::<Result<_, _>>()?;
        check_links(&lines)?;
        Ok(MountTable {
            mounts: lines.into_iter().map(|(_, m)| m).collect(),
        })
    }

    /// The mount that holds `path`. Of the mounts whose targets are whole-component
    /// prefixes of it, follow parent ids from the namespace root down. Among the
    /// children of one mount, the one with the shortest target hides the others (a
    /// deeper one mounted after it would be its child, not its sibling), and of
    /// mounts on one target the latest wins. Kernel order alone is not enough:
    /// after a pivot the root can be listed after its children.
    pub fn containing(&self, path: &Path) -> Option<&Mount> {
        let path = normalize(path);
        let chain: Vec<&Mount> = self.mounts.iter().filter(|m| m.contains(&path)).collect();
        let deepest_child = |parent: Option<u32>| {
            chain
                .iter()
                .copied()
                .filter(|m| match parent {
                    Some(id) => m.parent == id && m.id != id,
                    None => !chain.iter().any(|p| p.id == m.parent && p.id != m.id),
                })
                .rev()
                .min_by_key(|m| m.target.as_os_str().len())
        };
        let mut holder = deepest_child(None)?;
        // Each mount at most once: a table not read by `parse` may hold a cycle.
        let mut seen = vec![holder.id];
        while let Some(child) = deepest_child(Some(holder.id)) {
            if seen.contains(&child.id) {
                break;
            }
            seen.push(child.id);
            holder = child;
        }
        Some(holder)
    }

    /// The visible mount whose target is exactly `path`.
    pub fn by_target(&self, path: &Path) -> Option<&Mount> {
        self.containing(path)
            .filter(|m| m.target == normalize(path))
    }

    pub fn by_id(&self, id: u32) -> Option<&Mount> {
        self.mounts.iter().find(|m| m.id == id)
    }

    pub fn is_mount_point(&self, path: &Path) -> bool {
        self.by_target(path).is_some()
    }

    /// The peer group the mount holding `path` belongs to, if it is shared.
    pub fn peer_group(&self, path: &Path) -> Option<u32> {
        self.containing(path).and_then(|m| m.propagation.shared)
    }

    /// Every other mount point that shows the same directory of the same filesystem
    /// as `path` (same device and root), like mount-utils' GetMountRefs. `path` may be
    /// a mount point or a directory inside one (a bind source).
    pub fn refs(&self, path: &Path) -> Vec<PathBuf> {
        let path = normalize(path);
        let Some(holder) = self.containing(&path) else {
            return Vec::new();
        };
        let inside = path.strip_prefix(&holder.target).unwrap_or(Path::new(""));
        let root = if inside.as_os_str().is_empty() {
            holder.root.clone()
        } else {
            holder.root.join(inside)
        };
        self.mounts
            .iter()
            .filter(|m| (m.major, m.minor) == (holder.major, holder.minor) && m.root == root)
            .filter(|m| m.target != path)
            .map(|m| m.target.clone())
            .collect()
    }
}

/// A parse failure, before the file it came from is known.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("line {line}: {reason}")]
pub struct LineError {
    pub line: usize,
    pub reason: String,
}

impl LineError {
    fn at(self, path: &Path) -> MountinfoError {
        MountinfoError::Malformed {
            path: path.to_owned(),
            line: self.line,
            reason: self.reason,
        }
    }
}

/// Each mount id once, and no cycle of parent ids (a mount that is its own parent,
/// as the initial rootfs may be, ends a walk and is no cycle). `lines`: each mount
/// with its line number.
fn check_links(lines: &[(usize, Mount)]) -> Result<(), LineError> {
    let mut index: HashMap<u32, usize> = HashMap::with_capacity(lines.len());
    for (i, (line, m)) in lines.iter().enumerate() {
        if let Some(&first) = index.get(&m.id) {
            return Err(LineError {
                line: *line,
                reason: format!(
                    "mount id {} is listed twice (line {} too)",
                    m.id, lines[first].0
                ),
            });
        }
        index.insert(m.id, i);
    }
    // 0: not walked yet, 1: on the walk under way, 2: its walk ended.
    let mut state = vec![0u8; lines.len()];
    for start in 0..lines.len() {
        let mut walk = Vec::new();
        let mut i = start;
        while state[i] == 0 {
            state[i] = 1;
            walk.push(i);
            match index.get(&lines[i].1.parent) {
                Some(&parent) if parent != i => i = parent,
                _ => break,
            }
        }
        // Back at a mount of this walk other than where it stopped: a cycle.
        if state[i] == 1 && walk.last() != Some(&i) {
            let from = walk.iter().position(|&j| j == i).unwrap_or(0);
            let ids: Vec<String> = walk[from..]
                .iter()
                .chain(std::iter::once(&i))
                .map(|&j| lines[j].1.id.to_string())
                .collect();
            return Err(LineError {
                line: lines[i].0,
                reason: format!("parent ids form a cycle: {}", ids.join(" -> ")),
            });
        }
        for j in walk {
            state[j] = 2;
        }
    }
    Ok(())
}

/// Lexical normalization: drops `.` and trailing slashes. `..` is kept (callers that
/// accept untrusted paths refuse it before they get here).
pub fn normalize(path: &Path) -> PathBuf {
    path.components()
        .filter(|c| !matches!(c, Component::CurDir))
        .collect()
}
/// The whole file, and whether it came in a single read(2).
fn read_counting(path: &Path) -> Result<(Vec<u8>, bool), MountinfoError> {
    let error = |source| MountinfoError::Read {
        path: path.to_owned(),
        source,
    };
    let mut file = std::fs::File::open(path).map_err(error)?;
    let mut buf = Vec::new();
    let mut reads = 0;
    loop {
        let start = buf.len();
        buf.resize(start + 64 * 1024, 0);
        let read = file.read(&mut buf[start..]);
        buf.truncate(start + read.as_ref().map_or(0, |n| *n));
        match read {
            Ok(0) => return Ok((buf, reads <= 1)),
            Ok(_) => reads += 1,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(error(e)),
        }
    }
}
#[cfg(test)]
pub mod fixture {
    //! Proc roots made of files, for tests of what reads them.
    use super::ProcRoot;

    /// A table of one mount: the root filesystem.
    pub const PLAIN: &str = "27 1 254:0 / / rw - ext4 /dev/vda rw\n";

    /// A proc root whose `self/mountinfo` is `table`.
    pub fn proc_with(table: &str) -> (tempfile::TempDir, ProcRoot) {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("self")).unwrap();
        std::fs::write(dir.path().join("self/mountinfo"), table).unwrap();
        let proc = ProcRoot::new(dir.path());
        (dir, proc)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SAMPLE: &str = "\
22 27 0:21 / /proc rw,relatime - proc proc rw
27 1 254:0 / / rw,relatime shared:1 - ext4 /dev/vda rw
30 27 0:40 / /var/lib/kubelet rw,relatime shared:7 master:3 - tmpfs tmpfs rw
31 30 0:41 / /var/lib/kubelet/pods/a\\040b\\011c\\012d\\134e rw master:9 propagate_from:2 - tmpfs my\\040src rw
32 27 254:0 /srv/data /mnt/bind rw unbindable - ext4 /dev/vda rw
33 27 0:40 /pods /mnt/kube rw shared:7 unbindable - tmpfs tmpfs rw
34 27 254:0 /srv/data /mnt/bind2 rw - ext4 /dev/vda rw
";

    fn sample() -> MountTable {
        MountTable::parse(SAMPLE.as_bytes()).unwrap()
    }

    #[test]
    fn decodes_escapes_in_targets_and_sources() {
        let t = sample();
        let m = t.by_id(31).unwrap();
        assert_eq!(m.target, Path::new("/var/lib/kubelet/pods/a b\tc\nd\\e"));
        assert_eq!(m.source, "my src");
        assert_eq!(m.root, Path::new("/"));
        assert_eq!(unescape(b"caf\\303\\251").unwrap(), "café".as_bytes());
    }

    #[test]
    fn models_every_propagation_form() {
        let t = sample();
        let p = |id| t.by_id(id).unwrap().propagation;
        assert!(p(22).is_private());
        assert_eq!(p(22).to_string(), "private");
        assert_eq!(p(27).shared, Some(1));
        assert_eq!(p(27).to_string(), "shared");
        assert_eq!((p(30).shared, p(30).master), (Some(7), Some(3)));
        assert_eq!(p(30).to_string(), "shared,slave");
        assert_eq!((p(31).master, p(31).propagate_from), (Some(9), Some(2)));
        assert_eq!(p(31).to_string(), "private,slave");
        assert!(p(32).unbindable && p(32).is_private());
        assert_eq!(p(32).to_string(), "private,unbindable");
        assert_eq!(p(33).to_string(), "shared,unbindable");
    }

    #[test]
    fn containing_matches_whole_components_and_prefers_later_mounts() {
        let t = sample();
        let id = |p: &str| t.containing(Path::new(p)).map(|m| m.id);
        assert_eq!(id("/var/lib/kubelet/pods/x"), Some(30));
        assert_eq!(id("/var/lib/kubelet"), Some(30));
        assert_eq!(id("/var/lib/kubelet/"), Some(30));
        assert_eq!(id("/var/lib/kube"), Some(27));
        assert_eq!(id("/var/lib/kubeletx"), Some(27));
        assert_eq!(id("/proc/1"), Some(22));
        assert!(t.is_mount_point(Path::new("/var/lib/kubelet")));
        assert!(!t.is_mount_point(Path::new("/var/lib")));
        assert_eq!(t.peer_group(Path::new("/var/lib/kubelet/pods")), Some(7));
        assert_eq!(t.peer_group(Path::new("/proc")), None);
    }

    #[test]
    fn overmounts_hide_what_lies_beneath() {
        // 40 and 41 are stacked on /var/lib/kubelet; 50 is mounted over /var later
        // and hides both.
        let t = MountTable::parse(
            b"40 27 0:50 / /var/lib/kubelet rw shared:3 - tmpfs a rw\n\
              27 1 254:0 / / rw - ext4 /dev/vda rw\n\
              41 40 0:51 / /var/lib/kubelet rw - tmpfs b rw\n",
        )
        .unwrap();
        assert_eq!(
            t.containing(Path::new("/var/lib/kubelet/x")).unwrap().id,
            41
        );
        assert_eq!(t.peer_group(Path::new("/var/lib/kubelet")), None);
        let mut hidden = t.clone();
        hidden.mounts.extend(
            MountTable::parse(b"50 27 0:52 / /var rw - tmpfs c rw\n")
                .unwrap()
                .mounts,
        );
        assert_eq!(
            hidden
                .containing(Path::new("/var/lib/kubelet/x"))
                .unwrap()
                .id,
            50
        );
        assert!(!hidden.is_mount_point(Path::new("/var/lib/kubelet")));
    }

    #[test]
    fn refs_find_mounts_of_the_same_source_and_root() {
        let t = sample();
        assert_eq!(
            t.refs(Path::new("/mnt/bind")),
            vec![PathBuf::from("/mnt/bind2")]
        );
        // A directory that is the source of a bind mount.
        assert_eq!(
            t.refs(Path::new("/var/lib/kubelet/pods")),
            vec![PathBuf::from("/mnt/kube")]
        );
        assert_eq!(t.refs(Path::new("/proc")), Vec::<PathBuf>::new());
    }

    #[test]
    fn malformed_lines_name_the_line_and_the_fault() {
        let cases: &[(&str, &str)] = &[
            (
                "x 1 0:1 / / rw - tmpfs t rw",
                "mount id \"x\" is not a number",
            ),
            (
                "1 1 01 / / rw - tmpfs t rw",
                "major:minor \"01\" has no ':'",
            ),
            (
                "1 1 0:1 / / rw shared:1 tmpfs t rw",
                "missing separator '-'",
            ),
            (
                "1 1 0:1 / / rw shared:x - tmpfs t rw",
                "shared peer group \"x\" is not a number",
            ),
            ("1 1 0:1 /a\\04 / rw - tmpfs t rw", "bad escape at byte 2"),
            ("1 1 0:1 / / rw - tmpfs", "missing mount source"),
            ("1 1 0:1 /", "missing mount point"),
            ("1 1 0:1 /  rw - tmpfs t rw", "missing mount point"),
        ];
        for (line, want) in cases {
            let text = format!("{}{line}\n", SAMPLE);
            let err = MountTable::parse(text.as_bytes()).unwrap_err();
            assert_eq!(err.line, 8, "{line}");
            assert!(
                err.reason.contains(want),
                "{line}: got {:?}, want {want:?}",
                err.reason
            );
        }
    }

    #[test]
    fn reads_own_table() {
        let t = MountTable::read(&ProcRoot::default(), None).unwrap();
        assert!(t.containing(Path::new("/")).is_some());
        let err = MountTable::read(&ProcRoot::new("/nonexistent-proc"), Some(1)).unwrap_err();
        assert!(
            err.to_string().contains("/nonexistent-proc/1/mountinfo"),
            "{err}"
        );
    }

    #[test]
    fn a_table_in_one_read_is_taken_whole_and_a_longer_one_twice() {
        let dir = tempfile::tempdir().unwrap();
        let line = "36 35 98:0 /mnt1 /mnt/x rw,noatime master:1 - ext3 /dev/root rw\n";
        let short = dir.path().join("short");
        std::fs::write(&short, line).unwrap();
        assert_eq!(
            read_counting(&short).unwrap(),
            (line.as_bytes().to_vec(), true)
        );
        // A regular file gives at most the buffer per read(2), as mountinfo gives a
        // page: this one takes several.
        let long = dir.path().join("long");
        let lines: String = (0..2000)
            .map(|i| line.replacen("36", &(10_000 + i).to_string(), 1))
            .collect();
        std::fs::write(&long, &lines).unwrap();
        let (text, snapshot) = read_counting(&long).unwrap();
        assert_eq!((text.len(), snapshot), (lines.len(), false));
        assert_eq!(MountTable::read_path(&long).unwrap().mounts.len(), 2000);
    }

    #[test]
    fn duplicated_ids_and_parent_cycles_are_refused_by_name() {
        // 40 -> 41 -> 42 -> 41: a duplicated id would make the walk down loop.
        let cyclic = "27 1 254:0 / / rw - ext4 /dev/vda rw\n\
                      41 42 0:5 / /a rw - tmpfs t rw\n\
                      42 41 0:6 / /a/b rw - tmpfs t rw\n";
        let err = MountTable::parse(cyclic.as_bytes()).unwrap_err();
        assert_eq!(err.line, 2, "{err}");
        assert_eq!(err.reason, "parent ids form a cycle: 41 -> 42 -> 41");
        let twice = "27 1 254:0 / / rw - ext4 /dev/vda rw\n\
                     41 27 0:5 / /a rw - tmpfs t rw\n\
                     42 41 0:6 / /a/b rw - tmpfs t rw\n\
                     41 42 0:7 / /a/b/c rw - tmpfs t rw\n";
        let err = MountTable::parse(twice.as_bytes()).unwrap_err();
        assert_eq!(
            (err.line, err.reason.as_str()),
            (4, "mount id 41 is listed twice (line 2 too)")
        );
        // Read from a proc root, the error names the file too.
        let (_dir, proc) = fixture::proc_with(twice);
        let err = MountTable::read(&proc, None).unwrap_err().to_string();
        assert!(err.contains("self/mountinfo line 4: mount id 41"), "{err}");
        // A rootfs that is its own parent is no cycle.
        let rootfs = "1 1 0:2 / / rw - rootfs rootfs rw\n27 1 254:0 / / rw - ext4 /dev/vda rw\n";
        let t = MountTable::parse(rootfs.as_bytes()).unwrap();
        assert_eq!(t.containing(Path::new("/x")).unwrap().id, 27);
        // A table made by hand with such a cycle still ends a walk.
        let mut lines = twice.lines();
        let mounts = lines
            .by_ref()
            .map(|l| parse::parse_line(l.as_bytes()).unwrap())
            .collect();
        let t = MountTable { mounts };
        assert!(t.containing(Path::new("/a/b/c/d")).is_some());
    }
}
