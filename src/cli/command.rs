//! What each command line does: the mount(8) helper and mounter conventions are
//! forwarded to the daemon, the other subcommands dispatched, their results printed.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use clap::Parser as _;

use crate::api::client::Client;
use crate::api::wire::{
    self, Executed, MountRequest, RunRequest, Status, UnmountRequest, UpgradeRequest,
    UpgradeResponse,
};
use crate::cli::helper_args::{self, Invocation};
use crate::cli::{mounter, shim, unmount_plan};
use crate::executor;
use crate::mount::options::{split_all, MountOptions};
use crate::mount::syscall;
use crate::node::{check, install, list, share};
use crate::ns::mountinfo::{MountTable, ProcRoot};
use crate::vcs;

use super::args::{Cli, Command, TableOrJson, TextOrJson};
use super::exact;
use super::serve::{run_agent, serve};

/// How long `status` and `check` wait for an answer.
const PROBE_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a helper waits for the daemon (the daemon's own deadline is shorter).
const CLIENT_TIMEOUT: Duration = Duration::from_secs(180);

pub fn main() -> ExitCode {
    // Invoked by mount(8) as mount.TYPE / umount.TYPE?
    let raw: Vec<std::ffi::OsString> = std::env::args_os().collect();
    let _ = RAW.set(exact::Raw::of(&raw));
    let args: Vec<String> = raw
        .iter()
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
            Ok(inv) => forward(vec![inv]),
            Err(e) => {
                eprintln!("sidemount: {e}");
                ExitCode::from(mounter::USAGE)
            }
        };
    }
    // Invoked as a command shim (`iscsiadm`)?
    if let Some(program) = shim::program(&program) {
        return shim::run(program, &args[1..]);
    }
    let mut args = args;
    let seed_flags = match vcs::take_mount_container_flags(&mut args) {
        Ok(found) => found,
        Err(e) => {
            eprintln!("sidemount: {e}");
            return ExitCode::from(mounter::USAGE);
        }
    };
    // A usage error exits 1, as mount(8)'s and umount(8)'s do (clap's own is 2).
    let mut cli = match Cli::try_parse_from(args) {
        Ok(cli) => cli,
        Err(e) => {
            let _ = e.print();
            return ExitCode::from(if e.use_stderr() { mounter::USAGE } else { 0 });
        }
    };
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

/// Sends mounts or unmounts to the daemon, one after the other; exits like mount(8).
fn forward(invs: Vec<Invocation>) -> ExitCode {
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
    let restored: Result<Vec<Invocation>, String> = match RAW.get() {
        Some(raw) => invs.into_iter().map(|inv| raw.restore(inv)).collect(),
        None => Ok(invs),
    };
    let invs = match restored {
        Ok(invs) => invs,
        Err(e) => {
            eprintln!("sidemount: {e}");
            return ExitCode::from(mounter::MOUNT_FAILURE);
        }
    };
    let client = Client::new(Client::socket_from_env(), CLIENT_TIMEOUT);
    ExitCode::from(runtime.block_on(mounter::run_all(&client, invs)))
}

