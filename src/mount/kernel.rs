//! The one mount(2) call mount(8) would make for a request, when that is all it
//! would do: executors make it themselves (onto a handle) and save starting a
//! process. Anything more (a helper program, userspace or bind options, a label,
//! a loop device) is left to util-linux, and so is every failed call, so that
//! errors read as mount(8)'s and its fallbacks still apply.

use std::os::unix::fs::FileTypeExt;
use std::path::PathBuf;

use nix::mount::MsFlags;

use super::helper::{helper, Helper};
use super::options::MountOptions;
use crate::api::wire::MountRequest;

/// The filesystem types the kernel has now.
const FILESYSTEMS: &str = "/proc/filesystems";
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

/// The mount(2) call mount(8) would make for `req` with its `options`, or `None`
/// when it would do more.
pub fn plan(req: &MountRequest, options: &MountOptions, facts: &Facts) -> Option<Call> {
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
    let kernel = options.kernel()?;
    Some(Call {
        source,
        target: req.target.clone(),
        fstype: req.fstype.clone(),
        flags: kernel.flags,
        data: kernel.data(),
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

    fn plan(r: &MountRequest, facts: &Facts) -> Option<Call> {
        super::plan(r, &MountOptions::of(r, &[]), facts)
    }

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
