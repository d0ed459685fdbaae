//! Mounts that mount(8) would make with a single mount(2) call, and unmounts that
//! umount(8) would make with a single umount2(2), are made with that call: it saves
//! starting a process per operation. Anything more (a helper program, userspace or
//! bind options, a label, a loop device) is left to util-linux, and so is every
//! failed call, so that errors read as mount(8)'s and its fallbacks still apply.

use std::os::unix::fs::FileTypeExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use nix::mount::{MntFlags, MsFlags};

use super::exec::{ExecError, UnmountFlags};
use super::helper::{helper, Helper};
use crate::api::wire::MountRequest;
use crate::ns::mountinfo::unescape;

/// The filesystem types the kernel has now.
const FILESYSTEMS: &str = "/proc/filesystems";
/// Where libmount records the userspace options of mounts (`x-*`, `user`, loop).
const UTAB: &str = "/run/mount/utab";
/// `MS_NOSYMFOLLOW` (Linux 5.10), which nix does not name.
const MS_NOSYMFOLLOW: MsFlags = MsFlags::from_bits_retain(256);

/// The VFS options mount(8) turns into mount(2) flags: name, flag, set (or clear).
pub const VFS_OPTIONS: &[(&str, MsFlags, bool)] = &[
    ("defaults", MsFlags::empty(), true),
    ("ro", MsFlags::MS_RDONLY, true),
    ("rw", MsFlags::MS_RDONLY, false),
    ("noexec", MsFlags::MS_NOEXEC, true),
    ("exec", MsFlags::MS_NOEXEC, false),
    ("nosuid", MsFlags::MS_NOSUID, true),
    ("suid", MsFlags::MS_NOSUID, false),
    ("nodev", MsFlags::MS_NODEV, true),
    ("dev", MsFlags::MS_NODEV, false),
    ("sync", MsFlags::MS_SYNCHRONOUS, true),
    ("async", MsFlags::MS_SYNCHRONOUS, false),
    ("dirsync", MsFlags::MS_DIRSYNC, true),
    ("silent", MsFlags::MS_SILENT, true),
    ("loud", MsFlags::MS_SILENT, false),
    ("mand", MsFlags::MS_MANDLOCK, true),
    ("nomand", MsFlags::MS_MANDLOCK, false),
    ("noatime", MsFlags::MS_NOATIME, true),
    ("atime", MsFlags::MS_NOATIME, false),
    ("nodiratime", MsFlags::MS_NODIRATIME, true),
    ("diratime", MsFlags::MS_NODIRATIME, false),
    ("relatime", MsFlags::MS_RELATIME, true),
    ("norelatime", MsFlags::MS_RELATIME, false),
    ("strictatime", MsFlags::MS_STRICTATIME, true),
    ("nostrictatime", MsFlags::MS_STRICTATIME, false),
    ("lazytime", MsFlags::MS_LAZYTIME, true),
    ("nolazytime", MsFlags::MS_LAZYTIME, false),
    ("iversion", MsFlags::MS_I_VERSION, true),
    ("noiversion", MsFlags::MS_I_VERSION, false),
    ("nosymfollow", MS_NOSYMFOLLOW, true),
    ("symfollow", MS_NOSYMFOLLOW, false),
];

/// Options that make mount(8) do more than one mount(2) of a new filesystem: binds,
/// moves, remounts and propagation changes, libmount's userspace options, and the
/// SELinux contexts it translates.
const UTIL_LINUX_OPTIONS: &[&str] = &[
    "bind",
    "rbind",
    "move",
    "remount",
    "shared",
    "rshared",
    "private",
    "rprivate",
    "slave",
    "rslave",
    "unbindable",
    "runbindable",
    "auto",
    "noauto",
    "user",
    "nouser",
    "users",
    "owner",
    "group",
    "nofail",
    "_netdev",
    "comment",
    "helper",
    "uhelper",
    "loop",
    "offset",
    "sizelimit",
    "encryption",
    "context",
    "fscontext",
    "defcontext",
    "rootcontext",
];

/// Sources mount(8) resolves to a device itself.
const TAGS: &[&str] = &["LABEL=", "UUID=", "PARTLABEL=", "PARTUUID=", "ID="];

/// One mount(2) call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Call {
    pub source: String,
    pub target: PathBuf,
    pub fstype: String,
    pub flags: MsFlags,
    /// The filesystem's own options, comma-separated, in the order given.
    pub data: String,
}

/// How the node's kernel knows a filesystem type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kernel {
    /// Not in /proc/filesystems (a FUSE subtype, a module not loaded yet).
    Unknown,
    /// A filesystem with no device (`nodev`: tmpfs, nfs, overlay).
    NoDevice,
    /// A filesystem on a block device (ext4, xfs).
    Block,
}

/// What the node says about a request, as far as the choice needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Facts {
    /// How /proc/filesystems lists the type.
    pub kernel: Kernel,
    /// mount(8) would start a helper program for the type.
    pub helper: bool,
    /// The canonical path of the source when it is a block device: mount(8) mounts
    /// that, so mountinfo names `/dev/sdb1`, not a `/dev/disk/by-id` link.
    pub block_device: Option<PathBuf>,
}

