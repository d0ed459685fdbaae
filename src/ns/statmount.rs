//! The mount on one path of a namespace at a cost independent of the namespace's
//! table: statx(2) names the mount the path lands on, statmount(2) (Linux 6.8+)
//! gives its mountinfo entry. Callers read mountinfo when this cannot answer (an
//! older kernel, a namespace whose `/proc/<pid>/root` the daemon may not open).

use std::ffi::{OsStr, OsString};
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use nix::errno::Errno;
use nix::fcntl::{open, OFlag};
use nix::sys::stat::Mode;
use rustix::fs::{statx, AtFlags, StatxAttributes, StatxFlags};

use crate::ns::beneath::{in_root, mountinfo_id, on_mount, open_root};
use crate::ns::mountinfo::{normalize, Mount, ProcRoot, Propagation};

#[derive(Debug, thiserror::Error)]
pub enum StatmountError {
    #[error("{step} {path}: {errno}")]
    Call {
        step: &'static str,
        path: PathBuf,
        errno: Errno,
    },
    #[error("the kernel does not report {what} (for {path})")]
    Unsupported { what: &'static str, path: PathBuf },
    #[error("statmount(2) of {path} describes a mount on {found}")]
    Elsewhere { path: PathBuf, found: PathBuf },
}

impl StatmountError {
    /// Whether the namespace's process may not be looked into by this one.
    pub fn refused(&self) -> bool {
        matches!(
            self,
            StatmountError::Call {
                errno: Errno::EACCES | Errno::EPERM,
                ..
            }
        )
    }
}

/// The visible mount whose mount point is exactly `target` in the mount namespace
/// of `pid` under `proc` (`None`: this process's), or `None` when `target` is not
/// a mount point there. Nothing of the mounted filesystem is asked: a hung network
/// server cannot block it.
pub fn mount_at(
    proc: &ProcRoot,
    pid: Option<u32>,
    target: &Path,
) -> Result<Option<Mount>, StatmountError> {
    let target = normalize(target);
    // 1. The namespace's id, by which statmount(2) finds mounts there (0: ours).
    let ns_id = match pid {
        None => 0,
        Some(pid) => mount_namespace_id(proc, Some(pid))?,
    };
    // 2. The target beneath its root, refusing symlinks: mountinfo names mount
    //    points by their literal paths. A missing path holds no mount.
    let Some(fd) = open_in(proc, pid, &target)? else {
        return Ok(None);
    };
    // 3. statx(2): the mount the path landed on, and whether the path is its root.
    //    AT_STATX_DONT_SYNC: attributes from the cache, no request to a server.
    let stx = statx(
        &fd,
        "",
        AtFlags::EMPTY_PATH | AtFlags::STATX_DONT_SYNC,
        StatxFlags::from_bits_retain(STATX_MNT_ID_UNIQUE),
    )
    .map_err(|e| call("statx", &target)(Errno::from_raw(e.raw_os_error())))?;
    let unsupported = |what| StatmountError::Unsupported {
        what,
        path: target.clone(),
    };
    if stx.stx_mask & STATX_MNT_ID_UNIQUE == 0 {
        return Err(unsupported("unique mount ids (statx STATX_MNT_ID_UNIQUE)"));
    }
    if !stx
        .stx_attributes_mask
        .contains(StatxAttributes::MOUNT_ROOT)
    {
        return Err(unsupported("STATX_ATTR_MOUNT_ROOT"));
    }
    if !stx.stx_attributes.contains(StatxAttributes::MOUNT_ROOT) {
        return Ok(None);
    }
    // 4. statmount(2): that mount's entry, as mountinfo would show it there.
    let entry = Entry::read(stx.stx_mnt_id, ns_id).map_err(|e| match e {
        Errno::ENOSYS | Errno::EINVAL => unsupported("statmount(2)"),
        errno => call("statmount", &target)(errno),
    })?;
    let mount = entry
        .mount()
        .ok_or_else(|| unsupported("a whole statmount(2) entry"))?;
    if mount.target != target {
        return Err(StatmountError::Elsewhere {
            path: target,
            found: mount.target,
        });
    }
    Ok(Some(mount))
}

/// The unique id (statx `STATX_MNT_ID_UNIQUE`) of the mount on exactly `target`
/// in the mount namespace of `pid`, when that mount's id there is `id`; `None`
/// when the kernel has no unique ids or another mount (or none) is there.
pub fn unique_id_at(
    proc: &ProcRoot,
    pid: Option<u32>,
    target: &Path,
    id: u32,
) -> Result<Option<u64>, StatmountError> {
    let target = normalize(target);
    let Some(fd) = open_in(proc, pid, &target)? else {
        return Ok(None);
    };
    let on = on_mount(fd.as_fd()).map_err(call("statx", &target))?;
    let found = mountinfo_id(fd.as_fd()).map_err(call("statx", &target))?;
    Ok(Some(on.id).filter(|_| on.unique && on.root && found == id))
}

/// The 64-bit id of the mount namespace of `pid` (`None`: this process's), by
/// `NS_GET_MNTNS_ID` (Linux 6.11): unlike the inode of its `ns/mnt`, never
/// given to another namespace while the machine runs.
pub fn mount_namespace_id(proc: &ProcRoot, pid: Option<u32>) -> Result<u64, StatmountError> {
    let ns = proc.mount_namespace(pid);
    let fd =
        open(&ns, OFlag::O_RDONLY | OFlag::O_CLOEXEC, Mode::empty()).map_err(call("open", &ns))?;
    namespace_id(&fd).map_err(call("NS_GET_MNTNS_ID", &ns))
}

/// A failed call of `step` on `path`.
fn call(step: &'static str, path: &Path) -> impl FnOnce(Errno) -> StatmountError {
    let path = path.to_owned();
    move |errno| StatmountError::Call { step, path, errno }
}

/// `target` (normalized) opened `O_PATH` beneath the root of `pid` (`None`:
/// this process's), from which its processes resolve paths; `None` when the
/// path is missing.
fn open_in(
    proc: &ProcRoot,
    pid: Option<u32>,
    target: &Path,
) -> Result<Option<OwnedFd>, StatmountError> {
    let root = pid.map_or_else(|| PathBuf::from("/"), |pid| proc.root(pid));
    let root_fd = open_root(&root).map_err(call("open", &root))?;
    let fd = match in_root(root_fd.as_fd(), target) {
        Ok(fd) => fd,
        Err(Errno::ENOENT | Errno::ENOTDIR) => return Ok(None),
        Err(errno) => return Err(call("openat2", target)(errno)),
    };
    Ok(Some(fd))
}

/// The mount whose unique id (statx `STATX_MNT_ID_UNIQUE`) is `id`, in this
/// process's mount namespace, as mountinfo would show it; `None` when it is gone
/// (unmounted, or detached). How a mount made through a handle is found wherever
/// it landed.
pub fn by_id(id: u64) -> Result<Option<Mount>, StatmountError> {
    let path = PathBuf::from(format!("mount {id}"));
    match Entry::read(id, 0) {
        Ok(entry) => entry.mount().map(Some).ok_or(StatmountError::Unsupported {
            what: "a whole statmount(2) entry",
            path,
        }),
        Err(Errno::ENOENT) => Ok(None),
        Err(Errno::ENOSYS | Errno::EINVAL) => Err(StatmountError::Unsupported {
            what: "statmount(2)",
            path,
        }),
        Err(errno) => Err(StatmountError::Call {
            step: "statmount",
            path,
            errno,
        }),
    }
}

/// `STATX_MNT_ID_UNIQUE` (Linux 6.8): the 64-bit mount id statmount(2) takes.
const STATX_MNT_ID_UNIQUE: u32 = 0x4000;

// `NS_GET_MNTNS_ID` (linux/nsfs.h, Linux 6.11): the 64-bit id of a mount namespace.
nix::ioctl_read!(ns_get_mntns_id, 0xb7, 0x5, u64);

fn namespace_id(ns: &OwnedFd) -> Result<u64, Errno> {
    let mut id = 0u64;
    // SAFETY: the fd is an open nsfs file and `id` is a u64 the ioctl writes.
    unsafe { ns_get_mntns_id(ns.as_fd().as_raw_fd(), &mut id) }?;
    Ok(id)
}

/// `struct mnt_id_req` (linux/mount.h), in its second published size.
#[repr(C)]
pub(super) struct MntIdReq {
    pub(super) size: u32,
    pub(super) mnt_ns_fd: u32,
    pub(super) mnt_id: u64,
    pub(super) param: u64,
    pub(super) mnt_ns_id: u64,
}

/// The fixed fields of `struct statmount` (linux/mount.h) that sidemount reads;
/// the kernel's struct is `HEADER` bytes long, its strings follow.
#[repr(C)]
#[derive(Clone, Copy)]
struct Header {
    size: u32,
    mnt_opts: u32,
    mask: u64,
    sb_dev_major: u32,
    sb_dev_minor: u32,
    sb_magic: u64,
    sb_flags: u32,
    fs_type: u32,
    mnt_id: u64,
    mnt_parent_id: u64,
    mnt_id_old: u32,
    mnt_parent_id_old: u32,
    mnt_attr: u64,
    mnt_propagation: u64,
    mnt_peer_group: u64,
    mnt_master: u64,
    propagate_from: u64,
    mnt_root: u32,
    mnt_point: u32,
    mnt_ns_id: u64,
    fs_subtype: u32,
    sb_source: u32,
}

/// The size of `struct statmount` before its strings.
const HEADER: usize = 512;
const SYS_STATMOUNT: nix::libc::c_long = 457;

const SB_BASIC: u64 = 0x1;
const MNT_BASIC: u64 = 0x2;
const PROPAGATE_FROM: u64 = 0x4;
const MNT_ROOT: u64 = 0x8;
const MNT_POINT: u64 = 0x10;
const FS_TYPE: u64 = 0x20;
const MNT_OPTS: u64 = 0x80;
const FS_SUBTYPE: u64 = 0x100;
const SB_SOURCE: u64 = 0x200;
/// What a mountinfo line holds. The options and the subtype are written only when
/// there are some; a kernel that knows SB_SOURCE (6.13) knows them too.
const WANTED: u64 = SB_BASIC
    | MNT_BASIC
    | PROPAGATE_FROM
    | MNT_ROOT
    | MNT_POINT
    | FS_TYPE
    | MNT_OPTS
    | FS_SUBTYPE
    | SB_SOURCE;
const REQUIRED: u64 =
    SB_BASIC | MNT_BASIC | PROPAGATE_FROM | MNT_ROOT | MNT_POINT | FS_TYPE | SB_SOURCE;

/// The largest answer asked for: mount options can be long (overlay layers).
const MAX_BUFFER: usize = 1 << 20;

/// One statmount(2) answer.
struct Entry {
    header: Header,
    /// The whole answer, `HEADER` bytes then strings.
    bytes: Vec<u8>,
}

impl Entry {
    fn read(mnt_id: u64, ns_id: u64) -> Result<Entry, Errno> {
        let req = MntIdReq {
            size: std::mem::size_of::<MntIdReq>() as u32,
            mnt_ns_fd: 0,
            mnt_id,
            param: WANTED,
            mnt_ns_id: ns_id,
        };
        // u64 words: the kernel writes an 8-byte aligned struct.
        let mut words = vec![0u64; 512];
        loop {
            let len = words.len() * 8;
            // SAFETY: `req` is a valid mnt_id_req of the size it declares, and the
            // kernel writes at most `len` bytes into `words`, which holds `len`.
            let rc = unsafe {
                nix::libc::syscall(
                    SYS_STATMOUNT,
                    &req as *const MntIdReq,
                    words.as_mut_ptr(),
                    len,
                    0,
                )
            };
            if rc == 0 {
                break;
            }
            match Errno::last() {
                Errno::EOVERFLOW if len < MAX_BUFFER => words.resize(words.len() * 2, 0),
                Errno::EINTR => {}
                errno => return Err(errno),
            }
        }
        let bytes: Vec<u8> = words.iter().flat_map(|w| w.to_ne_bytes()).collect();
        // SAFETY: `bytes` holds at least HEADER >= size_of::<Header>() bytes, and
        // Header is plain integers, valid for any bit pattern.
        let header = unsafe { std::ptr::read_unaligned(bytes.as_ptr() as *const Header) };
        Ok(Entry { header, bytes })
    }

