//! The command line of every role: argv parsing (mount(8) helper conventions, the
//! kubelet's mounter path, subcommands) and printing.

mod args;
mod command;
mod exact;
pub mod helper_args;
pub mod mounter;
mod serve;
mod shim;
mod unmount_plan;

pub use command::main;