/// The mount(2) call mount(8) would make for `req`, or `None` when it would do more.
pub fn plan(req: &MountRequest, facts: &Facts) -> Option<Call> {
    let usable_type = !req.fstype.is_empty() && req.fstype != "auto" && !req.fstype.contains(',');
    if !usable_type || facts.helper || TAGS.iter().any(|t| req.source.starts_with(t)) {
        return None;
    }
    let source = match facts.kernel {
        Kernel::Unknown => return None,
        Kernel::NoDevice => req.source.clone(),
        // For a file, mount(8) would set up a loop device.
        Kernel::Block => facts.block_device.as_deref()?.to_str()?.to_owned(),
    };
    let mut flags = MsFlags::empty();
    let mut data = Vec::new();
    for option in req.options.iter().flat_map(|o| o.split(',')) {
        let (name, value) = option
            .split_once('=')
            .map_or((option, None), |(n, v)| (n, Some(v)));
        let userspace = UTIL_LINUX_OPTIONS.contains(&name)
            || name.starts_with("x-")
            || name.starts_with("X-")
            || name.starts_with("make-");
        if userspace {
            return None;
        }
        match VFS_OPTIONS.iter().find(|(n, ..)| *n == name) {
            // `ro=recursive` and the like are mount(8)'s to interpret.
            Some(_) if value.is_some() => return None,
            Some((_, flag, true)) => flags.insert(*flag),
            Some((_, flag, false)) => flags.remove(*flag),
            None if option.is_empty() => {}
            None => data.push(option),
        }
    }
    Some(Call {
        source,
        target: req.target.clone(),
        fstype: req.fstype.clone(),
        flags,
        data: data.join(","),
    })
}

/// What this node says about `req`: how its kernel knows the type, whether
/// mount(8) would start a helper, and the canonical block device of its source.
pub fn facts(req: &MountRequest) -> Facts {
    Facts {
        kernel: kernel_has(&filesystems(), &req.fstype),
        helper: helper("mount", &req.fstype) == Helper::Other,
        block_device: std::fs::canonicalize(&req.source)
            .ok()
            .filter(|p| std::fs::metadata(p).is_ok_and(|m| m.file_type().is_block_device())),
    }
}

/// How /proc/filesystems lists `fstype`.
pub fn kernel_has(filesystems: &str, fstype: &str) -> Kernel {
    filesystems
        .lines()
        .find_map(|line| {
            let (nodev, name) = line.split_once('\t')?;
            (name.trim() == fstype).then_some(if nodev == "nodev" {
                Kernel::NoDevice
            } else {
                Kernel::Block
            })
        })
        .unwrap_or(Kernel::Unknown)
}

/// Whether libmount's utab (its text, as read) records `target`: a mount with
/// userspace options, which umount(8) must also remove from there.
pub fn utab_records(utab: &[u8], target: &Path) -> bool {
    use std::os::unix::ffi::OsStrExt;
    utab.split(|&b| b == b'\n')
        .flat_map(|line| line.split(|&b| b == b' '))
        .filter_map(|field| field.strip_prefix(b"TARGET="))
        .any(|t| unescape(t).is_ok_and(|t| t == target.as_os_str().as_bytes()))
}

/// /proc/filesystems (empty when unreadable), in one read(2): `read_to_string`
/// alone starts at 32 bytes for a file whose size is 0, and doubles.
fn filesystems() -> String {
    let mut text = String::with_capacity(8192);
    if let Ok(mut file) = std::fs::File::open(FILESYSTEMS) {
        let _ = std::io::Read::read_to_string(&mut file, &mut text);
    }
    text
}

/// Mounts `req` with one mount(2) when that is all mount(8) would do. `Ok(false)`:
/// mount(8) must run (the call does not apply, or it failed and left nothing).
pub async fn mount(req: &MountRequest, deadline: Duration) -> Result<bool, ExecError> {
    let Some(call) = plan(req, &facts(req)) else {
        return Ok(false);
    };
    let what = format!("mount(2) of {} on {}", call.fstype, call.target.display());
    blocking(what, deadline, move || {
        nix::mount::mount(
            Some(call.source.as_str()),
            &call.target,
            Some(call.fstype.as_str()),
            call.flags,
            Some(call.data.as_str()).filter(|d| !d.is_empty()),
        )
    })
    .await
}

/// Unmounts `target` (a mount of `fstype`) with one umount2(2) when umount(8) would
/// do no more. `Ok(false)`: umount(8) must run.
pub async fn unmount(
    target: &Path,
    fstype: &str,
    flags: UnmountFlags,
    deadline: Duration,
) -> Result<bool, ExecError> {
    let utab = std::fs::read(UTAB).unwrap_or_default();
    if fstype.is_empty() || helper("umount", fstype) == Helper::Other || utab_records(&utab, target)
    {
        return Ok(false);
    }
    let mut mnt = MntFlags::UMOUNT_NOFOLLOW;
    mnt.set(MntFlags::MNT_DETACH, flags.lazy);
    mnt.set(MntFlags::MNT_FORCE, flags.force);
    let target = target.to_owned();
    let what = format!("umount2(2) of {}", target.display());
    blocking(what, deadline, move || nix::mount::umount2(&target, mnt)).await
}

