//! What the daemon, the agent and the clients say to each other: the wire types, the
//! HTTP glue over unix sockets, and the client.

pub mod client;
pub mod fstype;
pub mod http;
pub mod wire;
