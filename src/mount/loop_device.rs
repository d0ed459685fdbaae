//! Loop devices set up from a checked file handle, never from the file's name:
//! mount(8) would open the loop file by its path again (libmount canonicalizes
//! even `/proc/self/fd/N`), so a directory swapped after the check could hand it
//! another file. The device is attached with `LOOP_CONFIGURE` and `AUTOCLEAR`: it
//! is released when its filesystem is unmounted, or when this handle is dropped
//! while nothing mounts it.

use std::fs::File;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use linux_raw_sys::loop_device::{
    loop_config, LOOP_CONFIGURE, LOOP_CTL_GET_FREE, LO_FLAGS_AUTOCLEAR, LO_FLAGS_READ_ONLY,
};
use nix::errno::Errno;

use crate::mount::options::MountOptions;
use crate::ns::beneath::fd_path;

/// Where free loop devices are asked for.
const LOOP_CONTROL: &str = "/dev/loop-control";
/// How often a free device taken by someone else in between is asked for again.
const TRIES: usize = 16;

/// How the backing file is attached: `loop`'s options as mount(8) takes them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Backing {
    pub read_only: bool,
    /// `offset=`: where the filesystem starts in the file, in bytes.
    pub offset: u64,
    /// `sizelimit=`: how much of the file the device shows (0: all of it).
    pub size_limit: u64,
}

/// The options that only say how to set up the loop device: mount(8) takes them
/// for itself, the filesystem never sees them.
pub const LOOP_OPTIONS: &[&str] = &["loop", "offset", "sizelimit", "encryption"];

impl Backing {
    /// How `options` ask for the device: read-only with `ro`, `offset=` and
    /// `sizelimit=` in bytes.
    pub fn of(options: &MountOptions) -> Result<Backing, LoopError> {
        let bytes = |name: &'static str| -> Result<u64, LoopError> {
            let Some(option) = options.iter().filter(|o| o.name() == name).last() else {
                return Ok(0);
            };
            let value = option.value().unwrap_or_default();
            value.parse().map_err(|_| LoopError::BadOption {
                option: name,
                value: value.to_owned(),
            })
        };
        if options.has("encryption") {
            return Err(LoopError::BadOption {
                option: "encryption",
                value: "any".into(),
            });
        }
        Ok(Backing {
            read_only: options.has("ro"),
            offset: bytes("offset")?,
            size_limit: bytes("sizelimit")?,
        })
    }
}

/// An attached loop device; dropping it closes the device, which releases it
/// unless a mount holds it.
#[derive(Debug)]
pub struct LoopDevice {
    pub path: PathBuf,
    _device: OwnedFd,
}

/// Why a loop device could not be attached; each names the step and its errno.
#[derive(Debug, thiserror::Error)]
pub enum LoopError {
    #[error("cannot reopen the checked loop file {} for {mode}: {errno}", file.display())]
    Reopen {
        file: PathBuf,
        mode: &'static str,
        errno: Errno,
    },
    #[error("cannot ask {LOOP_CONTROL} for a free loop device: {0}")]
    Control(Errno),
    #[error("cannot open {}: {errno}", device.display())]
    Open { device: PathBuf, errno: Errno },
    #[error("LOOP_CONFIGURE of {} with {} failed: {errno}", device.display(), file.display())]
    Configure {
        device: PathBuf,
        file: PathBuf,
        errno: Errno,
    },
    #[error("no free loop device after {TRIES} tries: each was taken in between")]
    Exhausted,
    #[error(
        "loop option {option}={value} is not supported (a number of bytes is; encryption is not)"
    )]
    BadOption { option: &'static str, value: String },
}

/// Attaches the file `checked` holds (an `O_PATH` handle; `path` names it in
/// messages and as the device's backing name) to a free loop device.
pub fn attach(
    checked: BorrowedFd<'_>,
    path: &Path,
    backing: Backing,
) -> Result<LoopDevice, LoopError> {
    // 1. The file itself, reopened through its handle (no name is resolved again).
    let mode = if backing.read_only {
        "reading"
    } else {
        "reading and writing"
    };
    let file = std::fs::OpenOptions::new()
        .read(true)
        .write(!backing.read_only)
        .custom_flags(libc::O_CLOEXEC)
        .open(fd_path(checked))
        .map_err(|e| LoopError::Reopen {
            file: path.to_owned(),
            mode,
            errno: errno_of(&e),
        })?;
    let control = open(Path::new(LOOP_CONTROL)).map_err(|e| LoopError::Control(errno_of(&e)))?;
    for _ in 0..TRIES {
        // 2. A free device number.
        // SAFETY: LOOP_CTL_GET_FREE takes no argument and returns a number.
        let n = unsafe { libc::ioctl(control.as_raw_fd(), LOOP_CTL_GET_FREE as _) };
        let n = Errno::result(n).map_err(LoopError::Control)?;
        let device = PathBuf::from(format!("/dev/loop{n}"));
        let opened = open(&device).map_err(|e| LoopError::Open {
            device: device.clone(),
            errno: errno_of(&e),
        })?;
        // 3. The file attached to it, released on the last close or unmount.
        let config = config(&file, path, backing);
        // SAFETY: LOOP_CONFIGURE reads one `loop_config`, which outlives the call.
        let done = unsafe {
            libc::ioctl(
                opened.as_raw_fd(),
                LOOP_CONFIGURE as _,
                &config as *const loop_config,
            )
        };
        match Errno::result(done) {
            Ok(_) => {
                return Ok(LoopDevice {
                    path: device,
                    _device: opened.into(),
                })
            }
            // Taken by another process since it was free: ask again.
            Err(Errno::EBUSY) => continue,
            Err(errno) => {
                return Err(LoopError::Configure {
                    device,
                    file: path.to_owned(),
                    errno,
                })
            }
        }
    }
    Err(LoopError::Exhausted)
}

fn config(file: &File, path: &Path, backing: Backing) -> loop_config {
    // SAFETY: loop_config is plain data; all zeroes is its empty value.
    let mut config: loop_config = unsafe { std::mem::zeroed() };
    config.fd = file.as_fd().as_raw_fd() as u32;
    config.info.lo_offset = backing.offset;
    config.info.lo_sizelimit = backing.size_limit;
    config.info.lo_flags = LO_FLAGS_AUTOCLEAR as u32;
    if backing.read_only {
        config.info.lo_flags |= LO_FLAGS_READ_ONLY as u32;
    }
    // The name losetup shows; informational only, truncated as the kernel keeps it.
    use std::os::unix::ffi::OsStrExt;
    let name = path.as_os_str().as_bytes();
    let len = name.len().min(config.info.lo_file_name.len() - 1);
    config.info.lo_file_name[..len].copy_from_slice(&name[..len]);
    config
}

fn open(path: &Path) -> std::io::Result<File> {
    std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .custom_flags(libc::O_CLOEXEC)
        .open(path)
}

fn errno_of(e: &std::io::Error) -> Errno {
    Errno::from_raw(e.raw_os_error().unwrap_or(libc::EIO))
}
