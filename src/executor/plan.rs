//! What a request asks of the kernel, decided once from its options: a bind of
//! the checked source, a move, a change of the mount on the target, or a new
//! filesystem; and a new overlay's layers as their checked handles.

use std::ffi::{OsStr, OsString};
use std::os::fd::OwnedFd;

use crate::api::wire::MountRequest;
use crate::mount::options::{MountOptions, VFS_OPTIONS};
use crate::mount::syscall::MsFlags;
use crate::ns::beneath::fd_path;
use crate::policy::CheckedSource;

/// What a request asks of the kernel, decided from its options.
pub(super) enum Plan {
    /// A bind (rbind: `recursive`) of the checked source, with mount flags and a
    /// propagation change after it.
    Bind {
        recursive: bool,
        flags: MsFlags,
        propagation: Option<(MsFlags, bool)>,
    },
    /// A move of the checked source's mount.
    Move,
    /// A change of the mount on the target (remount, propagation): one mount(2)
    /// on the target's handle. `named`: the flags the request's VFS options set
    /// or clear; a remount keeps the mount's other flags, as mount(8) does.
    Change {
        flags: MsFlags,
        data: OsString,
        named: MsFlags,
    },
    /// A new filesystem: one fsmount when that is all mount(8) would do, else
    /// mount(8) on a staging point.
    New,
}

/// Propagation options: name, flag, recursive.
const PROPAGATION: &[(&str, MsFlags, bool)] = &[
    ("shared", MsFlags::MS_SHARED, false),
    ("rshared", MsFlags::MS_SHARED, true),
    ("slave", MsFlags::MS_SLAVE, false),
    ("rslave", MsFlags::MS_SLAVE, true),
    ("private", MsFlags::MS_PRIVATE, false),
    ("rprivate", MsFlags::MS_PRIVATE, true),
    ("unbindable", MsFlags::MS_UNBINDABLE, false),
    ("runbindable", MsFlags::MS_UNBINDABLE, true),
];

/// The propagation an option sets (`private`, `make-rslave`): its flag, and
/// whether it is recursive.
pub fn propagation_of(option: &str) -> Option<(MsFlags, bool)> {
    let name = option.strip_prefix("make-").unwrap_or(option);
    PROPAGATION
        .iter()
        .find(|(n, ..)| *n == name)
        .map(|(_, flag, rec)| (*flag, *rec))
}

/// What `req`, with its parsed `options`, asks of the kernel.
pub(super) fn plan(req: &MountRequest, options: &MountOptions) -> Plan {
    let pieces: Vec<&str> = options.iter().map(|o| o.text()).collect();
    let has = |name: &str| options.has(name);
    let bind_type = matches!(req.fstype.as_str(), "none" | "bind" | "rbind");
    let recursive = has("rbind") || req.fstype == "rbind";
    let mut flags = MsFlags::empty();
    let mut named = MsFlags::empty();
    let mut data = Vec::new();
    let mut propagation = None;
    for piece in &pieces {
        let name = piece.strip_prefix("make-").unwrap_or(piece);
        if let Some((_, flag, set)) = VFS_OPTIONS.iter().find(|(n, ..)| *n == name) {
            flags.set(*flag, *set);
            named |= *flag;
        } else if let Some(found) = propagation_of(piece) {
            propagation = Some(found);
        } else if !matches!(name, "bind" | "rbind" | "remount" | "move") {
            data.push(*piece);
        }
    }
    if has("move") {
        Plan::Move
    } else if has("remount") {
        let mut flags = flags | MsFlags::MS_REMOUNT;
        flags.set(MsFlags::MS_BIND, has("bind"));
        Plan::Change {
            flags,
            data: data.join(",").into(),
            named,
        }
    } else if has("bind") || recursive || bind_type {
        Plan::Bind {
            recursive,
            flags,
            propagation,
        }
    } else if let (Some((flag, rec)), true) =
        (propagation, req.source.is_empty() || data.is_empty())
    {
        let mut flags = flag;
        flags.set(MsFlags::MS_REC, rec);
        Plan::Change {
            flags,
            data: OsString::new(),
            named: MsFlags::empty(),
        }
    } else {
        Plan::New
    }
}

/// Whether `req` changes the mount already on its target (a remount, or a
/// propagation change alone) rather than making one.
pub fn changes(req: &MountRequest, options: &MountOptions) -> bool {
    matches!(plan(req, options), Plan::Change { .. })
}

