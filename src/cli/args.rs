//! The command line's words: every subcommand and flag, parsed by clap. The
//! mount(8) helper conventions are parsed apart, in `helper_args`.

use std::path::PathBuf;

use clap::{Parser, Subcommand, ValueEnum};

use crate::api::client::DEFAULT_SOCKET;

const KUBELET_ROOT: &str = "/var/lib/kubelet";

#[derive(Parser)]
#[command(
    name = "sidemount",
    version,
    about = "Kubelet mounts executed in volume-client containers, verified in every namespace"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand)]
pub enum Command {
    /// Run the node daemon: serve mount requests on a unix socket.
    Serve(ServeArgs),
    /// Run as the agent of a volume-client container (its PID 1).
    Agent {
        /// The VCS this container serves.
        #[arg(long)]
        vcs: String,
        /// The unix socket to serve the daemon on.
        #[arg(long)]
        socket: PathBuf,
        /// Longest any command may run.
        #[arg(long, default_value_t = 120)]
        timeout_seconds: u64,
        /// A daemon of the client to keep running beside the agent (`iscsid -f`):
        /// started at once and again whenever it exits. Repeatable.
        #[arg(long = "daemon", value_name = "COMMAND")]
        daemons: Vec<String>,
    },
    /// Run a command the VCS allows in its container (`rbd map ...`): prints its
    /// combined output and exits with its exit code.
    Run {
        #[arg(long)]
        vcs: String,
        /// The daemon's socket (default: $SIDEMOUNT_SOCKET, else /run/sidemount/sidemount.sock).
        #[arg(long)]
        socket: Option<PathBuf>,
        #[arg(required = true, last = true)]
        command: Vec<String>,
    },
    /// Replace a VCS container by one made from the current configuration.
    Upgrade {
        vcs: String,
        /// Even while long-running mounts depend on it (they break).
        #[arg(long)]
        force: bool,
        /// The daemon's socket (default: $SIDEMOUNT_SOCKET, else /run/sidemount/sidemount.sock).
        #[arg(long)]
        socket: Option<PathBuf>,
    },
    /// Print the status of the daemon or of an agent (its socket), exit 0 when it
    /// answers: the probe of the daemon and of VCS sidecars.
    Status {
        /// The daemon's socket (default: $SIDEMOUNT_SOCKET, else /run/sidemount/sidemount.sock),
        /// or an agent's (/run/sidemount/agents/NAME.sock).
        #[arg(long)]
        socket: Option<PathBuf>,
        /// Also fail unless every VCS the daemon reports is healthy (readiness).
        #[arg(long)]
        healthy: bool,
    },
    /// Mount through the daemon (kubelet --experimental-mounter-path convention).
    Mount {
        #[arg(short = 't', long = "types", default_value = "")]
        fstype: String,
        #[arg(short = 'o', long = "options")]
        options: Vec<String>,
        /// Options that must never be shown (mount-utils' MountSensitive).
        #[arg(long = "sensitive-options")]
        sensitive: Vec<String>,
        #[arg(short, long)]
        verbose: bool,
        /// mount(8)'s `--no-canonicalize` (the kubelet's subPath bind passes it):
        /// the daemon never canonicalizes, so it changes nothing. A mount point
        /// reached through a link is refused either way.
        #[arg(short = 'c', long = "no-canonicalize")]
        _no_canonicalize: bool,
        #[command(flatten)]
        make: MakeFlags,
        /// The source; alone, the mount point of a remount or a propagation change.
        source: String,
        target: Option<PathBuf>,
    },
    /// Unmount through the daemon: a mount point, or the latest mount of a device.
    Umount {
        #[arg(short = 'l', long)]
        lazy: bool,
        #[arg(short = 'f', long)]
        force: bool,
        /// Also every mount below the target, deepest first (umount(8)'s `-R`).
        #[arg(short = 'R', long)]
        recursive: bool,
        #[arg(short, long)]
        verbose: bool,
        target: PathBuf,
    },
    /// Create mount.TYPE/umount.TYPE links to this binary, so mount(8) calls it,
    /// and command shims (`iscsiadm`) that forward to a VCS's `run`.
    InstallHelpers {
        #[arg(long, default_value = "/sbin")]
        dir: PathBuf,
        /// Comma-separated filesystem types: nfs,nfs4,fuse.sshfs
        #[arg(long, value_delimiter = ',', required_unless_present = "commands")]
        types: Vec<String>,
        /// Comma-separated programs the kubelet execs by name: iscsiadm,rbd
        #[arg(long, value_delimiter = ',')]
        commands: Vec<String>,
        /// The binary the links point at (default: this one).
        #[arg(long)]
        binary: Option<PathBuf>,
    },
    /// Make PATH a shared mount point (kubelet's MakeRShared): bind it onto itself if
    /// it is not a mount point, then MS_SHARED|MS_REC. Idempotent.
    Share {
        #[arg(default_value = KUBELET_ROOT)]
        path: PathBuf,
        #[arg(long, default_value = "/proc")]
        proc: PathBuf,
    },
    /// Diagnose this node: capabilities, the propagation of the kubelet root, and
    /// (unless --no-daemon) the daemon, its VCS containers and the helpers.
    Check {
        #[arg(long, default_value = KUBELET_ROOT)]
        kubelet_root: PathBuf,
        /// The host's proc (pid 1 is the host's namespace).
        #[arg(long, default_value = "/proc")]
        host_proc: PathBuf,
        /// The daemon's socket (default: $SIDEMOUNT_SOCKET, else /run/sidemount/sidemount.sock).
        #[arg(long)]
        socket: Option<PathBuf>,
        /// Check the node alone, before the daemon runs.
        #[arg(long)]
        no_daemon: bool,
        /// Where mount(8) looks for helpers.
        #[arg(long = "helpers-dir", default_values = crate::mount::helper::HELPER_DIRS)]
        helper_dirs: Vec<PathBuf>,
        #[arg(long, value_enum, default_value_t = TextOrJson::Text)]
        output: TextOrJson,
    },
    /// List the mounts of a process's namespace with propagation and peer groups.
    List {
        #[arg(long)]
        pid: Option<u32>,
        /// Only mounts at or below this path.
        #[arg(long)]
        target: Option<PathBuf>,
        #[arg(long, default_value = "/proc")]
        proc: PathBuf,
        #[arg(long, value_enum, default_value_t = TableOrJson::Table)]
        output: TableOrJson,
    },
}

