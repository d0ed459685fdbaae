//! The two serving roles, each on its own runtime until SIGTERM: the node daemon
//! (`serve`) and the agent of a volume-client container (`agent`).

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context};

use crate::agent::{self, Agent};
use crate::api::http::Limits;
use crate::daemon::config::Config;
use crate::daemon::provider::{self, Layout};
use crate::daemon::{metrics, routes};
use crate::daemon::{Daemon, Paths};
use crate::executor::{self, Executor};
use crate::ns::mountinfo::ProcRoot;
use crate::vcs;

use super::args::ServeArgs;

/// How often the status file is checked against a VCS's health between changes.
const STATUS_REFRESH: Duration = Duration::from_secs(10);
/// How long the status file waits for further changes before it is rewritten.
const STATUS_SETTLE: Duration = Duration::from_millis(100);

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

pub fn serve(a: ServeArgs) -> anyhow::Result<ExitCode> {
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
    let staging = a.state_dir.join("staging");
    let host: Arc<dyn Executor> = Arc::new(executor::Host::new(ProcRoot::default(), staging));
    let paths = Paths {
        proc: ProcRoot::default(),
        host_proc: ProcRoot::new(a.host_proc),
        state_dir: a.state_dir,
    };
    let limits = Limits {
        max_connections: connection_budget(a.max_connections),
        header_timeout: Duration::from_millis(a.read_timeout_ms),
        body_timeout: Duration::from_millis(a.read_timeout_ms),
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
        let watch = tokio::spawn({
            let daemon = daemon.clone();
            let every = Duration::from_secs(a.health_interval);
            async move { daemon.watch_health(every).await }
        });
        let scraped = match a.metrics_address {
            Some(addr) => {
                let tcp = tokio::net::TcpListener::bind(addr)
                    .await
                    .with_context(|| format!("cannot listen on --metrics-address {addr}"))?;
                tracing::info!(address = %tcp.local_addr()?, "serving metrics");
                Some(tokio::spawn(metrics::serve_tcp(
                    tcp,
                    daemon.clone(),
                    shutdown_signal(),
                )))
            }
            None => None,
        };
        routes::serve(listener, daemon.clone(), limits, shutdown_signal()).await?;
        daemon.stop();
        publisher.abort();
        watch.abort();
        if let Some(scraped) = scraped {
            scraped.abort();
        }
        tracing::info!("stopped; mounts stay");
        Ok(ExitCode::SUCCESS)
    })
}

/// Descriptors kept for everything but connections: the record, mountinfo,
/// executors' commands and sockets.
const SPARE_DESCRIPTORS: u64 = 256;

/// Raises the soft limit on open files to the hard one, and returns `asked`
/// connections, or as many as that limit leaves room for.
fn connection_budget(asked: u64) -> usize {
    use nix::sys::resource::{getrlimit, setrlimit, Resource};
    let soft = match getrlimit(Resource::RLIMIT_NOFILE) {
        Ok((soft, hard)) if soft < hard => match setrlimit(Resource::RLIMIT_NOFILE, hard, hard) {
            Ok(()) => hard,
            Err(_) => soft,
        },
        Ok((soft, _)) => soft,
        Err(_) => asked + SPARE_DESCRIPTORS,
    };
    let room = soft.saturating_sub(SPARE_DESCRIPTORS).max(1);
    if asked > room {
        tracing::warn!(
            asked,
            open_files_limit = soft,
            serving = room,
            "--max-connections lowered to what the open files limit allows"
        );
    }
    usize::try_from(asked.min(room)).unwrap_or(usize::MAX)
}

pub fn run_agent(
    vcs: String,
    socket: PathBuf,
    timeout: Duration,
    daemons: Vec<String>,
) -> anyhow::Result<ExitCode> {
    init_logging();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async {
        let agent = Arc::new(Agent::start(vcs.clone(), timeout)?);
        for daemon in &daemons {
            agent.keep_running(daemon);
        }
        let listener = routes::bind(&socket)?;
        tracing::info!(vcs = %vcs, socket = %socket.display(), pid = std::process::id(), "agent serving");
        agent::serve(listener, agent.clone(), shutdown_signal()).await?;
        agent.stop().await;
        let _ = std::fs::remove_file(&socket);
        tracing::info!("agent stopped");
        Ok(ExitCode::SUCCESS)
    })
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
