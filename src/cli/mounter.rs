//! The caller's side of a mount or unmount: sends the request to the daemon, then
//! reports and exits the way mount(8) and its helpers do (0 ok, 32 failure).

use std::os::fd::{AsRawFd, OwnedFd};
use std::path::Path;

use nix::fcntl::OFlag;
use nix::sys::stat::Mode;

use crate::api::client::{Client, ClientError};
use crate::api::wire::{self, MountRequest, MountResponse, Sighting, UnmountResponse};
use crate::cli::helper_args::Invocation;
use crate::mount::options::MountOptions;
use crate::policy::fd_source;

/// mount(8)'s exit status for a failed mount.
pub const MOUNT_FAILURE: u8 = 32;
/// mount(8)'s exit status for a usage error.
pub const USAGE: u8 = 1;

/// Carries out each of `invs` in turn through the daemon, up to the first that
/// fails; returns the exit status of the last one run.
pub async fn run_all(client: &Client, invs: Vec<Invocation>) -> u8 {
    for inv in invs {
        let code = run(client, inv).await;
        if code != 0 {
            return code;
        }
    }
    0
}

/// Carries out `inv` through the daemon; returns the exit status. The real tool's
/// output goes to stderr, as mount(8) helpers print it.
pub async fn run(client: &Client, inv: Invocation) -> u8 {
    let (result, verbose) = match inv {
        Invocation::Mount { fake: true, .. } => return 0,
        // mount(8): "do not report errors for this device if it does not exist".
        Invocation::Mount { request, .. } if nofail_and_missing(&request) => return 0,
        Invocation::Mount {
            mut request,
            verbose,
            ..
        } => {
            // Held open until the answer: the daemon takes it from this process.
            let _held = match descriptor_source(&mut request) {
                Ok(held) => held,
                Err(e) => {
                    eprintln!("sidemount: {e}");
                    return MOUNT_FAILURE;
                }
            };
            let r: Result<MountResponse, _> = client.post(wire::MOUNTS, &request).await;
            (
                r.map(|r| {
                    let what = format!(
                        "{} on {} type {} (executor {}, mount {})",
                        r.record.source,
                        r.record.target.display(),
                        r.record.fstype,
                        r.record.executor,
                        r.record.mount_id
                    );
                    (what, r.seen, r.output)
                }),
                verbose,
            )
        }
        Invocation::Unmount { request, verbose } => {
            let r: Result<UnmountResponse, _> = client.post(wire::UNMOUNTS, &request).await;
            (
                r.map(|r| {
                    (
                        format!("{} unmounted", r.target.display()),
                        r.seen,
                        r.output,
                    )
                }),
                verbose,
            )
        }
    };
    match result {
        Ok((what, seen, output)) => {
            eprint!("{output}");
            if verbose {
                eprintln!("sidemount: {what}; {}", seen_text(&seen));
            }
            0
        }
        Err(e) => {
            report(&e);
            MOUNT_FAILURE
        }
    }
}

/// A source that names a file descriptor (`/proc/<kubelet pid>/fd/N`, the
/// kubelet's subPath) is opened here, in the caller's pid and mount namespaces
/// where that name means what the caller meant (`O_PATH`: the magic link leads
/// to the very file the caller holds); the request then names this process's fd,
/// which the daemon takes from it. Returns the fd to hold until the answer.
fn descriptor_source(req: &mut MountRequest) -> Result<Option<OwnedFd>, String> {
    if !fd_source::names_a_descriptor(Path::new(&req.source)) {
        return Ok(None);
    }
    let fd = nix::fcntl::open(
        req.source.as_str(),
        OFlag::O_PATH | OFlag::O_CLOEXEC,
        Mode::empty(),
    )
    .map_err(|errno| format!("cannot open the source {}: {errno}", req.source))?;
    req.source_fd = Some(fd.as_raw_fd());
    Ok(Some(fd))
}

/// Whether `req` carries `nofail` and names a source path that does not exist.
fn nofail_and_missing(req: &MountRequest) -> bool {
    let nofail = MountOptions::of(req, &[]).has("nofail");
    let source = Path::new(&req.source);
    nofail
        && source.is_absolute()
        && std::fs::symlink_metadata(source)
            .is_err_and(|e| e.kind() == std::io::ErrorKind::NotFound)
}

fn report(e: &ClientError) {
    if let ClientError::Api(api) = e {
        eprint!("{}", api.output);
        if !api.output.is_empty() && !api.output.ends_with('\n') {
            eprintln!();
        }
    }
    eprintln!("sidemount: {e}");
}

/// "verified in host as mount 41 (shared), ..." or "verified gone from host, ...".
fn seen_text(seen: &[Sighting]) -> String {
    let places: Vec<String> = seen
        .iter()
        .map(|s| match (s.mount_id, &s.propagation) {
            (Some(id), Some(p)) => format!("{} as mount {id} ({p})", s.namespace),
            _ => s.namespace.clone(),
        })
        .collect();
    let verb = if seen.iter().all(|s| s.mount_id.is_none()) {
        "verified gone from"
    } else {
        "verified in"
    };
    format!("{verb} {}", places.join(", "))
}
