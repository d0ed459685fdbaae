//! Changes to the mount already on a target: a remount (with or without bind)
//! or a propagation change. Policy and the target's turn are those of a new
//! mount; the executor makes one call on the target's handle; the proof is that
//! the same mount is still there and now shows what was asked; the record of a
//! mount the daemon made is brought up to date, never duplicated. Nothing new
//! was mounted, so nothing is undone.

use std::time::Duration;

use tracing::info;

use crate::api::wire::{MountRecord, MountRequest, MountResponse};
use crate::daemon::error::PipelineError;
use crate::daemon::mount::Before;
use crate::daemon::record::Entry;
use crate::daemon::verify::{self, Views, Wanted};
use crate::daemon::Daemon;
use crate::executor::Executor;
use crate::mount::options::MountOptions;
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
        let (mount, seen) =
            verify::changed(target, id, &Wanted::of(options), views).map_err(|source| {
                PipelineError::Change {
                    source,
                    output: output.clone(),
                }
            })?;
        let recorded = self
            .record
            .get(id)
            .filter(|e| e.record.target == target && e.record.executor == exec.name());
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

/// A record's options after a change: the change's options appended, except
/// `remount` and options already there.
fn with_change(recorded: &[String], change: &[String]) -> Vec<String> {
    let mut options = recorded.to_vec();
    for option in change {
        if option != "remount" && !options.contains(option) {
            options.push(option.clone());
        }
    }
    options
}

#[cfg(test)]
mod tests {
    use super::*;

    fn strings(list: &[&str]) -> Vec<String> {
        list.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn a_change_is_added_to_the_recorded_options_once() {
        assert_eq!(
            with_change(&strings(&["bind"]), &strings(&["bind", "remount", "ro"])),
            strings(&["bind", "ro"])
        );
        assert_eq!(
            with_change(&strings(&["size=1m"]), &strings(&["private"])),
            strings(&["size=1m", "private"])
        );
    }
}