#[derive(Clone, Copy, ValueEnum)]
pub enum TextOrJson {
    Text,
    Json,
}

#[derive(Clone, Copy, ValueEnum)]
pub enum TableOrJson {
    Table,
    Json,
}

#[derive(clap::Args)]
pub struct ServeArgs {
    /// YAML configuration; without it the embedded default (host executor for
    /// every type) is used.
    #[arg(long)]
    pub config: Option<PathBuf>,
    #[arg(long, default_value = DEFAULT_SOCKET)]
    pub socket: PathBuf,
    /// Overrides the configuration's kubelet_root.
    #[arg(long)]
    pub kubelet_root: Option<PathBuf>,
    /// The host's proc (pid 1 is the host's namespace).
    #[arg(long, default_value = "/proc")]
    pub host_proc: PathBuf,
    /// Where the record of mounts is kept.
    #[arg(long, default_value = "/run/sidemount/state")]
    pub state_dir: PathBuf,
    /// A volume-client container with every default: NAME=IMAGE (repeatable;
    /// `--NAME_mount_container=IMAGE` is the same).
    #[arg(long = "vcs", value_name = "NAME=IMAGE")]
    pub vcs: Vec<String>,
    /// The static sidemount binary bound into VCS containers as their agent, as
    /// a path on the Docker host (default: this binary).
    #[arg(long)]
    pub agent_binary: Option<PathBuf>,
    /// Also serve `GET /metrics` (Prometheus, OpenMetrics text) on this TCP
    /// address, e.g. `0.0.0.0:9847`; the socket always serves it.
    #[arg(long, value_name = "ADDR")]
    pub metrics_address: Option<std::net::SocketAddr>,
    /// Seconds between health checks of the mounts of long-running VCS.
    #[arg(long, value_name = "SECONDS", default_value_t = 10, value_parser = clap::value_parser!(u64).range(1..))]
    pub health_interval: u64,
    /// Connections served at once; beyond it the oldest idle one is closed, or,
    /// when all are in a request, the new one is refused (`overloaded`).
    #[arg(long, value_name = "N", default_value_t = 1024, value_parser = clap::value_parser!(u64).range(1..))]
    pub max_connections: u64,
    /// Milliseconds a request's head may take to arrive (from the connection's
    /// start or its previous answer: idle keep-alive connections close then too),
    /// and its body after the head.
    #[arg(long, value_name = "MS", default_value_t = 10_000, value_parser = clap::value_parser!(u64).range(1..))]
    pub read_timeout_ms: u64,
}

/// mount(8)'s propagation flags (`--make-private DIR`), each a change of the
/// mount on the target.
#[derive(clap::Args, Debug, Default)]
pub struct MakeFlags {
    #[arg(long = "make-shared")]
    shared: bool,
    #[arg(long = "make-slave")]
    slave: bool,
    #[arg(long = "make-private")]
    private: bool,
    #[arg(long = "make-unbindable")]
    unbindable: bool,
    #[arg(long = "make-rshared")]
    rshared: bool,
    #[arg(long = "make-rslave")]
    rslave: bool,
    #[arg(long = "make-rprivate")]
    rprivate: bool,
    #[arg(long = "make-runbindable")]
    runbindable: bool,
}

impl MakeFlags {
    /// The flags given, as the options that ask for them (`make-private`).
    pub fn options(&self) -> Vec<String> {
        [
            (self.shared, "make-shared"),
            (self.slave, "make-slave"),
            (self.private, "make-private"),
            (self.unbindable, "make-unbindable"),
            (self.rshared, "make-rshared"),
            (self.rslave, "make-rslave"),
            (self.rprivate, "make-rprivate"),
            (self.runbindable, "make-runbindable"),
        ]
        .into_iter()
        .filter(|(given, _)| *given)
        .map(|(_, option)| option.to_owned())
        .collect()
    }
}
