//! The host executor: mounts in the daemon's own namespace, for kernel filesystems
//! and for clients installed where the daemon runs, always onto the checked
//! target's handle: a new filesystem by fsopen/fsmount (when one mount(2) is all
//! mount(8) would do), a bind by an open_tree clone of the checked source,
//! anything else by mount(8) on a private staging point, moved onto the handle.
//! Unmounts name the target beneath its checked parent, never follow a symlink,
//! and only when the mount there is the one the daemon saw a moment before.

use std::ffi::{OsStr, OsString};
use std::os::fd::{AsFd, OwnedFd};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use super::change::change;
use super::plan::{layer_files, plan, with_layers, without_layers, Plan};
use super::step::{self, blocking, syscall_failed};
use super::{namespace_of, ExecError, Executor, Expected, Made, UnmountFlags};
use crate::api::wire::MountRequest;
use crate::mount::by_handle::{self, Filesystem};
use crate::mount::credentials;
use crate::mount::exec::Exit;
use crate::mount::kernel;
use crate::mount::loop_device::{self, Backing, LOOP_OPTIONS};
use crate::mount::options::MountOptions;
use crate::mount::staging::Staging;
use crate::mount::syscall::{Errno, Linux, MntFlags, Syscall};
use crate::mount::util_linux::{mount_args, run};
use crate::ns::beneath::{mountinfo_id, on_mount};
use crate::ns::mountinfo::ProcRoot;
use crate::ns::namespace::Namespace;
use crate::ns::statmount;
use crate::policy::{CheckedMount, CheckedSource, CheckedTarget};

/// How mount(8) is run: as a plain child (the daemon), or by a process that
/// reaps every child itself (the agent, PID 1 of its container).
#[async_trait::async_trait]
pub trait Runner: Send + Sync {
    /// Runs `program` with `args` and `stdin` as its input (none: /dev/null)
    /// within `deadline`; its combined output, or `ExecError::Failed` with it.
    async fn run(
        &self,
        program: &str,
        args: Vec<OsString>,
        stdin: Option<String>,
        deadline: Duration,
    ) -> Result<String, ExecError>;
}

/// util-linux's tools as plain children.
struct Children;

#[async_trait::async_trait]
impl Runner for Children {
    async fn run(
        &self,
        program: &str,
        args: Vec<OsString>,
        stdin: Option<String>,
        deadline: Duration,
    ) -> Result<String, ExecError> {
        run(program, &args, stdin, deadline).await
    }
}

pub struct Host {
    proc: ProcRoot,
    runner: Arc<dyn Runner>,
    /// Every mount-changing call goes through it.
    sys: Arc<dyn Syscall>,
    /// Where mount(8) makes what is then moved onto a target: `<state dir>/staging`,
    /// prepared at the first mount that needs it.
    staging_dir: std::path::PathBuf,
    staging: OnceLock<Staging>,
}

impl Host {
    pub fn new(proc: ProcRoot, staging_dir: std::path::PathBuf) -> Self {
        Self::with_runner(proc, staging_dir, Arc::new(Children))
    }

    /// A host executor whose mount(8) runs through `runner`.
    pub fn with_runner(
        proc: ProcRoot,
        staging_dir: std::path::PathBuf,
        runner: Arc<dyn Runner>,
    ) -> Self {
        Host {
            proc,
            runner,
            sys: Arc::new(Linux),
            staging_dir,
            staging: OnceLock::new(),
        }
    }

    fn staging(&self) -> Result<&Staging, ExecError> {
        if let Some(s) = self.staging.get() {
            return Ok(s);
        }
        let prepared = Staging::prepare(&*self.sys, &self.staging_dir)?;
        Ok(self.staging.get_or_init(|| prepared))
    }

    /// mount(8) on a fresh staging point, then the result moved onto the target.
    async fn staged(
        &self,
        req: &MountRequest,
        options: &MountOptions,
        checked: &CheckedMount,
        deadline: Duration,
    ) -> Result<Made, ExecError> {
        let point = self.staging()?.point()?;
        let mut staged = MountRequest {
            target: point.path.clone(),
            ..req.clone()
        };
        // Secrets the tool reads from its stdin or a file of its own, never from
        // its argv.
        let pieces: Vec<&str> = options.iter().map(|o| o.text()).collect();
        let (mut staged_options, stdin) = credentials::with_stdin(&req.fstype, options);
        let _credentials = match credentials::split_out(&req.fstype, &pieces) {
            None => None,
            Some((mut kept, lines)) => {
                let path = point.path.with_extension("credentials");
                let file =
                    credentials::write(&path, &lines).map_err(|source| ExecError::Spawn {
                        command: format!("write {}", path.display()),
                        source,
                    })?;
                kept.push(format!("credentials={}", path.display()));
                staged_options = MountOptions::new(&kept, &[], &[]);
                staged.options = kept;
                staged.sensitive_options = Vec::new();
                Some(file)
            }
        };
        let output = self
            .runner
            .run(
                "mount",
                mount_args(&staged, &staged_options),
                stdin,
                deadline,
            )
            .await
            .map_err(|e| step::on_target(e, &point.path, &checked.target.path))?;
        let mount = point.mounted().ok_or_else(|| ExecError::Failed {
            command: "mount".into(),
            status: Exit::Code(0),
            output: format!(
                "{output}mount(8) succeeded but left no mount on its staging point {}",
                point.path.display()
            ),
        })?;
        let sys = &*self.sys;
        if let Err(e) = by_handle::move_onto(sys, mount.as_fd(), checked.target.fd.as_fd()) {
            let _ = by_handle::detach(sys, mount.as_fd());
            return Err(syscall_failed(&checked.target, e));
        }
        Ok(Made {
            output,
            mount: Some(mount),
            reported: None,
            held: None,
        })
    }
}

