//! Commands that look after a node rather than serve requests: share, check, list
//! and install-helpers.

pub mod check;
pub mod install;
pub mod list;
pub mod share;
