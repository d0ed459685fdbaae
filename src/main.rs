//! The `sidemount` command line: one binary for every role.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context};
use clap::{Parser, Subcommand, ValueEnum};

use sidemount::agent::{self, Agent};
use sidemount::api::client::{Client, DEFAULT_SOCKET};
use sidemount::api::wire::{
    self, Executed, MountRequest, RunRequest, UnmountRequest, UpgradeRequest, UpgradeResponse,
    VcsStatus,
};
use sidemount::cli::helper_args::{self, split_options, Invocation};
use sidemount::cli::mounter;
use sidemount::daemon::config::Config;
use sidemount::daemon::provider::{self, Layout};
use sidemount::daemon::routes;
use sidemount::daemon::{Daemon, Paths};
use sidemount::executor::{self, Executor};
use sidemount::mount::syscall;
use sidemount::node::{check, install, list};
use sidemount::ns::mountinfo::{MountTable, ProcRoot};
use sidemount::ns::propagation;
use sidemount::vcs;

/// musl's allocator, in the static build that ships, made the daemon's requests
/// about 1.6x slower than glibc's; mimalloc is as fast as glibc's in both builds.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

const KUBELET_ROOT: &str = "/var/lib/kubelet";
/// How often the status file is checked against a VCS's health between changes.
const STATUS_REFRESH: Duration = Duration::from_secs(10);
/// How long the status file waits for further changes before it is rewritten.
const STATUS_SETTLE: Duration = Duration::from_millis(100);
/// How long `status` and `check` wait for an answer.
const PROBE_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a helper waits for the daemon (the daemon's own deadline is shorter).
const CLIENT_TIMEOUT: Duration = Duration::from_secs(180);

#[derive(Parser)]
#[command(
    name = "sidemount",
    version,
    about = "Kubelet mounts executed in volume-client containers, verified in every namespace"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
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
        source: String,
        target: PathBuf,
    },
    /// Unmount through the daemon.
    Umount {
        #[arg(short = 'l', long)]
        lazy: bool,
        #[arg(short = 'f', long)]
        force: bool,
        #[arg(short, long)]
        verbose: bool,
        target: PathBuf,
    },
    /// Create mount.TYPE/umount.TYPE links to this binary, so mount(8) calls it.
    InstallHelpers {
        #[arg(long, default_value = "/sbin")]
        dir: PathBuf,
        /// Comma-separated filesystem types: nfs,nfs4,fuse.sshfs
        #[arg(long, value_delimiter = ',', required = true)]
        types: Vec<String>,
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
        #[arg(long = "helpers-dir", default_values = ["/sbin", "/sbin/fs.d", "/sbin/fs"])]
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
enum TextOrJson {
    Text,
    Json,
}

#[derive(Clone, Copy, ValueEnum)]
enum TableOrJson {
    Table,
    Json,
}

fn main() -> ExitCode {
    // Invoked by mount(8) as mount.TYPE / umount.TYPE?
    let args: Vec<String> = std::env::args_os()
        .map(|a| a.to_string_lossy().into_owned())
        .collect();
    let program = args
        .first()
        .map(|a| {
            Path::new(a)
                .file_name()
                .unwrap_or_default()
                .to_string_lossy()
                .into_owned()
        })
        .unwrap_or_default();
    if let Some(parsed) = helper_args::parse_helper(&program, &args[1..]) {
        return match parsed {
            Ok(inv) => forward(inv),
            Err(e) => {
                eprintln!("sidemount: {e}");
                ExitCode::from(mounter::USAGE)
            }
        };
    }
    let mut args = args;
    let seed_flags = match vcs::take_mount_container_flags(&mut args) {
        Ok(found) => found,
        Err(e) => {
            eprintln!("sidemount: {e}");
            return ExitCode::from(mounter::USAGE);
        }
    };
    let mut cli = Cli::parse_from(args);
    if let Command::Serve(serve) = &mut cli.command {
        serve.vcs.extend(seed_flags);
    } else if let Some(flag) = seed_flags.first() {
        eprintln!(
            "sidemount: --{}_mount_container is a flag of `serve`",
            flag.split('=').next().unwrap_or("")
        );
        return ExitCode::from(mounter::USAGE);
    }
    match run(cli) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("sidemount: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// Sends a mount or unmount to the daemon; exits like mount(8).
fn forward(inv: Invocation) -> ExitCode {
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("sidemount: cannot start: {e}");
            return ExitCode::from(mounter::MOUNT_FAILURE);
        }
    };
    let client = Client::new(Client::socket_from_env(), CLIENT_TIMEOUT);
    ExitCode::from(runtime.block_on(mounter::run(&client, inv)))
}

/// Log lines to stderr, filtered by `SIDEMOUNT_LOG` (default info).
fn init_logging() {
    use std::io::IsTerminal;
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("SIDEMOUNT_LOG")
                .unwrap_or_else(|_| "info".into()),
        )
        .init();
}

