//! sidemount: executes kubelet volume mounts where the volume client software lives
//! (a container, or the node daemon's own namespace) and proves from mountinfo that
//! each mount reached the host's and the caller's namespaces.
//!
//! The folders follow the one path, each using only those listed before it:
//! `api` (wire types, HTTP glue, client) -> `ns` (what is mounted where) -> `mount`
//! (the syscall seam, kernel mounts, helpers) -> `policy` and `vcs` -> `executor` ->
//! `agent`, `daemon` and `node` (the roles) -> `cli` (argv and printing).

pub mod agent;
pub mod api;
pub mod cli;
pub mod daemon;
pub mod executor;
pub mod mount;
pub mod node;
pub mod ns;
pub mod policy;
// Unit-test support, below every layer: any module's tests may use it.
#[cfg(test)]
mod testing;
pub mod vcs;
