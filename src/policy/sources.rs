//! What may be mounted, for every type: pseudo filesystems only when configured;
//! bind, overlay-layer and loop-file sources below the source roots, resolved to
//! handles; block devices, mounted or their node bound, only from configured
//! patterns and never the device that backs `/` or the kubelet root; and, for a peer that is not root, no loop
//! or block source and `nosuid,nodev` always. Each refusal names its rule and the
//! configuration key that changes it.

use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};

use crate::api::wire::MountRequest;
use crate::mount::options::MountOptions;
use crate::policy::fd_source::names_a_descriptor;

/// Filesystems that expose the kernel or the host rather than hold a volume.
pub const PSEUDO_FILESYSTEMS: &[&str] = &[
    "proc",
    "sysfs",
    "devtmpfs",
    "devpts",
    "debugfs",
    "tracefs",
    "securityfs",
    "cgroup",
    "cgroup2",
    "bpf",
    "configfs",
    "pstore",
    "efivarfs",
    "binfmt_misc",
    "fusectl",
    "mqueue",
    "hugetlbfs",
    "autofs",
    "rpc_pipefs",
    "nsfs",
    "selinuxfs",
    "smackfs",
    "nfsd",
];

/// Block devices volume plugins attach (the default of `block_device_patterns`):
/// iSCSI and Fibre Channel disks by path, RBD, NVMe namespaces, device-mapper.
pub const DEFAULT_BLOCK_DEVICES: &[&str] = &[
    "/dev/disk/by-path/*",
    "/dev/disk/by-id/*",
    "/dev/sd*",
    "/dev/rbd*",
    "/dev/rbd/*/*",
    "/dev/nvme*n*",
    "/dev/dm-*",
    "/dev/mapper/*",
];

/// Which sources the configuration allows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SourceRules {
    /// Block devices that may be mounted, as glob patterns (`block_device_patterns`).
    pub block_devices: Vec<String>,
    /// The devices backing `/` and the kubelet root may be mounted too
    /// (`allow_root_devices`).
    pub root_devices: bool,
    /// Pseudo filesystems that may be mounted (`allowed_pseudo_filesystems`).
    pub pseudo_filesystems: Vec<String>,
    /// Peers other than root may mount loop files and block devices, still
    /// `nosuid,nodev` (`allow_non_root_devices`).
    pub non_root_devices: bool,
    /// The devices of `/` and the kubelet root (st_dev), found at start.
    pub protected_devices: Vec<u64>,
}

impl Default for SourceRules {
    /// The safe defaults: the device patterns volume plugins use, nothing else.
    fn default() -> Self {
        SourceRules {
            block_devices: DEFAULT_BLOCK_DEVICES
                .iter()
                .map(|s| s.to_string())
                .collect(),
            root_devices: false,
            pseudo_filesystems: Vec::new(),
            non_root_devices: false,
            protected_devices: Vec::new(),
        }
    }
}

/// A refusal: the rule, what broke it, and the configuration key that allows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    pub rule: &'static str,
    pub detail: String,
    pub key: &'static str,
}

/// What the source of a request is, as far as the rules go.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    /// No path: a server export, a tmpfs name.
    Name,
    /// A path to check below the source roots (bind, move, loop file), and
    /// whether it is a loop file.
    Path { path: PathBuf, loop_file: bool },
    /// A block device, allowed.
    Device,
    /// A block device node bound elsewhere (the kubelet maps a raw block volume
    /// by `mount -o bind DEV FILE`), allowed by the same rules as mounting it;
    /// its node is checked again when it is opened.
    DeviceNode { path: PathBuf, rdev: u64 },
}

impl SourceRules {
    /// The devices a rule protects: those of `/` and of `kubelet_root`.
    pub fn protect(&mut self, paths: &[&Path]) {
        for p in paths {
            if let Ok(m) = std::fs::metadata(p) {
                if !self.protected_devices.contains(&m.dev()) {
                    self.protected_devices.push(m.dev());
                }
            }
        }
    }