#[derive(clap::Args)]
struct ServeArgs {
    /// YAML configuration; without it the embedded default (host executor for
    /// every type) is used.
    #[arg(long)]
    config: Option<PathBuf>,
    #[arg(long, default_value = DEFAULT_SOCKET)]
    socket: PathBuf,
    /// Overrides the configuration's kubelet_root.
    #[arg(long)]
    kubelet_root: Option<PathBuf>,
    /// The host's proc (pid 1 is the host's namespace).
    #[arg(long, default_value = "/proc")]
    host_proc: PathBuf,
    /// Where the record of mounts is kept.
    #[arg(long, default_value = "/run/sidemount/state")]
    state_dir: PathBuf,
    /// A volume-client container with every default: NAME=IMAGE (repeatable;
    /// `--NAME_mount_container=IMAGE` is the same).
    #[arg(long = "vcs", value_name = "NAME=IMAGE")]
    vcs: Vec<String>,
    /// The static sidemount binary bound into VCS containers as their agent, as
    /// a path on the Docker host (default: this binary).
    #[arg(long)]
    agent_binary: Option<PathBuf>,
}

fn serve(a: ServeArgs) -> anyhow::Result<ExitCode> {
    init_logging();
    let (mut config, origin) = match &a.config {
        Some(path) => (Config::load(path)?, path.display().to_string()),
        None => (Config::default(), "embedded default".to_string()),
    };
    if let Some(root) = a.kubelet_root {
        config.kubelet_root = root;
    }
    let flags = a
        .vcs
        .iter()
        .map(|f| vcs::from_flag(f))
        .collect::<Result<Vec<_>, _>>()
        .map_err(anyhow::Error::msg)?;
    let config = config.with_vcs(flags, &format!("{origin} and --vcs flags"))?;
    let socket = a.socket;
    let socket_dir = socket
        .parent()
        .filter(|d| d.is_absolute())
        .context("--socket must be an absolute path")?
        .to_owned();
    let agent_binary = match a.agent_binary {
        Some(b) => b,
        None => std::env::current_exe().context("cannot find this binary")?,
    };
    if !caps::has_cap(
        None,
        caps::CapSet::Effective,
        caps::Capability::CAP_SYS_ADMIN,
    )? {
        bail!("sidemount serve needs CAP_SYS_ADMIN to mount: run it as root or in a privileged container");
    }
    let host: Arc<dyn Executor> = Arc::new(executor::Host::new(ProcRoot::default()));
    let paths = Paths {
        proc: ProcRoot::default(),
        host_proc: ProcRoot::new(a.host_proc),
        state_dir: a.state_dir,
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async {
        // Bound first: a second daemon must not touch the containers of the first.
        let listener = routes::bind(&socket)?;
        let layout = Layout {
            socket_dir,
            agent_binary,
            proc: ProcRoot::default(),
        };
        let handles = provider::bring_up(&config, &layout).await?;
        let daemon = Arc::new(Daemon::new(&config, paths, host, handles).await?);
        tracing::info!(socket = %socket.display(), kubelet_root = %config.kubelet_root.display(),
            "serving");
        let publisher = tokio::spawn({
            let daemon = daemon.clone();
            async move { daemon.publish_status(STATUS_REFRESH, STATUS_SETTLE).await }
        });
        routes::serve(listener, daemon, shutdown_signal()).await?;
        publisher.abort();
        tracing::info!("stopped; mounts stay");
        Ok(ExitCode::SUCCESS)
    })
}

fn run_agent(vcs: String, socket: PathBuf, timeout: Duration) -> anyhow::Result<ExitCode> {
    init_logging();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async {
        let agent = Arc::new(Agent::start(vcs.clone(), timeout)?);
        let listener = routes::bind(&socket)?;
        tracing::info!(vcs = %vcs, socket = %socket.display(), pid = std::process::id(), "agent serving");
        agent::serve(listener, agent.clone(), shutdown_signal()).await?;
        agent.stop().await;
        let _ = std::fs::remove_file(&socket);
        tracing::info!("agent stopped");
        Ok(ExitCode::SUCCESS)
    })
}

/// One request to the daemon from the command line: POST `body`, or GET without one.
fn ask<T: serde::de::DeserializeOwned>(
    socket: Option<PathBuf>,
    path: &str,
    body: Option<serde_json::Value>,
    timeout: Duration,
) -> anyhow::Result<T> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let client = Client::new(socket.unwrap_or_else(Client::socket_from_env), timeout);
    Ok(runtime.block_on(async {
        match body {
            Some(b) => client.post(path, &b).await,
            None => client.get(path).await,
        }
    })?)
}

/// SIGTERM or SIGINT.
async fn shutdown_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let (Ok(mut term), Ok(mut int)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) else {
        return std::future::pending().await;
    };
    tokio::select! {
        _ = term.recv() => {}
        _ = int.recv() => {}
    }
}

fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    if !matches!(cli.command, Command::Serve(_) | Command::Agent { .. }) {
        // A command line tool ends quietly when its reader goes (`| head`), as
        // coreutils do; the servers keep Rust's SIGPIPE ignored.
        // SAFETY: single-threaded here, and SIG_DFL installs no handler code.
        unsafe {
            let _ = nix::sys::signal::signal(
                nix::sys::signal::Signal::SIGPIPE,
                nix::sys::signal::SigHandler::SigDfl,
            );
        }
    }
    match cli.command {
        Command::Serve(args) => serve(args),
        Command::Agent {
            vcs,
            socket,
            timeout_seconds,
        } => run_agent(vcs, socket, Duration::from_secs(timeout_seconds)),
        Command::Run {
            vcs,
            socket,
            command,
        } => {
            let req = RunRequest {
                vcs,
                command,
                timeout_seconds: None,
            };
            let done: Executed = ask(
                socket,
                wire::RUN,
                Some(serde_json::to_value(req)?),
                CLIENT_TIMEOUT,
            )?;
            print!("{}", done.output);
            Ok(ExitCode::from(u8::try_from(done.exit_code).unwrap_or(1)))
        }
        Command::Upgrade { vcs, force, socket } => {
            let req = UpgradeRequest { vcs, force };
            let done: UpgradeResponse = ask(
                socket,
                wire::UPGRADE,
                Some(serde_json::to_value(req)?),
                CLIENT_TIMEOUT,
            )?;
            if done.replaced {
                println!(
                    "{}: replaced ({} mount(s) existed)",
                    done.container,
                    done.mounts.len()
                );
            } else {
                println!(
                    "{}: already made from the current configuration",
                    done.container
                );
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Status { socket, healthy } => {
            let status: serde_json::Value = ask(socket, wire::STATUS, None, PROBE_TIMEOUT)?;
            println!("{}", serde_json::to_string_pretty(&status)?);
            let sick: Vec<String> = match healthy {
                false => Vec::new(),
                true => serde_json::from_value::<Vec<VcsStatus>>(status["vcs"].clone())
                    .unwrap_or_default()
                    .into_iter()
                    .filter(|v| !v.healthy)
                    .map(|v| format!("{}: {}", v.name, v.note))
                    .collect(),
            };
            if sick.is_empty() {
                return Ok(ExitCode::SUCCESS);
            }
            eprintln!(
                "sidemount: unhealthy volume-client containers:\n  {}",
                sick.join("\n  ")
            );
            Ok(ExitCode::FAILURE)
        }
        Command::Mount {
            fstype,
            options,
            sensitive,
            verbose,
            source,
            target,
        } => {
            let request = MountRequest {
                source,
                target,
                fstype,
                options: split_options(options.iter().map(String::as_str)),
                sensitive_options: split_options(sensitive.iter().map(String::as_str)),
                caller_pid: None,
                timeout_seconds: None,
            };
            Ok(forward(Invocation::Mount {
                request,
                fake: false,
                verbose,
            }))
        }
        Command::Umount {
            lazy,
            force,
            verbose,
            target,
        } => Ok(forward(Invocation::Unmount {
            request: UnmountRequest {
                target,
                lazy,
                force,
                caller_pid: None,
                timeout_seconds: None,
            },
            verbose,
        })),
        Command::InstallHelpers { dir, types, binary } => {
            let binary = match binary {
                Some(b) => b,
                None => std::env::current_exe().context("cannot find this binary")?,
            };
            for done in install::install_helpers(&dir, &binary, &types)? {
                let how = if done.created {
                    "created"
                } else {
                    "already there"
                };
                println!("{}: {how}", done.path.display());
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Share { path, proc } => {
            let path = std::fs::canonicalize(&path)
                .with_context(|| format!("cannot resolve {}", path.display()))?;
            let done = propagation::share(&syscall::Linux, &ProcRoot::new(proc), &path)?;
            let how = match (done.unchanged, done.bound) {
                (true, _) => "was already shared",
                (false, true) => "bound onto itself and made rshared",
                (false, false) => "made rshared",
            };
            println!(
                "{}: {how}, peer group {}",
                done.path.display(),
                done.peer_group
            );
            Ok(ExitCode::SUCCESS)
        }
        Command::Check {
            kubelet_root,
            host_proc,
            socket,
            no_daemon,
            helper_dirs,
            output,
        } => {
            let daemon = (!no_daemon).then(|| {
                let socket = socket.unwrap_or_else(Client::socket_from_env);
                let status = ask(Some(socket.clone()), wire::STATUS, None, PROBE_TIMEOUT)
                    .map_err(|e| format!("{e:#}"));
                check::DaemonAnswer { socket, status }
            });
            let report = check::run(&check::Node {
                kubelet_root,
                proc: ProcRoot::default(),
                host_proc: ProcRoot::new(host_proc),
                daemon,
                helper_dirs,
            });
            match output {
                TextOrJson::Text => print!("{}", report.text()),
                TextOrJson::Json => println!("{}", serde_json::to_string_pretty(&report)?),
            }
            Ok(if report.ok {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            })
        }
        Command::List {
            pid,
            target,
            proc,
            output,
        } => {
            let table = MountTable::read(&ProcRoot::new(proc), pid)?;
            let listing = list::listing(&table, target.as_deref());
            match output {
                TableOrJson::Table => print!("{}", list::table_text(&listing)),
                TableOrJson::Json => println!("{}", serde_json::to_string_pretty(&listing)?),
            }
            Ok(ExitCode::SUCCESS)
        }
    }
}