/// The per-mount flags mountinfo shows, as mount(2) takes them.
const MOUNT_FLAGS: &[(&str, MsFlags)] = &[
    ("ro", MsFlags::MS_RDONLY),
    ("nosuid", MsFlags::MS_NOSUID),
    ("nodev", MsFlags::MS_NODEV),
    ("noexec", MsFlags::MS_NOEXEC),
    ("noatime", MsFlags::MS_NOATIME),
    ("nodiratime", MsFlags::MS_NODIRATIME),
    ("relatime", MsFlags::MS_RELATIME),
    ("nosymfollow", MsFlags::from_bits_retain(256)),
];

/// The access-time flags: naming one replaces the others.
const ATIME: MsFlags = MsFlags::MS_NOATIME
    .union(MsFlags::MS_RELATIME)
    .union(MsFlags::MS_STRICTATIME);

/// A remount's `flags` with the flags the mount has now (`current`: mountinfo's
/// per-mount options, `rw,nosuid,relatime`) that the request did not name, so
/// `remount,ro` of a `nosuid` mount stays `nosuid`, as with mount(8).
pub(super) fn keep_current(flags: MsFlags, named: MsFlags, current: &str) -> MsFlags {
    let named = match named.intersects(ATIME) {
        true => named | ATIME,
        false => named,
    };
    current
        .split(',')
        .filter_map(|o| MOUNT_FLAGS.iter().find(|(n, _)| *n == o))
        .map(|(_, flag)| *flag)
        .filter(|flag| !named.intersects(*flag))
        .fold(flags, |flags, flag| flags | flag)
}

/// The filesystem's own options without the overlay layers' (given as
/// handles instead, by [`with_layers`] or [`layer_files`]).
pub(super) fn without_layers(data: &str, layers: &[(String, CheckedSource)]) -> Vec<OsString> {
    let keys: Vec<&str> = layers.iter().map(|(k, _)| k.as_str()).collect();
    data.split(',')
        .filter(|p| !p.split_once('=').is_some_and(|(k, _)| keys.contains(&k)))
        .map(OsString::from)
        .collect()
}

/// The filesystem's own options with each overlay layer replaced by its checked
/// handle's magic link (`lowerdir=/proc/thread-self/fd/7:/proc/thread-self/fd/8`),
/// so the kernel takes the layers that were checked, not their names again. Must
/// be used on the thread that makes the mount. For kernels that take no layer
/// by fd (before Linux 6.13) and mount(2).
pub(super) fn with_layers(data: &str, layers: &[(String, CheckedSource)]) -> Vec<OsString> {
    let mut pieces = without_layers(data, layers);
    if layers.is_empty() {
        return pieces;
    }
    let link = |layer: &CheckedSource| fd_path(layer.fd()).into_os_string();
    let lower: Vec<OsString> = layers
        .iter()
        .filter(|(k, _)| k == "lowerdir")
        .map(|(_, l)| link(l))
        .collect();
    if !lower.is_empty() {
        let mut piece = OsString::from("lowerdir=");
        piece.push(lower.join(OsStr::new(":")));
        pieces.push(piece);
    }
    for (key, layer) in layers.iter().filter(|(k, _)| k != "lowerdir") {
        let mut piece = OsString::from(format!("{key}="));
        piece.push(link(layer));
        pieces.push(piece);
    }
    pieces
}