    /// Checks `req`'s type and source, with its parsed `options`, for a peer
    /// (`root`: uid 0); `bind`: it takes a path as its source. Returns what the
    /// source is.
    pub fn check(
        &self,
        req: &MountRequest,
        options: &MountOptions,
        bind: bool,
        root: bool,
    ) -> Result<Source, Refusal> {
        let fstype = req.fstype.as_str();
        if PSEUDO_FILESYSTEMS.contains(&fstype)
            && !self.pseudo_filesystems.iter().any(|t| t == fstype)
        {
            return Err(Refusal {
                rule: "pseudo filesystem",
                detail: format!("filesystem type {fstype} exposes the kernel, not a volume"),
                key: "allowed_pseudo_filesystems",
            });
        }
        let source = Path::new(&req.source);
        if bind {
            // A name of a caller's fd means another process's here: never looked
            // at, the caller's handle stands for it (see `fd_source`).
            let named = source.is_absolute() && !names_a_descriptor(source);
            let meta = named.then(|| std::fs::metadata(source));
            return match meta {
                Some(Ok(m)) if m.file_type().is_block_device() => {
                    self.device(source, m.rdev(), root)?;
                    Ok(Source::DeviceNode {
                        path: source.to_owned(),
                        rdev: m.rdev(),
                    })
                }
                _ => Ok(Source::Path {
                    path: source.to_owned(),
                    loop_file: false,
                }),
            };
        }
        let looped = options.has("loop");
        if !source.is_absolute() {
            if TAGS.iter().any(|t| req.source.starts_with(t)) {
                return Err(self.device_refusal(
                    &req.source,
                    "a tag names no device that can be checked; name the device",
                ));
            }
            return Ok(Source::Name);
        }
        let meta = std::fs::metadata(source);
        let is_device = meta.as_ref().is_ok_and(|m| m.file_type().is_block_device());
        let is_file = meta.as_ref().is_ok_and(|m| m.is_file());
        if looped || is_file {
            if !root && !self.non_root_devices {
                return Err(Refusal {
                    rule: "non-root peer",
                    detail: format!(
                        "a peer other than root may not mount the loop file {}",
                        source.display()
                    ),
                    key: "allow_non_root_devices",
                });
            }
            return Ok(Source::Path {
                path: source.to_owned(),
                loop_file: true,
            });
        }
        if !is_device {
            return Ok(Source::Name);
        }
        self.device(source, meta.map(|m| m.rdev()).unwrap_or_default(), root)?;
        Ok(Source::Device)
    }

    /// The rules for the block device `source` (number `rdev`): a peer that may
    /// use devices, a configured pattern, and never the device behind `/` or the
    /// kubelet root.
    fn device(&self, source: &Path, rdev: u64, root: bool) -> Result<(), Refusal> {
        if !root && !self.non_root_devices {
            return Err(Refusal {
                rule: "non-root peer",
                detail: format!(
                    "a peer other than root may not mount the block device {}",
                    source.display()
                ),
                key: "allow_non_root_devices",
            });
        }
        let canonical = std::fs::canonicalize(source).unwrap_or_else(|_| source.to_owned());
        let listed = [source, canonical.as_path()].iter().any(|p| {
            self.block_devices
                .iter()
                .any(|pat| glob(pat, &p.to_string_lossy()))
        });
        if !listed {
            return Err(self.device_refusal(
                &source.display().to_string(),
                &format!("it matches none of {}", self.block_devices.join(", ")),
            ));
        }
        if !self.root_devices && self.backs_protected(rdev) {
            return Err(Refusal {
                rule: "root device",
                detail: format!("{} backs / or the kubelet root", source.display()),
                key: "allow_root_devices",
            });
        }
        Ok(())
    }

    fn device_refusal(&self, source: &str, why: &str) -> Refusal {
        Refusal {
            rule: "block device",
            detail: format!("block device {source} is not allowed: {why}"),
            key: "block_device_patterns",
        }
    }

    /// Whether the device `rdev` is, or holds as a partition, a protected device.
    fn backs_protected(&self, rdev: u64) -> bool {
        self.protected_devices
            .iter()
            .any(|&dev| dev == rdev || parent_disk(dev).is_some_and(|disk| disk == rdev))
    }
}

/// Sources mount(8) resolves to a device itself.
const TAGS: &[&str] = &["LABEL=", "UUID=", "PARTLABEL=", "PARTUUID=", "ID="];

/// The whole disk a partition `dev` is part of, from sysfs.
fn parent_disk(dev: u64) -> Option<u64> {
    let (major, minor) = (nix::sys::stat::major(dev), nix::sys::stat::minor(dev));
    let sys = PathBuf::from(format!("/sys/dev/block/{major}:{minor}"));
    if !sys.join("partition").exists() {
        return None;
    }
    let text = std::fs::read_to_string(sys.join("../dev")).ok()?;
    let (ma, mi) = text.trim().split_once(':')?;
    Some(nix::sys::stat::makedev(ma.parse().ok()?, mi.parse().ok()?))
}