/// Makes the call on a blocking thread, within `deadline`: true when it succeeded.
async fn blocking(
    what: String,
    deadline: Duration,
    call: impl FnOnce() -> nix::Result<()> + Send + 'static,
) -> Result<bool, ExecError> {
    match tokio::time::timeout(deadline, tokio::task::spawn_blocking(call)).await {
        Ok(Ok(done)) => Ok(done.is_ok()),
        Ok(Err(join)) => Err(ExecError::Spawn {
            command: what,
            source: std::io::Error::other(join),
        }),
        // The call may still finish: the daemon's undo looks at the table afterwards.
        Err(_) => Err(ExecError::Timeout {
            command: what,
            after: deadline,
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(source: &str, fstype: &str, options: &[&str]) -> MountRequest {
        MountRequest {
            source: source.into(),
            target: "/var/lib/kubelet/pods/p/volumes/v".into(),
            fstype: fstype.into(),
            options: options.iter().map(|o| o.to_string()).collect(),
            ..MountRequest::default()
        }
    }

    const NODEV: Facts = Facts {
        kernel: Kernel::NoDevice,
        helper: false,
        block_device: None,
    };

    fn block(device: &str) -> Facts {
        Facts {
            kernel: Kernel::Block,
            block_device: Some(device.into()),
            ..NODEV
        }
    }

    #[test]
    fn vfs_options_become_flags_and_the_rest_data() {
        let options = ["ro,nosuid", "size=10m,nodev", "mode=0755,rw,noexec"];
        let call = plan(&req("tmpfs", "tmpfs", &options), &NODEV).unwrap();
        assert_eq!(
            call.flags,
            MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC
        );
        assert_eq!(call.data, "size=10m,mode=0755");
        assert_eq!(
            (call.source.as_str(), call.fstype.as_str()),
            ("tmpfs", "tmpfs")
        );
        // A block device is mounted by its canonical path.
        let link = req("/dev/disk/by-id/scsi-1", "ext4", &[]);
        let plain = plan(&link, &block("/dev/sdb1")).unwrap();
        assert_eq!(plain.source, "/dev/sdb1");
        assert_eq!((plain.flags, plain.data.as_str()), (MsFlags::empty(), ""));
    }

    #[test]
    fn anything_more_than_one_call_is_left_to_mount8() {
        for options in [
            &["bind"][..],
            &["rbind,ro"],
            &["remount,ro"],
            &["rshared"],
            &["make-private"],
            &["x-kubelet.volume=1"],
            &["X-mount.mkdir"],
            &["nofail"],
            &["_netdev"],
            &["loop"],
            &["offset=512"],
            &["comment=x"],
            &["ro=recursive"],
            &["context=system_u:object_r:container_file_t:s0"],
        ] {
            let r = req("tmpfs", "tmpfs", options);
            assert_eq!(plan(&r, &NODEV), None, "{options:?}");
        }
        let helper = Facts {
            helper: true,
            ..NODEV
        };
        let unknown = Facts {
            kernel: Kernel::Unknown,
            ..NODEV
        };
        let file = Facts {
            block_device: None,
            ..block("")
        };
        let sdb = block("/dev/sdb1");
        for (r, facts) in [
            (req("s:/e", "nfs", &[]), &helper),
            (req("h:/", "fuse.sshfs", &[]), &unknown),
            (req("/dev/sdb1", "", &[]), &sdb),
            (req("/dev/sdb1", "auto", &[]), &sdb),
            (req("/dev/sdb1", "ext4,xfs", &[]), &sdb),
            (req("UUID=1234", "ext4", &[]), &sdb),
            (req("/images/disk.img", "ext4", &[]), &file),
        ] {
            assert_eq!(plan(&r, facts), None, "{r:?}");
        }
    }

    #[test]
    fn reads_proc_filesystems() {
        let text = "nodev\tsysfs\nnodev\ttmpfs\n\text4\nnodev\tfuse\n\tfuseblk\n";
        assert_eq!(kernel_has(text, "tmpfs"), Kernel::NoDevice);
        assert_eq!(kernel_has(text, "ext4"), Kernel::Block);
        assert_eq!(kernel_has(text, "fuse.sshfs"), Kernel::Unknown);
        assert_eq!(kernel_has(text, "xfs"), Kernel::Unknown);
    }

    #[test]
    fn finds_targets_in_utab() {
        let utab = b"ID=61 SRC=/img TARGET=/mnt/a\\040b ROOT=/ ATTRS=x-one\nID=70 TARGET=/mnt/c ATTRS=loop\n";
        assert!(utab_records(utab, Path::new("/mnt/a b")));
        assert!(utab_records(utab, Path::new("/mnt/c")));
        assert!(!utab_records(utab, Path::new("/mnt/a")));
        assert!(!utab_records(b"", Path::new("/mnt/c")));
    }
}
