//! sidemount: executes kubelet volume mounts where the volume client software lives
//! (a container, or the node daemon's own namespace) and proves from mountinfo that
//! each mount reached the host's and the caller's namespaces.

pub mod check;
pub mod list;
pub mod mountinfo;
pub mod propagation;
pub mod syscall;
