//! The `sidemount` command line: one binary for every role.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::{Parser, Subcommand, ValueEnum};

use sidemount::mountinfo::{MountTable, ProcRoot};
use sidemount::{check, list, propagation, syscall};

const KUBELET_ROOT: &str = "/var/lib/kubelet";

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
    /// Make PATH a shared mount point (kubelet's MakeRShared): bind it onto itself if
    /// it is not a mount point, then MS_SHARED|MS_REC. Idempotent.
    Share {
        #[arg(default_value = KUBELET_ROOT)]
        path: PathBuf,
        #[arg(long, default_value = "/proc")]
        proc: PathBuf,
    },
    /// Diagnose this node: capabilities and the propagation of the kubelet root.
    Check {
        #[arg(long, default_value = KUBELET_ROOT)]
        kubelet_root: PathBuf,
        /// The host's proc (pid 1 is the host's namespace).
        #[arg(long, default_value = "/proc")]
        host_proc: PathBuf,
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
    match run(Cli::parse()) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("sidemount: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    match cli.command {
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
            output,
        } => {
            let report = check::run(&check::Node {
                kubelet_root,
                proc: ProcRoot::default(),
                host_proc: ProcRoot::new(host_proc),
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