    /// The string at offset `at` of the string area, if the kernel wrote `bit`.
    fn string(&self, bit: u64, at: u32) -> Option<&OsStr> {
        if self.header.mask & bit == 0 {
            return None;
        }
        let size = (self.header.size as usize).min(self.bytes.len());
        let rest = self.bytes.get(HEADER + at as usize..size)?;
        let end = rest.iter().position(|&b| b == 0)?;
        Some(OsStr::from_bytes(&rest[..end]))
    }

    /// The entry as mountinfo would show it, or `None` when the kernel left out a
    /// part mountinfo has.
    fn mount(&self) -> Option<Mount> {
        let h = &self.header;
        if h.mask & REQUIRED != REQUIRED {
            return None;
        }
        let text = |bit, at| {
            self.string(bit, at)
                .map(|s| s.to_string_lossy().into_owned())
        };
        let mut fstype = text(FS_TYPE, h.fs_type)?;
        if let Some(sub) = text(FS_SUBTYPE, h.fs_subtype).filter(|s| !s.is_empty()) {
            fstype = format!("{fstype}.{sub}");
        }
        let mut super_options = String::from(if h.sb_flags & SB_RDONLY != 0 {
            "ro"
        } else {
            "rw"
        });
        for (flag, name) in SB_OPTIONS {
            if h.sb_flags & flag != 0 {
                super_options.push_str(name);
            }
        }
        if let Some(opts) = text(MNT_OPTS, h.mnt_opts).filter(|o| !o.is_empty()) {
            super_options.push(',');
            super_options.push_str(&opts);
        }
        Some(Mount {
            id: h.mnt_id_old,
            parent: h.mnt_parent_id_old,
            major: h.sb_dev_major,
            minor: h.sb_dev_minor,
            root: PathBuf::from(self.string(MNT_ROOT, h.mnt_root)?),
            target: PathBuf::from(self.string(MNT_POINT, h.mnt_point)?),
            options: mount_options(h.mnt_attr),
            propagation: propagation(h),
            fstype,
            source: OsString::from(self.string(SB_SOURCE, h.sb_source)?),
            super_options,
        })
    }
}

const SB_RDONLY: u32 = 0x1;
/// The superblock flags mountinfo shows after ro/rw, in its order.
const SB_OPTIONS: [(u32, &str); 3] = [(0x10, ",sync"), (0x80, ",dirsync"), (1 << 25, ",lazytime")];

/// The per-mount options field of mountinfo, from `MOUNT_ATTR_*` bits, in the
/// kernel's order.
fn mount_options(attr: u64) -> String {
    let atime = attr & 0x70;
    let shown = [
        (attr & 0x2 != 0, ",nosuid"),
        (attr & 0x4 != 0, ",nodev"),
        (attr & 0x8 != 0, ",noexec"),
        (atime == 0x10, ",noatime"),
        (attr & 0x80 != 0, ",nodiratime"),
        (atime == 0, ",relatime"),
        (attr & 0x20_0000 != 0, ",nosymfollow"),
        (attr & 0x10_0000 != 0, ",idmapped"),
    ];
    let mut out = String::from(if attr & 0x1 != 0 { "ro" } else { "rw" });
    for (_, name) in shown.iter().filter(|(on, _)| *on) {
        out.push_str(name);
    }
    out
}

/// The optional fields of mountinfo, from `mnt_propagation` (MS_* bits) and the
/// peer group ids.
fn propagation(h: &Header) -> Propagation {
    const MS_UNBINDABLE: u64 = 1 << 17;
    const MS_SLAVE: u64 = 1 << 19;
    const MS_SHARED: u64 = 1 << 20;
    let group = |id: u64| u32::try_from(id).ok();
    let master = (h.mnt_propagation & MS_SLAVE != 0)
        .then(|| group(h.mnt_master))
        .flatten();
    Propagation {
        shared: (h.mnt_propagation & MS_SHARED != 0)
            .then(|| group(h.mnt_peer_group))
            .flatten(),
        master,
        propagate_from: master
            .and(group(h.propagate_from))
            .filter(|&dominant| dominant != 0 && Some(dominant) != master),
        unbindable: h.mnt_propagation & MS_UNBINDABLE != 0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_header_is_laid_out_as_linux_mount_h() {
        assert_eq!(std::mem::size_of::<MntIdReq>(), 32);
        assert_eq!(std::mem::offset_of!(Header, mnt_id_old), 56);
        assert_eq!(std::mem::offset_of!(Header, mnt_root), 104);
        assert_eq!(std::mem::offset_of!(Header, mnt_ns_id), 112);
        assert_eq!(std::mem::offset_of!(Header, sb_source), 124);
        assert!(std::mem::size_of::<Header>() <= HEADER);
    }

    #[test]
    fn mount_options_follow_the_kernels_order() {
        assert_eq!(mount_options(0), "rw,relatime");
        assert_eq!(
            mount_options(0x1 | 0x2 | 0x4 | 0x8 | 0x10),
            "ro,nosuid,nodev,noexec,noatime"
        );
        assert_eq!(mount_options(0x20), "rw");
        assert_eq!(
            mount_options(0x80 | 0x20_0000),
            "rw,nodiratime,relatime,nosymfollow"
        );
    }
}
