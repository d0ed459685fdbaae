//! Making and removing mounts: the syscall seam every mount call goes through, the
//! kernel mounts sidemount makes itself, util-linux's mount(8) and umount(8), and the
//! helpers they would start.

pub mod exec;
pub mod helper;
pub mod kernel;
pub mod rebind;
pub mod syscall;
pub mod util_linux;
