//! Mounts that mount(8) would make with a single mount(2) call, and unmounts that
//! umount(8) would make with a single umount2(2), are made with that call: it saves
//! starting a process per operation. Anything more (a helper program, userspace or
//! bind options, a label, a loop device) is left to util-linux, and so is every
//! failed call, so that errors read as mount(8)'s and its fallbacks still apply.

use std::ffi::OsStr;
use std::os::unix::fs::FileTypeExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use nix::mount::{MntFlags, MsFlags};
use tracing::debug;

use super::exec::{ExecError, UnmountFlags};
use super::helper::{helper, Helper};
use super::options::MountOptions;
use super::syscall::{Syscall, SyscallError};
use crate::api::wire::MountRequest;
use crate::ns::mountinfo::unescape;

/// The filesystem types the kernel has now.
const FILESYSTEMS: &str = "/proc/filesystems";
/// Where libmount records the userspace options of mounts (`x-*`, `user`, loop).
const UTAB: &str = "/run/mount/utab";
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

/// Mounts `req` with its `options` by one mount(2) through `sys` when that is all
/// mount(8) would do. `Ok(false)`: mount(8) must run (the call does not apply, or it
/// failed and left nothing; its errno is logged at debug).
pub async fn mount(
    sys: &Arc<dyn Syscall>,
    req: &MountRequest,
    options: &MountOptions,
    deadline: Duration,
) -> Result<bool, ExecError> {
    let facts = Facts {
        kernel: kernel_has(&filesystems(), &req.fstype),
        helper: helper("mount", &req.fstype) == Helper::Other,
        block_device: std::fs::canonicalize(&req.source)
            .ok()
            .filter(|p| std::fs::metadata(p).is_ok_and(|m| m.file_type().is_block_device())),
    };
    let Some(call) = plan(req, options, &facts) else {
        return Ok(false);
    };
    let what = format!("mount(2) of {} on {}", call.fstype, call.target.display());
    let sys = Arc::clone(sys);
    blocking(what, deadline, move || {
        sys.mount(
            Some(Path::new(&call.source)),
            &call.target,
            Some(call.fstype.as_str()),
            call.flags,
            Some(OsStr::new(&call.data)).filter(|d| !d.is_empty()),
        )
    })
    .await
}

/// Unmounts `target` (a mount of `fstype`) with one umount2(2) through `sys` when
/// umount(8) would do no more. `Ok(false)`: umount(8) must run.
pub async fn unmount(
    sys: &Arc<dyn Syscall>,
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
    let sys = Arc::clone(sys);
    blocking(what, deadline, move || sys.umount2(&target, mnt)).await
}

/// Makes the call on a blocking thread, within `deadline`: true when it succeeded.
/// A failed call is logged at debug with its errno: util-linux takes over and speaks
/// for itself.
async fn blocking(
    what: String,
    deadline: Duration,
    call: impl FnOnce() -> Result<(), SyscallError> + Send + 'static,
) -> Result<bool, ExecError> {
    match tokio::time::timeout(deadline, tokio::task::spawn_blocking(call)).await {
        Ok(Ok(Ok(()))) => Ok(true),
        Ok(Ok(Err(e))) => {
            debug!(call = %what, errno = %e.errno(), error = %e, "failed; util-linux takes over");
            Ok(false)
        }
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

    #[test]
    fn finds_targets_in_utab() {
        let utab = b"ID=61 SRC=/img TARGET=/mnt/a\\040b ROOT=/ ATTRS=x-one\nID=70 TARGET=/mnt/c ATTRS=loop\n";
        assert!(utab_records(utab, Path::new("/mnt/a b")));
        assert!(utab_records(utab, Path::new("/mnt/c")));
        assert!(!utab_records(utab, Path::new("/mnt/a")));
        assert!(!utab_records(b"", Path::new("/mnt/c")));
    }

    #[tokio::test]
    async fn the_call_goes_through_the_seam_and_a_failure_falls_back() {
        use crate::mount::syscall::fake::{Call, Recording};
        let r = MountRequest {
            sensitive_options: vec!["size=2m".into()],
            ..req("tmpfs", "tmpfs", &["ro,mode=0700"])
        };
        let options = MountOptions::of(&r, &[]);
        let deadline = Duration::from_secs(10);
        let recording = Arc::new(Recording::default());
        let sys: Arc<dyn Syscall> = recording.clone();
        assert!(mount(&sys, &r, &options, deadline).await.unwrap());
        let flags = MntFlags::UMOUNT_NOFOLLOW | MntFlags::MNT_DETACH;
        let lazy = UnmountFlags {
            lazy: true,
            force: false,
        };
        assert!(unmount(&sys, &r.target, "tmpfs", lazy, deadline)
            .await
            .unwrap());
        assert_eq!(
            recording.calls(),
            vec![
                Call::Mount {
                    source: Some("tmpfs".into()),
                    target: r.target.clone(),
                    fstype: Some("tmpfs".into()),
                    flags: MsFlags::MS_RDONLY,
                    data: Some("mode=0700,size=2m".into()),
                },
                Call::Umount {
                    target: r.target.clone(),
                    flags,
                },
            ]
        );
        // A refused call leaves the work to mount(8).
        let failing: Arc<dyn Syscall> = Arc::new(Recording::failing(0, nix::errno::Errno::EINVAL));
        assert!(!mount(&failing, &r, &options, deadline).await.unwrap());
    }
}