fn copies(checked: &CheckedMount) -> Result<CheckedMount, ExecError> {
    checked.try_clone().map_err(|source| ExecError::Spawn {
        command: "dup of the checked handles".into(),
        source,
    })
}

/// The checked source a bind or a move needs.
fn source_of(checked: &CheckedMount) -> Result<&CheckedSource, ExecError> {
    checked.source.as_ref().ok_or_else(|| ExecError::NoSource {
        target: checked.target.path.clone(),
    })
}

#[async_trait::async_trait]
impl Executor for Host {
    fn name(&self) -> &str {
        "host"
    }

    async fn namespace(&self) -> Result<Namespace, ExecError> {
        Ok(namespace_of(self.name(), &self.proc, None))
    }

    async fn mount(
        &self,
        req: &MountRequest,
        options: &MountOptions,
        checked: &CheckedMount,
        deadline: Duration,
    ) -> Result<Made, ExecError> {
        let api = by_handle::api();
        let what = format!("mount on {}", checked.target.path.display());
        let sys = self.sys.clone();
        let plan = plan(req, options);
        // A new filesystem from a checked file: a loop device attached to that
        // file's handle, then the device mounted.
        if let (Plan::New, Some(file)) = (&plan, &checked.source) {
            let backing = Backing::of(options)?;
            let file = file.try_clone().map_err(|source| ExecError::Spawn {
                command: "dup of the checked loop file".into(),
                source,
            })?;
            let device = blocking(what, deadline, move || {
                Ok(loop_device::attach(file.fd(), &file.path, backing)?)
            })
            .await?;
            let on_device = MountRequest {
                source: device.path.display().to_string(),
                ..req.clone()
            };
            let target = copies(checked)?.target;
            let on_device_checked = CheckedMount {
                target,
                source: None,
                layers: Vec::new(),
            };
            let options = options.without(LOOP_OPTIONS);
            // The device is released with its mount, or here when nothing mounted it.
            return self
                .mount(&on_device, &options, &on_device_checked, deadline)
                .await;
        }
        match plan {
            Plan::Bind {
                recursive,
                flags,
                propagation,
            } => {
                source_of(checked)?;
                let c = copies(checked)?;
                blocking(what, deadline, move || {
                    let source = c.source.as_ref().expect("checked above");
                    let made = by_handle::bind(
                        &*sys,
                        source.fd(),
                        recursive,
                        flags,
                        &c.target.place(),
                        api,
                    )
                    .map_err(|e| syscall_failed(&c.target, e))?;
                    if let Some((kind, rec)) = propagation {
                        if let Err(e) = by_handle::set_propagation(&*sys, made.as_fd(), kind, rec) {
                            let _ = by_handle::detach(&*sys, made.as_fd());
                            return Err(syscall_failed(&c.target, e));
                        }
                    }
                    Ok(Made::by_call(made))
                })
                .await
            }
            Plan::Move => {
                source_of(checked)?;
                let c = copies(checked)?;
                blocking(what, deadline, move || {
                    let source = c.source.as_ref().expect("checked above");
                    by_handle::move_onto(&*sys, source.fd(), c.target.fd.as_fd())
                        .map_err(|e| syscall_failed(&c.target, e))?;
                    let moved = source.fd.try_clone().map_err(|source| ExecError::Spawn {
                        command: "dup".into(),
                        source,
                    })?;
                    Ok(Made::by_call(moved))
                })
                .await
            }
            Plan::Change { flags, data, named } => {
                let c = copies(checked)?;
                blocking(what, deadline, move || {
                    change(&*sys, &c.target, flags, &data, named)?;
                    Ok(Made::default())
                })
                .await
            }
            Plan::New => match kernel::plan(req, options, &kernel::facts(req)) {
                Some(call) => {
                    let c = copies(checked)?;
                    let layered = !c.layers.is_empty();
                    let by_call = blocking(what, deadline, move || {
                        let place = c.target.place();
                        let mount = |data: &[OsString], files: &[(&str, OwnedFd)]| {
                            let data: Vec<&OsStr> = data.iter().map(OsStr::new).collect();
                            let files: Vec<(&str, _)> =
                                files.iter().map(|(k, f)| (*k, f.as_fd())).collect();
                            let fs = Filesystem {
                                fstype: &call.fstype,
                                source: OsStr::new(&call.source),
                                flags: call.flags,
                                data: &data,
                                files: &files,
                            };
                            by_handle::new_filesystem(&*sys, &fs, &place, api)
                        };
                        // Layers by fd, where the kernel takes them so: it then
                        // names them by their paths. Else by their magic links.
                        let by_fd = layered
                            && api == by_handle::Api::NewMountApi
                            && by_handle::mount_attrs(call.flags).is_some();
                        let made = match by_fd {
                            true => {
                                let files =
                                    layer_files(&c.layers).map_err(|source| ExecError::Spawn {
                                        command: "reopening the overlay layers".into(),
                                        source,
                                    })?;
                                match mount(&without_layers(&call.data, &c.layers), &files) {
                                    Err(e) if e.errno() == Errno::EINVAL => {
                                        mount(&with_layers(&call.data, &c.layers), &[])
                                    }
                                    other => other,
                                }
                            }
                            false => mount(&with_layers(&call.data, &c.layers), &[]),
                        };
                        let made = made.map_err(|e| syscall_failed(&c.target, e))?;
                        Ok(Made::by_call(made))
                    })
                    .await;
                    match by_call {
                        // Nothing was attached: mount(8) makes it again, so that its
                        // own errors and fallbacks (a write-protected device mounted
                        // read-only) apply.
                        // Overlay layers stay handles: mount(8) would take their names.
                        Err(ExecError::Call { source, .. }) if !layered => {
                            tracing::debug!(target = %checked.target.path.display(), errno = %source.errno(), error = %source, "the one-call mount failed; mount(8) follows");
                            self.staged(req, options, checked, deadline).await
                        }
                        other => other,
                    }
                }
                None => self.staged(req, options, checked, deadline).await,
            },
        }
    }

