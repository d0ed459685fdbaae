//! The exec executor: `docker exec` of mount(8)/umount(8) in a VCS container, for
//! images that cannot run the agent. Costs a Docker round trip per request.

use std::ffi::OsString;
use std::time::Duration;

use super::{namespace_of, ExecError, Executor, Made, UnmountFlags};
use crate::api::wire::{Executed, MountRequest};
use crate::mount::exec::finished;
use crate::mount::options::MountOptions;
use crate::mount::util_linux::{mount_args, shown, unmount_args};
use crate::ns::mountinfo::ProcRoot;
use crate::ns::namespace::Namespace;
use crate::policy::{CheckedMount, CheckedTarget};
use crate::vcs::docker::{Docker, DockerError, Spec};

pub struct DockerExec {
    name: String,
    docker: Docker,
    spec: Spec,
    proc: ProcRoot,
}

impl DockerExec {
    pub fn new(docker: Docker, spec: Spec, proc: ProcRoot) -> Self {
        DockerExec {
            name: spec.vcs.executor_name(),
            docker,
            spec,
            proc,
        }
    }

    async fn exec(&self, argv: Vec<String>, deadline: Duration) -> Result<Executed, ExecError> {
        let container = self.spec.container_name();
        let command = argv.join(" ");
        let (code, output) = self
            .docker
            .exec(&container, argv, deadline)
            .await
            .map_err(|e| self.error(e))?;
        Ok(Executed {
            command,
            exit_code: i32::try_from(code).unwrap_or(-1),
            output,
            mount: None,
        })
    }

    /// Runs a mount(8)-style command; messages show it without its options.
    async fn tool(
        &self,
        program: &str,
        args: Vec<OsString>,
        deadline: Duration,
    ) -> Result<String, ExecError> {
        let mut argv = vec![program.to_owned()];
        argv.extend(args.iter().map(|a| a.to_string_lossy().into_owned()));
        let done = self.exec(argv, deadline).await?;
        finished(Executed {
            command: format!("{program} {}", shown(&args)),
            ..done
        })
    }

    fn error(&self, e: DockerError) -> ExecError {
        match e {
            DockerError::Timeout { what, after } => ExecError::Timeout {
                command: what,
                after,
            },
            other => ExecError::Engine {
                executor: self.name.clone(),
                source: Box::new(other),
            },
        }
    }
}

#[async_trait::async_trait]
impl Executor for DockerExec {
    fn name(&self) -> &str {
        &self.name
    }

    /// The container's init, by its pid from Docker.
    async fn namespace(&self) -> Result<Namespace, ExecError> {
        let container = self.spec.container_name();
        let found = self
            .docker
            .find(&self.spec)
            .await
            .map_err(|e| self.error(e))?;
        let pid = found
            .as_ref()
            .and_then(|f| f.pid)
            .ok_or_else(|| ExecError::NotRunning {
                executor: self.name.clone(),
                container,
                state: found.map_or_else(|| "missing".into(), |f| f.state),
            })?;
        Ok(namespace_of(&self.name, &self.proc, Some(pid)))
    }

    /// mount(8) in the container resolves the target by name: exec mode is for
    /// images that cannot run the agent, which resolves it to a handle.
    async fn mount(
        &self,
        req: &MountRequest,
        options: &MountOptions,
        _checked: &CheckedMount,
        deadline: Duration,
    ) -> Result<Made, ExecError> {
        let output = self
            .tool("mount", mount_args(req, options), deadline)
            .await?;
        Ok(Made {
            output,
            mount: None,
            reported: None,
        })
    }

    async fn unmount(
        &self,
        target: CheckedTarget,
        _expected: Option<u32>,
        _fstype: &str,
        flags: UnmountFlags,
        deadline: Duration,
    ) -> Result<String, ExecError> {
        // A handle held here on the mount would keep it busy.
        let CheckedTarget { path, fd, .. } = target;
        drop(fd);
        self.tool("umount", unmount_args(&path, "", flags), deadline)
            .await
    }

    async fn run(
        &self,
        command: &[String],
        stdin: Option<&str>,
        deadline: Duration,
    ) -> Result<Executed, ExecError> {
        if stdin.is_some_and(|s| !s.is_empty()) {
            return Err(ExecError::NoStdin {
                container: self.spec.container_name(),
            });
        }
        self.exec(command.to_vec(), deadline).await
    }
}