/// Whether `path` matches `pattern`, where `*` stands for any run of characters
/// other than `/`.
pub fn glob(pattern: &str, path: &str) -> bool {
    match pattern.split_once('*') {
        None => pattern == path,
        Some((head, tail)) => {
            let Some(rest) = path.strip_prefix(head) else {
                return false;
            };
            (0..=rest.len())
                .take_while(|&i| !rest[..i].contains('/'))
                .filter(|&i| rest.is_char_boundary(i))
                .any(|i| glob(tail, &rest[i..]))
        }
    }
}

/// The values of overlay's layer options (`lowerdir` split at unescaped `:`,
/// `upperdir`, `workdir`, `lowerdir+`, `datadir+`), each a path to check below the
/// source roots.
pub fn overlay_layers(options: &MountOptions) -> Vec<(String, PathBuf)> {
    let mut layers = Vec::new();
    for option in options.iter() {
        let (key, Some(value)) = (option.name(), option.value()) else {
            continue;
        };
        match key {
            "lowerdir" => {
                let mut current = String::new();
                let mut chars = value.chars();
                while let Some(c) = chars.next() {
                    match c {
                        '\\' => current.extend(chars.next()),
                        ':' => layers
                            .push((key.to_owned(), PathBuf::from(std::mem::take(&mut current)))),
                        c => current.push(c),
                    }
                }
                layers.push((key.to_owned(), PathBuf::from(current)));
            }
            "upperdir" | "workdir" | "lowerdir+" | "datadir+" => {
                layers.push((key.to_owned(), PathBuf::from(value)));
            }
            _ => {}
        }
    }
    layers.retain(|(_, p)| !p.as_os_str().is_empty());
    layers
}

/// The options a peer other than root always gets: `nosuid,nodev` appended, so
/// they win over a `suid` or `dev` before them.
pub fn force_nosuid_nodev(req: &mut MountRequest) {
    req.options.push("nosuid,nodev".into());
}

#[cfg(test)]
mod tests {
    use super::*;

    impl SourceRules {
        /// Checks a request with its options parsed as the daemon parses them.
        fn check_req(&self, req: &MountRequest, bind: bool, root: bool) -> Result<Source, Refusal> {
            self.check(req, &MountOptions::of(req, &[]), bind, root)
        }
    }

    fn rules() -> SourceRules {
        SourceRules {
            block_devices: DEFAULT_BLOCK_DEVICES
                .iter()
                .map(|s| s.to_string())
                .collect(),
            root_devices: false,
            pseudo_filesystems: vec![],
            non_root_devices: false,
            protected_devices: vec![],
        }
    }

    fn req(source: &str, fstype: &str, options: &[&str]) -> MountRequest {
        MountRequest {
            source: source.into(),
            target: "/k/pods/p/v".into(),
            fstype: fstype.into(),
            options: options.iter().map(|o| o.to_string()).collect(),
            ..MountRequest::default()
        }
    }

    #[test]
    fn pseudo_filesystems_are_refused_unless_configured() {
        for fstype in [
            "proc",
            "sysfs",
            "devtmpfs",
            "cgroup2",
            "debugfs",
            "securityfs",
        ] {
            let refusal = rules()
                .check_req(&req(fstype, fstype, &[]), false, true)
                .unwrap_err();
            assert_eq!(
                (refusal.rule, refusal.key),
                ("pseudo filesystem", "allowed_pseudo_filesystems")
            );
        }
        let mut allowed = rules();
        allowed.pseudo_filesystems = vec!["proc".into()];
        assert_eq!(
            allowed.check_req(&req("proc", "proc", &[]), false, true),
            Ok(Source::Name)
        );
        assert_eq!(
            rules().check_req(&req("tmpfs", "tmpfs", &[]), false, true),
            Ok(Source::Name)
        );
    }

    #[test]
    fn devices_need_a_pattern_root_and_never_back_the_root() {
        // /dev/null is a character device: a name to the rules; /dev/zero likewise.
        assert_eq!(
            rules().check_req(&req("/dev/null", "ext4", &[]), false, true),
            Ok(Source::Name)
        );
        let Some(root_dev) = std::fs::metadata("/").ok().map(|m| m.dev()) else {
            return;
        };
        // The block device that backs / (when there is one in /dev).
        let backing = std::fs::read_dir("/dev")
            .unwrap()
            .filter_map(Result::ok)
            .find(|e| {
                e.metadata()
                    .is_ok_and(|m| m.file_type().is_block_device() && m.rdev() == root_dev)
            });
        if let Some(dev) = backing {
            let path = dev.path().display().to_string();
            let mut any = rules();
            any.block_devices = vec!["/dev/*".into()];
            any.protect(&[Path::new("/")]);
            let refusal = any
                .check_req(&req(&path, "ext4", &[]), false, true)
                .unwrap_err();
            assert_eq!(
                (refusal.rule, refusal.key),
                ("root device", "allow_root_devices"),
                "{path}"
            );
            let refusal = any
                .check_req(&req(&path, "ext4", &[]), false, false)
                .unwrap_err();
            assert_eq!(refusal.key, "allow_non_root_devices");
            any.root_devices = true;
            assert_eq!(
                any.check_req(&req(&path, "ext4", &[]), false, true),
                Ok(Source::Device)
            );
            let mut none = rules();
            none.block_devices = vec!["/dev/rbd*".into()];
            let refusal = none
                .check_req(&req(&path, "ext4", &[]), false, true)
                .unwrap_err();
            assert_eq!(refusal.key, "block_device_patterns");
        }
        let refusal = rules()
            .check_req(&req("UUID=1234", "ext4", &[]), false, true)
            .unwrap_err();
        assert_eq!(refusal.key, "block_device_patterns");
    }

