//! The read side of mounts: proc roots, mountinfo, statmount, namespaces and how
//! propagation links them.

pub mod beneath;
pub mod enter;
pub mod holders;
pub mod listmount;
pub mod mountinfo;
pub mod namespace;
pub mod propagation;
pub mod statmount;
