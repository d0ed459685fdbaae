//! The host executor: util-linux mount(8)/umount(8) in the daemon's own namespace,
//! for kernel filesystems and for clients installed where the daemon runs.

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::time::Duration;

use tokio::process::Command;

use super::{combined, namespace_of, ExecError, Executor, UnmountFlags};
use crate::mountinfo::ProcRoot;
use crate::propagation::Namespace;
use crate::wire::MountRequest;

/// Where mount(8) looks for external helpers.
const HELPER_DIR: &str = "/sbin";

pub struct Host {
    proc: ProcRoot,
}

impl Host {
    pub fn new(proc: ProcRoot) -> Self {
        Host { proc }
    }
}

#[async_trait::async_trait]
impl Executor for Host {
    fn name(&self) -> &str {
        "host"
    }

    async fn namespace(&self) -> Result<Namespace, ExecError> {
        Ok(namespace_of(self.name(), &self.proc, None))
    }

    async fn mount(&self, req: &MountRequest, deadline: Duration) -> Result<String, ExecError> {
        run("mount", &mount_args(req), deadline).await
    }

    async fn unmount(
        &self,
        target: &Path,
        fstype: &str,
        flags: UnmountFlags,
        deadline: Duration,
    ) -> Result<String, ExecError> {
        run("umount", &unmount_args(target, fstype, flags), deadline).await
    }
}

/// mount(8)'s arguments for a request.
pub fn mount_args(req: &MountRequest) -> Vec<OsString> {
    let mut args: Vec<OsString> = Vec::new();
    if helper_is_sidemount("mount", &req.fstype) {
        args.push("-i".into());
    }
    if !req.fstype.is_empty() {
        args.extend(["-t".into(), req.fstype.clone().into()]);
    }
    if !req.options.is_empty() {
        args.extend(["-o".into(), req.options.join(",").into()]);
    }
    args.extend([
        "--".into(),
        req.source.clone().into(),
        req.target.clone().into(),
    ]);
    args
}

/// umount(8)'s arguments.
pub fn unmount_args(target: &Path, fstype: &str, flags: UnmountFlags) -> Vec<OsString> {
    let mut args: Vec<OsString> = Vec::new();
    if helper_is_sidemount("umount", fstype) {
        args.push("-i".into());
    }
    if flags.lazy {
        args.push("-l".into());
    }
    if flags.force {
        args.push("-f".into());
    }
    args.extend(["--".into(), target.into()]);
    args
}

/// Runs a util-linux tool with a deadline; kills it when the deadline passes.
async fn run(program: &str, args: &[OsString], deadline: Duration) -> Result<String, ExecError> {
    let command = format!("{program} {}", shown(args));
    let child = Command::new(program)
        .args(args)
        .env("LC_ALL", "C")
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .map_err(|source| ExecError::Spawn {
            command: command.clone(),
            source,
        })?;
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
            status: output.status.to_string(),
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

/// Whether the helper mount(8) would call for `fstype` is this very binary: then the
/// daemon must run mount(8) with `-i`, or the helper would call the daemon again.
fn helper_is_sidemount(kind: &str, fstype: &str) -> bool {
    let Ok(me) = std::fs::canonicalize("/proc/self/exe") else {
        return false;
    };
    helper_candidates(kind, fstype)
        .iter()
        .any(|h| std::fs::canonicalize(h).is_ok_and(|h| h == me))
}

/// `mount.fuse.sshfs`, then `mount.fuse`: the names mount(8) tries for a type.
fn helper_candidates(kind: &str, fstype: &str) -> Vec<PathBuf> {
    if fstype.is_empty() {
        return Vec::new();
    }
    let mut names = vec![format!("{kind}.{fstype}")];
    if let Some((main, _subtype)) = fstype.split_once('.') {
        names.push(format!("{kind}.{main}"));
    }
    names
        .iter()
        .map(|n| Path::new(HELPER_DIR).join(n))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_never_show_options() {
        let args: Vec<OsString> = ["-t", "cifs", "-o", "password=hunter2", "--", "//s/x", "/t"]
            .map(OsString::from)
            .to_vec();
        assert_eq!(shown(&args), "-t cifs -o <options> -- //s/x /t");
    }

    #[test]
    fn helper_names_follow_mount8() {
        assert_eq!(
            helper_candidates("mount", "fuse.sshfs"),
            vec![
                PathBuf::from("/sbin/mount.fuse.sshfs"),
                PathBuf::from("/sbin/mount.fuse")
            ]
        );
        assert_eq!(
            helper_candidates("umount", "nfs"),
            vec![PathBuf::from("/sbin/umount.nfs")]
        );
        assert!(helper_candidates("mount", "").is_empty());
    }

    #[tokio::test]
    async fn failures_carry_the_tools_output_and_timeouts_kill() {
        let err = run(
            "sh",
            &["-c".into(), "echo out; echo err >&2; exit 3".into()],
            Duration::from_secs(10),
        )
        .await
        .unwrap_err();
        assert!(
            matches!(&err, ExecError::Failed { output, .. } if output == "out\nerr\n"),
            "{err:?}"
        );
        let err = run("sleep", &["10".into()], Duration::from_millis(50))
            .await
            .unwrap_err();
        assert!(matches!(err, ExecError::Timeout { .. }), "{err:?}");
    }
}