    #[test]
    fn loop_files_are_paths_to_check_and_not_for_non_root_peers() {
        let file = tempfile::NamedTempFile::new().unwrap();
        let path = file.path().display().to_string();
        let loop_of = |p: &str| Source::Path {
            path: p.into(),
            loop_file: true,
        };
        assert_eq!(
            rules().check_req(&req(&path, "ext4", &["loop"]), false, true),
            Ok(loop_of(&path))
        );
        assert_eq!(
            rules().check_req(&req(&path, "ext4", &[]), false, true),
            Ok(loop_of(&path))
        );
        let refusal = rules()
            .check_req(&req(&path, "ext4", &["ro,loop"]), false, false)
            .unwrap_err();
        assert_eq!(
            (refusal.rule, refusal.key),
            ("non-root peer", "allow_non_root_devices")
        );
        let bind = rules()
            .check_req(&req("/k/x", "", &["bind"]), true, false)
            .unwrap();
        assert_eq!(
            bind,
            Source::Path {
                path: "/k/x".into(),
                loop_file: false
            }
        );
    }

    #[test]
    fn a_bound_device_node_passes_the_device_rules() {
        let Some(dev) =
            crate::testing::block_device_or_skip("a_bound_device_node_passes_the_device_rules")
        else {
            return;
        };
        let path = dev.display().to_string();
        let rdev = std::fs::metadata(&dev).unwrap().rdev();
        let mut none = rules();
        none.block_devices = vec!["/dev/none*".into()];
        let refusal = none
            .check_req(&req(&path, "", &["bind"]), true, true)
            .unwrap_err();
        assert_eq!(refusal.key, "block_device_patterns", "{path}");
        let mut any = rules();
        any.block_devices = vec!["/dev/*".into()];
        assert_eq!(
            any.check_req(&req(&path, "", &["bind"]), true, true),
            Ok(Source::DeviceNode {
                path: path.clone().into(),
                rdev
            })
        );
        let refusal = any
            .check_req(&req(&path, "", &["bind"]), true, false)
            .unwrap_err();
        assert_eq!(refusal.key, "allow_non_root_devices");
        // A caller's fd is never looked at by its name here.
        assert_eq!(
            any.check_req(&req("/proc/self/fd/0", "", &["bind"]), true, true),
            Ok(Source::Path {
                path: "/proc/self/fd/0".into(),
                loop_file: false
            })
        );
    }

    #[test]
    fn globs_stop_at_slashes() {
        assert!(glob("/dev/sd*", "/dev/sdb1"));
        assert!(glob("/dev/nvme*n*", "/dev/nvme0n1p2"));
        assert!(glob("/dev/rbd/*/*", "/dev/rbd/pool/img"));
        assert!(!glob("/dev/sd*", "/dev/sdb/x"));
        assert!(!glob("/dev/rbd*", "/dev/vda"));
        assert!(glob("/dev/loop7", "/dev/loop7"));
    }

    #[test]
    fn overlay_layers_are_every_path_option() {
        let r = req(
            "overlay",
            "overlay",
            &[
                "lowerdir=/k/a:/k/b\\:c,upperdir=/k/u",
                "workdir=/k/w,index=off",
            ],
        );
        let layers: Vec<(String, String)> = overlay_layers(&MountOptions::of(&r, &[]))
            .into_iter()
            .map(|(k, p)| (k, p.display().to_string()))
            .collect();
        let want = [
            ("lowerdir", "/k/a"),
            ("lowerdir", "/k/b:c"),
            ("upperdir", "/k/u"),
            ("workdir", "/k/w"),
        ];
        let want: Vec<(String, String)> = want
            .iter()
            .map(|(k, p)| (k.to_string(), p.to_string()))
            .collect();
        assert_eq!(layers, want);
    }
}
