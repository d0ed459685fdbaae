//! Changes to the mount already on a target: a remount (with or without bind)
//! or a propagation change. Policy and the target's turn are those of a new
//! mount; the executor makes one call on the target's handle; its copies in the
//! host's and the caller's namespaces are given the per-mount flags asked,
//! which do not propagate (see [`copies`](super::copies)); the proof is that
//! the same mount is still there and now shows what was asked, and each copy
//! the flags; the record of a mount the daemon made is brought up to date,
//! never duplicated. Nothing new was mounted, so nothing is undone.

use std::time::Duration;

use tracing::info;

use crate::api::wire::{MountRecord, MountRequest, MountResponse};
use crate::daemon::copies;
use crate::daemon::error::PipelineError;
use crate::daemon::mount::Before;
use crate::daemon::record::Entry;
use crate::daemon::verify::{self, Views, Wanted};
use crate::daemon::Daemon;
use crate::executor::{propagation_of, Executor};
use crate::mount::options::{MountOptions, VFS_OPTIONS};
use crate::policy::CheckedMount;

impl Daemon {
    /// Carries out the change `req` asks of the mount on its checked target.
    #[allow(clippy::too_many_arguments)]
    pub(super) async fn change(
        &self,
        req: &MountRequest,
        options: &MountOptions,
        exec: &dyn Executor,
        checked: &CheckedMount,
        views: &Views,
        before: &Before,
        deadline: Duration,
    ) -> Result<MountResponse, PipelineError> {
        let target = req.target.as_path();
        let id = before
            .executor
            .ok_or_else(|| PipelineError::NotAMountPoint {
                target: target.to_owned(),
                namespace: views.executor.name.clone(),
            })?;
        let made = exec
            .mount(req, options, checked, deadline)
            .await
            .map_err(PipelineError::Execute)?;
        let output = options.scrub(&made.output);
        let wanted = Wanted::of(options);
        let root = &checked.target.root;
        let proved = match verify::changed(target, id, &wanted, views) {
            Ok(mount) => copies::given(target, root, &mount, &wanted, views, deadline)
                .await
                .map(|seen| (mount, seen)),
            Err(e) => Err(e),
        };
        let (mount, seen) = proved.map_err(|source| PipelineError::Change {
            source,
            output: output.clone(),
        })?;
        let recorded = self
            .record
            .get(target, id)
            .filter(|e| e.record.executor == exec.name());
        let record = match recorded {
            Some(entry) => {
                let entry = Entry {
                    record: MountRecord {
                        options: with_change(&entry.record.options, &options.shown()),
                        fstype: mount.fstype.clone(),
                        ..entry.record
                    },
                    ..entry
                };
                self.record
                    .update(entry.clone())
                    .map_err(|source| PipelineError::Update {
                        target: target.to_owned(),
                        source,
                    })?;
                self.changed.notify_one();
                entry.record
            }
            // Not the daemon's: changed, not adopted.
            None => MountRecord {
                target: target.to_owned(),
                executor: exec.name().to_owned(),
                source: options.scrub(&req.source),
                fstype: mount.fstype.clone(),
                options: options.shown(),
                mount_id: id,
                unique: None,
            },
        };
        info!(target = %target.display(), executor = exec.name(), mount_id = id,
            options = ?options.shown(), "changed and verified");
        Ok(MountResponse {
            record,
            seen,
            output,
        })
    }
}

/// A record's options after a change: each option of the change (but
/// `remount`) replaces the recorded ones it overrides (the other of a flag's
/// pair, an earlier propagation) and is kept once.
fn with_change(recorded: &[String], change: &[String]) -> Vec<String> {
    let mut options = recorded.to_vec();
    for option in change.iter().filter(|o| *o != "remount") {
        options.retain(|o| o != option && !overrides(option, o));
        options.push(option.clone());
    }
    options
}

/// Whether option `new` overrides option `old`: both set the same per-mount
/// flag (`rw` and `ro`), or both set a propagation.
fn overrides(new: &str, old: &str) -> bool {
    let flag = |o: &str| {
        VFS_OPTIONS
            .iter()
            .find(|(name, ..)| *name == o)
            .map(|(_, flag, _)| *flag)
            .filter(|flag| !flag.is_empty())
    };
    let propagation = |o: &str| propagation_of(o).is_some();
    (flag(new).is_some() && flag(new) == flag(old)) || (propagation(new) && propagation(old))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn strings(list: &[&str]) -> Vec<String> {
        list.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn a_change_replaces_what_it_overrides_in_the_recorded_options() {
        assert_eq!(
            with_change(&strings(&["bind"]), &strings(&["bind", "remount", "ro"])),
            strings(&["bind", "ro"])
        );
        assert_eq!(
            with_change(&strings(&["size=1m"]), &strings(&["private"])),
            strings(&["size=1m", "private"])
        );
        // What a change overrides goes: a flag's other half, an earlier propagation.
        let recorded = strings(&["size=1m", "nosuid", "ro", "make-rshared"]);
        assert_eq!(
            with_change(&recorded, &strings(&["remount", "rw", "dev"])),
            strings(&["size=1m", "nosuid", "make-rshared", "rw", "dev"])
        );
        assert_eq!(
            with_change(&recorded, &strings(&["make-private"])),
            strings(&["size=1m", "nosuid", "ro", "make-private"])
        );
    }
}
