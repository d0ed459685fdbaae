//! The exec executor: `docker exec` of mount(8)/umount(8) in a VCS container, for
//! images that cannot run the agent. Costs a Docker round trip per request. The
//! daemon keeps the agent's guarantee itself: mount(8) mounts on a private
//! staging tmpfs in the container, and a thread of the daemon that enters the
//! container's mount namespace resolves the target there beneath the kubelet root
//! and moves the mount onto that handle. A bind takes no name in the container:
//! a detached copy of the daemon's checked source is attached there the same
//! way. A change of the mount already on a target (a remount, a propagation
//! change) is made by such a thread too, on the target's handle resolved there,
//! by the host executor's own step.

use std::ffi::OsString;
use std::os::fd::{AsFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use super::change::change;
use super::host::unmount_checked;
use super::plan::{plan, Plan};
use super::step::{self, blocking, entering, resolve_there, syscall_failed};
use super::{namespace_of, ExecError, Executor, Expected, Made, UnmountFlags};
use crate::api::wire::{Executed, MountRequest};
use crate::mount::by_handle::{self, Api};
use crate::mount::credentials;
use crate::mount::exec::finished;
use crate::mount::options::MountOptions;
use crate::mount::staging::{Point, Staging};
use crate::mount::syscall::{Linux, MsFlags, Syscall};
use crate::mount::util_linux::{mount_args, shown};
use crate::ns::beneath::mountinfo_id;
use crate::ns::enter::MountNamespace;
use crate::ns::mountinfo::ProcRoot;
use crate::ns::namespace::Namespace;
use crate::policy::{CheckedMount, CheckedTarget};
use crate::vcs::docker::{Docker, DockerError, Spec};

/// Where the staging tmpfs goes in the container.
const STAGING: &str = "/run/sidemount-exec";
/// How long detaching a mount in the container may take.
const UNDO_DEADLINE: Duration = Duration::from_secs(30);

pub struct DockerExec {
    name: String,
    docker: Docker,
    spec: Spec,
    proc: ProcRoot,
    /// The staging tmpfs of the container's current process (by its pid): a
    /// container started again needs a new one.
    staging: Mutex<Option<(u32, Arc<Staging>)>>,
}

impl DockerExec {
    pub fn new(docker: Docker, spec: Spec, proc: ProcRoot) -> Self {
        DockerExec {
            name: spec.vcs.executor_name(),
            docker,
            spec,
            proc,
            staging: Mutex::new(None),
        }
    }

    /// The container's mount namespace, to act in by a thread of the daemon.
    async fn enter(&self) -> Result<(Arc<MountNamespace>, u32), ExecError> {
        let pid = self
            .namespace()
            .await?
            .pid
            .expect("a container's namespace has a pid");
        let name = format!("{} (pid {pid})", self.spec.container_name());
        let ns = MountNamespace::of(self.proc.path(), pid, name)
            .map_err(|e| self.in_container("entering its mount namespace", e))?;
        Ok((Arc::new(ns), pid))
    }

    /// A fresh staging point in the container (`pid`'s namespace `ns`), on its
    /// staging tmpfs, prepared at the first use by this process of the container.
    async fn staging_point(
        &self,
        ns: &Arc<MountNamespace>,
        pid: u32,
        deadline: Duration,
    ) -> Result<PathBuf, ExecError> {
        let known = self.staging.lock().unwrap().clone();
        let staging = match known {
            Some((p, staging)) if p == pid => staging,
            _ => {
                let ns2 = ns.clone();
                let made = blocking("prepare the staging tmpfs".into(), deadline, move || {
                    ns2.run(|| Staging::prepare(&Linux, Path::new(STAGING)))
                        .map_err(entering)?
                        .map_err(ExecError::from)
                })
                .await
                .map_err(|e| self.named(e))?;
                let staging = Arc::new(made);
                *self.staging.lock().unwrap() = Some((pid, staging.clone()));
                staging
            }
        };
        let ns2 = ns.clone();
        blocking("make a staging point".into(), deadline, move || {
            let point = ns2
                .run(|| staging.point().map(Point::into_path))
                .map_err(entering)?;
            Ok(point?)
        })
        .await
        .map_err(|e| self.named(e))
    }

    /// A bind by handle: a detached copy of the checked source, made in the
    /// daemon's namespace where that handle was opened, attached onto the target
    /// resolved in the container's. No name is resolved again.
    async fn bind(
        &self,
        checked: &CheckedMount,
        ns: Arc<MountNamespace>,
        bind: Bind,
        deadline: Duration,
    ) -> Result<Made, ExecError> {
        let c = checked.try_clone().map_err(|source| ExecError::Spawn {
            command: "dup of the checked handles".into(),
            source,
        })?;
        let (path, root) = (c.target.path, c.target.root);
        let source = c.source.ok_or_else(|| ExecError::NoSource {
            target: path.clone(),
        })?;
        let attrs = by_handle::mount_attrs(bind.flags)
            .filter(|_| by_handle::api() == Api::NewMountApi)
            .ok_or_else(|| {
                self.in_container(
                    "binding the checked source by handle",
                    std::io::Error::other(
                        "open_tree(2) and mount_setattr(2) cannot make this bind on this kernel",
                    ),
                )
            })?;
        let what = format!("bind onto {}", path.display());
        let (held, id) = blocking(what, deadline, move || {
            let copy = by_handle::detached_copy(&Linux, source.fd(), bind.recursive, attrs)
                .map_err(|e| ExecError::Call {
                    call: "mount",
                    said: format!("mount: {}: {}.\n", path.display(), e.errno().desc()),
                    target: path.clone(),
                    source: Box::new(e),
                })?;
            ns.run(|| attach(&Linux, copy, &path, &root, bind.propagation))
                .map_err(entering)?
        })
        .await
        .map_err(|e| self.named(e))?;
        Ok(Made {
            output: String::new(),
            mount: None,
            reported: Some(id),
            held: Some(held),
        })
    }

    fn in_container(
        &self,
        step: &'static str,
        e: impl std::error::Error + Send + Sync + 'static,
    ) -> ExecError {
        ExecError::InContainer {
            executor: self.name.clone(),
            step,
            source: Box::new(e),
        }
    }

    /// Names this executor in an error made on a thread that did not know it.
    fn named(&self, e: ExecError) -> ExecError {
        match e {
            ExecError::InContainer { step, source, .. } => ExecError::InContainer {
                executor: self.name.clone(),
                step,
                source,
            },
            other => other,
        }
    }

    async fn exec(
        &self,
        argv: Vec<String>,
        stdin: Option<String>,
        deadline: Duration,
    ) -> Result<Executed, ExecError> {
        let container = self.spec.container_name();
        let command = argv.join(" ");
        let (code, output) = self
            .docker
            .exec(&container, argv, stdin, deadline)
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
        stdin: Option<String>,
        deadline: Duration,
    ) -> Result<String, ExecError> {
        let mut argv = vec![program.to_owned()];
        argv.extend(args.iter().map(|a| a.to_string_lossy().into_owned()));
        let done = self.exec(argv, stdin, deadline).await?;
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

    /// mount(8) in the container on a staging point, then the mount moved onto
    /// the target resolved beneath the kubelet root in the container's namespace.
    async fn mount(
        &self,
        req: &MountRequest,
        options: &MountOptions,
        checked: &CheckedMount,
        deadline: Duration,
    ) -> Result<Made, ExecError> {
        let (ns, pid) = self.enter().await?;
        match plan(req, options) {
            Plan::Change { flags, data, named } => {
                let (path, root) = (checked.target.path.clone(), checked.target.root.clone());
                let what = format!("mount on {}", path.display());
                blocking(what, deadline, move || {
                    let changed = ns.run(|| {
                        let there = resolve_there(&path, &root)?;
                        change(&Linux, &there, flags, &data, named)
                    });
                    changed.map_err(entering)?
                })
                .await
                .map_err(|e| self.named(e))?;
                return Ok(Made::default());
            }
            Plan::Bind {
                recursive,
                flags,
                propagation,
            } => {
                let bind = Bind {
                    recursive,
                    flags,
                    propagation,
                };
                return self.bind(checked, ns, bind, deadline).await;
            }
            Plan::Move | Plan::New => {}
        }
        let point = self.staging_point(&ns, pid, deadline).await?;
        let staged = MountRequest {
            target: point.clone(),
            ..req.clone()
        };
        // A password sshfs reads on its stdin goes there, never on its argv.
        let (options, stdin) = credentials::with_stdin(&req.fstype, options);
        let made = self
            .tool("mount", mount_args(&staged, &options), stdin, deadline)
            .await
            .map_err(|e| step::on_target(e, &point, &checked.target.path));
        let (target, root) = (checked.target.path.clone(), checked.target.root.clone());
        let moved = blocking(format!("move onto {}", target.display()), deadline, {
            let failed = made.is_err();
            move || {
                ns.run(|| move_onto_target(&Linux, Point { path: point }, &target, &root, failed))
                    .map_err(entering)?
            }
        })
        .await
        .map_err(|e| self.named(e));
        let output = made?;
        let (held, id) = moved?;
        Ok(Made {
            output,
            mount: None,
            reported: Some(id),
            held: Some(held),
        })
    }

    /// Detaches the mount made by its handle, inside the container's namespace.
    async fn undo(&self, made: &Made) -> bool {
        let (Some(held), Ok((ns, _))) = (&made.held, self.enter().await) else {
            return false;
        };
        let Ok(held) = held.try_clone() else {
            return false;
        };
        let detached = blocking("detach".into(), UNDO_DEADLINE, move || {
            Ok(ns.run(|| by_handle::detach(&Linux, held.as_fd())))
        })
        .await;
        matches!(detached, Ok(Ok(Ok(()))))
    }

    /// umount2(2) beneath the target's parent, resolved in the container's
    /// namespace, when the mount there is the one `expected` names.
    async fn unmount(
        &self,
        target: CheckedTarget,
        expected: Option<Expected>,
        _fstype: &str,
        flags: UnmountFlags,
        deadline: Duration,
    ) -> Result<String, ExecError> {
        let (ns, _) = self.enter().await?;
        // The daemon's handles name its own namespace: the container's are opened
        // there. Held here, they would keep the mount (a peer of that one) busy.
        let CheckedTarget {
            path,
            root,
            fd,
            parent,
            ..
        } = target;
        drop((fd, parent));
        blocking(
            format!("umount2(2) of {}", path.display()),
            deadline,
            move || {
                let unmounted = ns
                    .run(|| unmount_checked(&Linux, resolve_there(&path, &root)?, expected, flags));
                unmounted.map_err(entering)?
            },
        )
        .await
        .map_err(|e| self.named(e))?;
        Ok(String::new())
    }

    /// `docker exec` of the command, its input fed on stdin as a mount's
    /// password is.
    async fn run(
        &self,
        command: &[String],
        stdin: Option<&str>,
        deadline: Duration,
    ) -> Result<Executed, ExecError> {
        self.exec(command.to_vec(), stdin.map(str::to_owned), deadline)
            .await
    }
}

/// In the container's namespace: the mount on the staging `point` moved onto
/// `target` (see [`attach`]); the point removed (with what is left on it
/// detached). `failed`: mount(8) failed, only the point goes. The moved
/// mount's handle and its id there.
fn move_onto_target(
    sys: &dyn Syscall,
    point: Point,
    target: &Path,
    root: &Path,
    failed: bool,
) -> Result<(OwnedFd, u32), ExecError> {
    let mount = point.mounted();
    if failed {
        if let Some(mount) = &mount {
            let _ = by_handle::detach(sys, mount.as_fd());
        }
        return Err(ExecError::InContainer {
            executor: String::new(),
            step: "cleaning the staging point after mount(8) failed",
            source: "nothing to move".into(),
        });
    }
    let Some(mount) = mount else {
        return Err(ExecError::InContainer {
            executor: String::new(),
            step: "finding what mount(8) made",
            source: format!(
                "mount(8) succeeded but left no mount on its staging point {}",
                point.path.display()
            )
            .into(),
        });
    };
    attach(sys, mount, target, root, None)
}

/// In the container's namespace: `mount` (a staging point's, or a detached
/// copy) moved onto `target`, resolved beneath `root` there without following a
/// symlink, then given `propagation`; detached again when a step fails. Its
/// handle and its id there.
fn attach(
    sys: &dyn Syscall,
    mount: OwnedFd,
    target: &Path,
    root: &Path,
    propagation: Option<(MsFlags, bool)>,
) -> Result<(OwnedFd, u32), ExecError> {
    let placed = || {
        let checked = resolve_there(target, root)?;
        let failed = |e| syscall_failed(&checked, e);
        by_handle::move_onto(sys, mount.as_fd(), checked.fd.as_fd()).map_err(failed)?;
        if let Some((kind, recursive)) = propagation {
            by_handle::set_propagation(sys, mount.as_fd(), kind, recursive).map_err(failed)?;
        }
        mountinfo_id(mount.as_fd()).map_err(|e| ExecError::InContainer {
            executor: String::new(),
            step: "reading the id of the moved mount",
            source: Box::new(e),
        })
    };
    match placed() {
        Ok(id) => Ok((mount, id)),
        Err(e) => {
            let _ = by_handle::detach(sys, mount.as_fd());
            Err(e)
        }
    }
}

/// What a bind asks: its whole tree or not, the mount flags of its top mount,
/// a propagation to give it.
struct Bind {
    recursive: bool,
    flags: MsFlags,
    propagation: Option<(MsFlags, bool)>,
}
