//! The filesystem type of a device or file when the caller leaves it to be
//! probed (no type, `auto`, or a list such as `xfs,ext4`): asked of libblkid
//! (`blkid -p`), so that the daemon routes by the type found and never runs a
//! mount(8) that would probe by calling sidemount's own helper. A source that is
//! no device or file gets the type mount(8) guesses from its shape.

use std::ffi::OsString;
use std::path::Path;
use std::time::Duration;

use super::exec::ExecError;
use super::util_linux::run;

/// The types a request allows when its type is to be probed: `None` for a
/// single named type; an empty list for no type or `auto` (any); else the list.
pub fn allowed(fstype: &str) -> Option<Vec<&str>> {
    match fstype {
        "" | "auto" => Some(Vec::new()),
        list if list.contains(',') => Some(list.split(',').filter(|t| !t.is_empty()).collect()),
        _ => None,
    }
}

/// The type mount(8) gives a source it cannot probe, as libmount guesses it
/// (`mnt_context_guess_srcpath_fstype`): `cifs` for `//server/share`, `nfs` for
/// `host:/export`; `None` for anything else (an absolute path, a name).
pub fn guess(source: &str) -> Option<&'static str> {
    if source.starts_with("//") {
        Some("cifs")
    } else if !source.starts_with('/') && source.contains(':') {
        Some("nfs")
    } else {
        None
    }
}

/// The type libblkid finds on `device` (a block device, or a file through its
/// handle's `/proc/PID/fd/N`).
pub async fn probe(device: &Path, deadline: Duration) -> Result<String, ExecError> {
    let args: Vec<OsString> = ["-p", "-o", "value", "-s", "TYPE", "--"]
        .iter()
        .map(OsString::from)
        .chain(std::iter::once(device.as_os_str().to_owned()))
        .collect();
    let output = run("blkid", &args, None, deadline).await?;
    Ok(output.trim().to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_type_is_probed_when_none_auto_or_a_list_is_given() {
        assert_eq!(allowed(""), Some(vec![]));
        assert_eq!(allowed("auto"), Some(vec![]));
        assert_eq!(allowed("xfs,ext4"), Some(vec!["xfs", "ext4"]));
        assert_eq!(allowed("ext4"), None);
        assert_eq!(allowed("fuse.sshfs"), None);
    }

    #[test]
    fn network_sources_are_guessed_as_mount8_does() {
        assert_eq!(guess("server:/export"), Some("nfs"));
        assert_eq!(guess("[fd00::1]:/export"), Some("nfs"));
        assert_eq!(guess("//server/share"), Some("cifs"));
        assert_eq!(guess("tmpfs"), None);
        assert_eq!(guess("/dev/sdb"), None);
        assert_eq!(guess("/weird:name"), None);
    }
}
