//! Command shims: the kubelet and its volume plugins exec host programs by name
//! (`iscsiadm`, `rbd`). sidemount linked under such a name (`install-helpers
//! --commands`) forwards the call to `/v1/run`, where the daemon picks the VCS
//! whose `run` list allows the program: it passes its stdin, prints the command's
//! combined output and exits with its status, so the caller needs no change.

use std::io::{IsTerminal, Read};
use std::process::ExitCode;
use std::time::Duration;

use crate::api::client::Client;
use crate::api::wire::{self, Executed, RunRequest};
use crate::mount::helper::is_shim_name;

/// The exit status of a shim that could not run its command (no VCS allows it,
/// the daemon does not answer): the shell's "command not found", which no volume
/// tool gives a meaning of its own.
pub const NOT_RUN: u8 = 127;

/// How long a shim waits for the daemon (the daemon's own deadline is shorter).
const TIMEOUT: Duration = Duration::from_secs(180);

/// The program a shim called as `argv0` stands for, None when `argv0` is sidemount
/// itself (or a mount helper, told apart before).
pub fn program(argv0: &str) -> Option<&str> {
    is_shim_name(argv0).then_some(argv0)
}

/// Runs `program args` through the daemon; exits with the command's status.
pub fn run(program: &str, args: &[String]) -> ExitCode {
    match forward(program, args) {
        Ok(done) => {
            print!("{}", done.output);
            ExitCode::from(u8::try_from(done.exit_code).unwrap_or(NOT_RUN))
        }
        Err(e) => {
            eprintln!("sidemount ({program} shim): {e}");
            ExitCode::from(NOT_RUN)
        }
    }
}

fn forward(program: &str, args: &[String]) -> Result<Executed, String> {
    let stdin = read_stdin()?;
    let mut command = vec![program.to_owned()];
    command.extend_from_slice(args);
    let req = RunRequest {
        vcs: String::new(),
        command,
        stdin,
        timeout_seconds: None,
    };
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("cannot start: {e}"))?;
    let client = Client::new(Client::socket_from_env(), TIMEOUT);
    runtime
        .block_on(client.post(wire::RUN, &req))
        .map_err(|e| e.to_string())
}

/// The caller's stdin, read to its end, unless it is a terminal (nobody pipes
/// input then); None when empty. Text only, at most [`wire::MAX_STDIN`] bytes.
fn read_stdin() -> Result<Option<String>, String> {
    let stdin = std::io::stdin();
    if stdin.is_terminal() {
        return Ok(None);
    }
    let mut buf = Vec::new();
    match stdin
        .lock()
        .take(wire::MAX_STDIN as u64 + 1)
        .read_to_end(&mut buf)
    {
        Ok(_) => {}
        // No stdin at all (closed by the caller): nothing to pass.
        Err(e) if e.raw_os_error() == Some(libc::EBADF) => return Ok(None),
        Err(e) => return Err(format!("cannot read stdin: {e}")),
    }
    if buf.len() > wire::MAX_STDIN {
        return Err(format!(
            "stdin is over {} bytes: a shim passes small text input only",
            wire::MAX_STDIN
        ));
    }
    let text = String::from_utf8(buf)
        .map_err(|_| "stdin is not UTF-8 text: a shim passes text input only".to_owned())?;
    Ok((!text.is_empty()).then_some(text))
}