/// This process's arguments that are not UTF-8 (see [`exact`]).
static RAW: std::sync::OnceLock<exact::Raw> = std::sync::OnceLock::new();

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
            daemons,
        } => run_agent(vcs, socket, Duration::from_secs(timeout_seconds), daemons),
        Command::Run {
            vcs,
            socket,
            command,
        } => {
            let req = RunRequest {
                vcs,
                command,
                stdin: None,
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
                true => unhealthy(status).context("the daemon's status cannot be read")?,
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
            make,
            source,
            target,
            ..
        } => {
            let mut options = split_all(options.iter().map(String::as_str));
            options.extend(make.options());
            // `mount -o remount,ro DIR`, `mount --make-private DIR`: no source.
            let (source, target) = match target {
                Some(target) => (source, target),
                None => (String::new(), PathBuf::from(source)),
            };
            // A relative mount point is the caller's, from its working directory,
            // as mount(8) takes it; the daemon checks it as any other.
            let target = std::path::absolute(&target)?;
            let request = MountRequest {
                beneath: Vec::new(),
                source,
                target,
                fstype,
                options,
                sensitive_options: split_all(sensitive.iter().map(String::as_str)),
                caller_pid: None,
                source_fd: None,
                timeout_seconds: None,
            };
            let parsed = MountOptions::of(&request, &[]);
            // What mount(8) refuses before it mounts anything is a usage error.
            if let Err(e) = parsed.mkdir_mode() {
                eprintln!("sidemount: mount {}: {e}", request.target.display());
                return Ok(ExitCode::from(mounter::USAGE));
            }
            if request.source.is_empty() && !executor::changes(&request, &parsed) {
                eprintln!(
                    "sidemount: mount {}: a source and a mount point are needed (the mount point alone only for a remount or a propagation change)",
                    request.target.display()
                );
                return Ok(ExitCode::from(mounter::USAGE));
            }
            Ok(forward(vec![Invocation::Mount {
                request,
                fake: false,
                verbose,
            }]))
        }
        Command::Umount {
            lazy,
            force,
            recursive,
            verbose,
            target,
        } => {
            let table = MountTable::read(&ProcRoot::default(), None)?;
            let target = std::path::absolute(&target)?;
            let targets = match unmount_plan::targets(&target, recursive, &table) {
                Ok(targets) => targets,
                Err(e) => {
                    eprintln!("sidemount: {e}");
                    return Ok(ExitCode::from(mounter::MOUNT_FAILURE));
                }
            };
            let invs = targets.into_iter().map(|target| Invocation::Unmount {
                request: UnmountRequest {
                    beneath: Vec::new(),
                    mount_id: None,
                    unique_id: None,
                    target,
                    lazy,
                    force,
                    caller_pid: None,
                    timeout_seconds: None,
                },
                verbose,
            });
            Ok(forward(invs.collect()))
        }
        Command::InstallHelpers {
            dir,
            types,
            commands,
            binary,
        } => {
            let binary = match binary {
                Some(b) => b,
                None => std::env::current_exe().context("cannot find this binary")?,
            };
            for done in install::install_helpers(&dir, &binary, &types, &commands)? {
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
            let done = share::share(&syscall::Linux, &ProcRoot::new(proc), &path)?;
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
                binary: std::env::current_exe().context("cannot find this binary")?,
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

/// The unhealthy VCS of a daemon's status, one line each. A status that does not
/// parse is an error, never a healthy answer.
fn unhealthy(status: serde_json::Value) -> Result<Vec<String>, serde_json::Error> {
    let status: Status = serde_json::from_value(status)?;
    Ok(status
        .vcs
        .into_iter()
        .filter(|v| !v.healthy)
        .map(|v| format!("{}: {}", v.name, v.note))
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::wire::VcsStatus;

    #[test]
    fn health_needs_a_status_that_parses() {
        let mut status = Status::default();
        let json = serde_json::to_value(&status).unwrap();
        assert_eq!(unhealthy(json).unwrap(), Vec::<String>::new());
        status.vcs.push(VcsStatus {
            name: "nfs".into(),
            types: vec![],
            provider: "docker".into(),
            mode: "agent".into(),
            reached_at: "sidemount-vcs-nfs".into(),
            run: vec![],
            healthy: false,
            note: "agent gone".into(),
        });
        let json = serde_json::to_value(&status).unwrap();
        assert_eq!(unhealthy(json).unwrap(), vec!["nfs: agent gone"]);
        for broken in [
            serde_json::json!({"vcs": "not a list"}),
            serde_json::json!({"version": "1"}),
            serde_json::json!("garbage"),
        ] {
            assert!(unhealthy(broken.clone()).is_err(), "{broken}");
        }
    }
}
