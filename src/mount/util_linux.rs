//! util-linux's tools as sidemount runs them: mount(8)'s argument vector, a run
//! with a deadline, and the command as messages may show it. Unmounts are made by
//! handle, never by umount(8).

use std::ffi::OsString;
use std::time::Duration;

use tokio::process::Command;

use super::exec::{combined, ExecError};
use super::helper::{helper, Helper};
use super::options::MountOptions;
use crate::api::wire::MountRequest;

/// mount(8)'s arguments for a request with its `options` (secrets included: they
/// must reach the mount; [`shown`] leaves them out of messages).
pub fn mount_args(req: &MountRequest, options: &MountOptions) -> Vec<OsString> {
    let mut args: Vec<OsString> = Vec::new();
    if helper("mount", &req.fstype) == Helper::Sidemount {
        args.push("-i".into());
    }
    if !req.fstype.is_empty() {
        args.extend(["-t".into(), req.fstype.clone().into()]);
    }
    if let Some(options) = options.argument() {
        args.extend(["-o".into(), options.into()]);
    }
    args.extend([
        "--".into(),
        req.source.clone().into(),
        req.target.clone().into(),
    ]);
    args
}

/// Runs a util-linux tool with a deadline, `stdin` as its input (none:
/// /dev/null); kills it when the deadline passes.
pub async fn run(
    program: &str,
    args: &[OsString],
    stdin: Option<String>,
    deadline: Duration,
) -> Result<String, ExecError> {
    use tokio::io::AsyncWriteExt;
    let command = format!("{program} {}", shown(args));
    let mut child = Command::new(program)
        .args(args)
        .env("LC_ALL", "C")
        .stdin(match stdin {
            Some(_) => std::process::Stdio::piped(),
            None => std::process::Stdio::null(),
        })
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .map_err(|source| ExecError::Spawn {
            command: command.clone(),
            source,
        })?;
    // Written by a task of its own: a tool that does not read it all still ends.
    if let (Some(input), Some(mut pipe)) = (stdin, child.stdin.take()) {
        tokio::spawn(async move { pipe.write_all(input.as_bytes()).await });
    }
    let output = tokio::time::timeout(deadline, child.wait_with_output())
        .await
        .map_err(|_| ExecError::Timeout {
            command: command.clone(),
            after: deadline,
        })?
        .map_err(|source| ExecError::Spawn {
            command: command.clone(),
            source,
        })?;
    let text = combined(&output);
    if output.status.success() {
        Ok(text)
    } else {
        Err(ExecError::Failed {
            command,
            status: output.status.into(),
            output: text,
        })
    }
}

/// The command as messages may show it: options are left out, they may hold secrets.
pub fn shown(args: &[OsString]) -> String {
    let mut words = Vec::new();
    let mut skip = false;
    for a in args {
        if std::mem::take(&mut skip) {
            words.push("<options>".to_string());
            continue;
        }
        skip = a == "-o";
        words.push(a.to_string_lossy().into_owned());
    }
    words.join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mount::exec::Exit;

    #[test]
    fn messages_never_show_options() {
        let args: Vec<OsString> = ["-t", "cifs", "-o", "password=hunter2", "--", "//s/x", "/t"]
            .map(OsString::from)
            .to_vec();
        assert_eq!(shown(&args), "-t cifs -o <options> -- //s/x /t");
    }

    #[tokio::test]
    async fn stdin_reaches_the_tool() {
        let args = ["-c".into(), "read -r line; echo \"got $line\"".into()];
        let said = run(
            "sh",
            &args,
            Some("s3cret\n".into()),
            Duration::from_secs(10),
        );
        assert_eq!(said.await.unwrap(), "got s3cret\n");
        let said = run("sh", &args, None, Duration::from_secs(10));
        assert_eq!(said.await.unwrap(), "got \n");
    }

    #[tokio::test]
    async fn failures_carry_the_tools_output_and_timeouts_kill() {
        let err = run(
            "sh",
            &["-c".into(), "echo out; echo err >&2; exit 3".into()],
            None,
            Duration::from_secs(10),
        )
        .await
        .unwrap_err();
        assert!(
            matches!(&err, ExecError::Failed { output, status: Exit::Code(3), .. } if output == "out\nerr\n"),
            "{err:?}"
        );
        assert_eq!(
            err.to_string(),
            "sh -c echo out; echo err >&2; exit 3 failed (exit status: 3)"
        );
        let err = run(
            "sh",
            &["-c".into(), "kill -9 $$".into()],
            None,
            Duration::from_secs(10),
        )
        .await
        .unwrap_err();
        assert!(
            matches!(
                &err,
                ExecError::Failed {
                    status: Exit::Signal(9),
                    ..
                }
            ),
            "{err:?}"
        );
        let err = run("/nonexistent/mount", &[], None, Duration::from_secs(10))
            .await
            .unwrap_err();
        assert!(matches!(&err, ExecError::Spawn { .. }), "{err:?}");
        assert_eq!(err.errno(), Some(nix::errno::Errno::ENOENT));
        let err = run("sleep", &["10".into()], None, Duration::from_millis(50))
            .await
            .unwrap_err();
        assert!(matches!(err, ExecError::Timeout { .. }), "{err:?}");
    }
}
