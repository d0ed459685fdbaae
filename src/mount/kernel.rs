//! The one mount(2) call mount(8) would make for a request, when that is all it
//! would do: executors make it themselves (onto a handle) and save starting a
//! process. Anything more (a helper program, userspace or bind options, a label,
//! a loop device) is left to util-linux, and so is every failed call, so that
//! errors read as mount(8)'s and its fallbacks still apply.

use std::os::unix::fs::FileTypeExt;
use std::path::PathBuf;

use nix::mount::MsFlags;

use super::helper::{helper, Helper};
use crate::api::wire::MountRequest;

/// The filesystem types the kernel has now.
const FILESYSTEMS: &str = "/proc/filesystems";
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

/// /proc/filesystems (empty when unreadable), in one read(2): `read_to_string`
/// alone starts at 32 bytes for a file whose size is 0, and doubles.
fn filesystems() -> String {
    let mut text = String::with_capacity(8192);
    if let Ok(mut file) = std::fs::File::open(FILESYSTEMS) {
        let _ = std::io::Read::read_to_string(&mut file, &mut text);
    }
    text
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
}
