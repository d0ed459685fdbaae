//! Making and removing mounts: the syscall seam every mount call goes through, the
//! kernel mounts sidemount makes itself onto handles, util-linux's mount(8) and
//! umount(8) on a private staging point, and the helpers they would start.

pub mod by_handle;
pub mod credentials;
pub mod exec;
pub mod helper;
pub mod kernel;
pub mod loop_device;
pub mod options;
pub mod probe;
pub mod rebind;
pub mod staging;
pub mod syscall;
pub mod util_linux;