/// Each overlay layer as fsconfig(FSCONFIG_SET_FD) takes it (Linux 6.13+): its
/// key (a lower layer appended as `lowerdir+`, in order) and its checked handle
/// reopened for reading, since fsconfig takes no `O_PATH` file. The kernel then
/// names each layer by its path, as mount(8)'s mounts show them.
pub(super) fn layer_files(
    layers: &[(String, CheckedSource)],
) -> std::io::Result<Vec<(&'static str, OwnedFd)>> {
    use rustix::fs::{openat, Mode, OFlags};
    layers
        .iter()
        .map(|(key, layer)| {
            let key = match key.as_str() {
                "lowerdir" | "lowerdir+" => "lowerdir+",
                "upperdir" => "upperdir",
                "workdir" => "workdir",
                "datadir+" => "datadir+",
                other => {
                    let what = format!("{other} is not an overlay layer option");
                    return Err(std::io::Error::new(std::io::ErrorKind::InvalidInput, what));
                }
            };
            // "." beneath the handle: the same directory, named by nothing a
            // caller can change.
            let flags = OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC;
            let file = openat(layer.fd(), ".", flags, Mode::empty())?;
            Ok((key, file))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plan(req: &MountRequest) -> Plan {
        super::plan(req, &MountOptions::of(req, &[]))
    }

    fn req(fstype: &str, options: &[&str]) -> MountRequest {
        MountRequest {
            source: "/k/plugins/src".into(),
            target: "/k/pods/p/v".into(),
            fstype: fstype.into(),
            options: options.iter().map(|o| o.to_string()).collect(),
            ..MountRequest::default()
        }
    }

    #[test]
    fn overlay_layers_are_given_as_their_handles() {
        use std::os::fd::AsRawFd;
        let dir = tempfile::tempdir().unwrap();
        let layer = |name: &str| {
            let path = dir.path().join(name);
            std::fs::create_dir(&path).unwrap();
            let fd = crate::ns::beneath::open_root(&path).unwrap();
            CheckedSource { path, fd }
        };
        let layers = vec![
            ("lowerdir".to_string(), layer("a")),
            ("lowerdir".to_string(), layer("b")),
            ("upperdir".to_string(), layer("u")),
            ("workdir".to_string(), layer("w")),
        ];
        let fd = |i: usize| layers[i].1.fd.as_raw_fd();
        let data = with_layers("lowerdir=/x:/y,index=off,upperdir=/u,workdir=/w", &layers);
        let want = [
            "index=off".to_string(),
            format!(
                "lowerdir=/proc/thread-self/fd/{}:/proc/thread-self/fd/{}",
                fd(0),
                fd(1)
            ),
            format!("upperdir=/proc/thread-self/fd/{}", fd(2)),
            format!("workdir=/proc/thread-self/fd/{}", fd(3)),
        ];
        assert_eq!(data, want.map(OsString::from).to_vec());
        assert_eq!(with_layers("size=1m", &[]), vec![OsString::from("size=1m")]);
        // By fd: the other options alone, then each layer reopened, lower ones
        // appended in order.
        let rest = without_layers("lowerdir=/x:/y,index=off,upperdir=/u,workdir=/w", &layers);
        assert_eq!(rest, vec![OsString::from("index=off")]);
        let files = layer_files(&layers).unwrap();
        let keys: Vec<&str> = files.iter().map(|(k, _)| *k).collect();
        assert_eq!(keys, ["lowerdir+", "lowerdir+", "upperdir", "workdir"]);
        for ((_, file), (_, layer)) in files.iter().zip(&layers) {
            let shown = std::fs::read_link(fd_path(std::os::fd::AsFd::as_fd(file))).unwrap();
            assert_eq!(shown, layer.path);
            let flags = rustix::fs::fcntl_getfl(file).unwrap();
            assert!(
                !flags.contains(rustix::fs::OFlags::PATH),
                "fsconfig takes no O_PATH file"
            );
        }
    }

    #[test]
    fn options_decide_the_kernel_calls() {
        let bind = plan(&req("", &["bind,ro,nosuid", "private"]));
        assert!(
            matches!(bind, Plan::Bind { recursive: false, flags, propagation: Some((MsFlags::MS_PRIVATE, false)) }
            if flags == MsFlags::MS_RDONLY | MsFlags::MS_NOSUID)
        );
        assert!(matches!(
            plan(&req("rbind", &[])),
            Plan::Bind {
                recursive: true,
                ..
            }
        ));
        assert!(matches!(plan(&req("", &["move"])), Plan::Move));
        let remount = plan(&req("", &["bind,remount,ro"]));
        assert!(matches!(remount, Plan::Change { flags, .. }
            if flags == MsFlags::MS_BIND | MsFlags::MS_REMOUNT | MsFlags::MS_RDONLY));
        let private = plan(&MountRequest {
            source: String::new(),
            ..req("", &["make-rprivate"])
        });
        assert!(
            matches!(private, Plan::Change { flags, .. } if flags == MsFlags::MS_PRIVATE | MsFlags::MS_REC)
        );
        assert!(matches!(plan(&req("tmpfs", &["size=1m", "ro"])), Plan::New));
        for (asked, change) in [
            (req("tmpfs", &["remount,size=2m"]), true),
            (req("", &["make-private"]), true),
            (req("", &["bind", "private"]), false),
            (req("tmpfs", &["size=1m"]), false),
        ] {
            let options = MountOptions::of(&asked, &[]);
            assert_eq!(changes(&asked, &options), change, "{:?}", asked.options);
        }
    }

    #[test]
    fn a_remount_keeps_the_flags_it_does_not_name() {
        let Plan::Change { flags, named, .. } = plan(&req("", &["bind,remount,ro"])) else {
            panic!("not a change");
        };
        let kept = keep_current(flags, named, "rw,nosuid,nodev,noatime");
        assert_eq!(
            kept,
            flags | MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOATIME
        );
        // Named flags win, set or cleared; one access-time option replaces the other.
        let Plan::Change { flags, named, .. } = plan(&req("", &["remount,rw,suid,relatime"]))
        else {
            panic!("not a change");
        };
        let kept = keep_current(flags, named, "ro,nosuid,nodev,noatime");
        assert_eq!(
            kept,
            MsFlags::MS_REMOUNT | MsFlags::MS_RELATIME | MsFlags::MS_NODEV
        );
    }
}
