//! sidemount: executes kubelet volume mounts where the volume client software lives
//! (a container, or the node daemon's own namespace) and proves from mountinfo that
//! each mount reached the host's and the caller's namespaces.

pub mod agent;
pub mod check;
pub mod client;
pub mod config;
pub mod daemon;
pub mod docker;
pub mod executor;
pub mod helper_args;
pub mod http;
pub mod install;
pub mod list;
pub mod mounter;
pub mod mountinfo;
pub mod policy;
pub mod propagation;
pub mod provider;
pub mod reaper;
pub mod record;
pub mod server;
pub mod state_file;
pub mod statmount;
pub mod syscall;
pub mod vcs;
pub mod verify;
pub mod wire;