    async fn unmount(
        &self,
        target: CheckedTarget,
        expected: Option<Expected>,
        _fstype: &str,
        flags: UnmountFlags,
        deadline: Duration,
    ) -> Result<String, ExecError> {
        let what = format!("umount2(2) of {}", target.path.display());
        let sys = self.sys.clone();
        blocking(what, deadline, move || {
            unmount_checked(&*sys, target, expected, flags)?;
            Ok(String::new())
        })
        .await
    }

    async fn undo(&self, made: &Made) -> bool {
        match &made.mount {
            Some(fd) => by_handle::detach(&*self.sys, fd.as_fd()).is_ok(),
            None => false,
        }
    }
}

/// Unmounts the mount on the checked `target` when it is the one `expected`
/// names, beneath the target's parent handle, never following a symlink.
pub(super) fn unmount_checked(
    sys: &dyn Syscall,
    target: CheckedTarget,
    expected: Option<Expected>,
    flags: UnmountFlags,
) -> Result<(), ExecError> {
    check_mount_id(&target, expected)?;
    // The target's own fd would keep the mount busy: only its parent's stays.
    let CheckedTarget {
        path,
        parent,
        name,
        fd,
        ..
    } = target;
    drop(fd);
    let mut mnt = MntFlags::empty();
    mnt.set(MntFlags::MNT_DETACH, flags.lazy);
    mnt.set(MntFlags::MNT_FORCE, flags.force);
    by_handle::unmount(sys, parent.as_fd(), &name, mnt).map_err(|e| {
        // In umount(8)'s words: callers match them.
        let said = match e.errno() {
            Errno::EBUSY => "target is busy.",
            Errno::EINVAL => "not mounted.",
            errno => errno.desc(),
        };
        ExecError::Call {
            call: "umount",
            said: format!("umount: {}: {said}\n", path.display()),
            target: path,
            source: Box::new(e),
        }
    })
}

/// The mount on the target's handle now must be the one `expected` names: the
/// one seen a moment before (by its id), and, when the record has a unique id
/// and the kernel reports them, the recorded mount or one stacked on it while
/// the recorded one is still there beneath (unmounting the top one, as umount(8)
/// would). A mount put there since the recorded one went, or swapped in, is not
/// unmounted.
fn check_mount_id(target: &CheckedTarget, expected: Option<Expected>) -> Result<(), ExecError> {
    let Some(expected) = expected else {
        return Ok(());
    };
    let refused = |found: String| ExecError::Replaced {
        target: target.path.clone(),
        expected,
        found,
    };
    let on = on_mount(target.fd.as_fd()).map_err(|e| refused(e.to_string()))?;
    if !on.root {
        return Err(refused("no mount".into()));
    }
    let found = mountinfo_id(target.fd.as_fd()).map_err(|e| refused(e.to_string()))?;
    let covers = |unique: u64| {
        statmount::by_id(unique).is_ok_and(|m| m.is_some_and(|m| m.target == target.path))
    };
    match expected.unique.filter(|_| on.unique) {
        Some(unique) if on.id != unique && !covers(unique) => Err(refused(format!(
            "mount {found} (unique id {}), put there since the recorded one went",
            on.id
        ))),
        _ if found != expected.id => Err(refused(format!("mount {found}"))),
        _ => Ok(()),
    }
}

impl Made {
    /// A mount the executor made with its own calls, by its fd.
    fn by_call(mount: OwnedFd) -> Made {
        Made {
            mount: Some(mount),
            ..Made::default()
        }
    }
}
