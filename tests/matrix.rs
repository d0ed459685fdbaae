//! The mount(8) compatibility matrix: each case runs three ways on fresh targets,
//! util-linux alone (`mount -i`/`umount -i`), the mounter path (`sidemount
//! mount|umount`) and mount(8)/umount(8) calling sidemount's helpers, and the three
//! must agree on the exit code, the key phrase of the error, and every mount left
//! at the target (type, source, VFS and filesystem options, propagation), unless
//! the case names one of the differences listed in README.md ("Behaving as
//! mount(8)"): refusals by policy, and how overlay layers are listed.
//!
//! One case is one line of a table: to cover more, add a line.

mod common;

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command};

use common::{install_helpers_line, kubelet_root, quote, sh, Daemon, Host, LoopDevice, SIDEMOUNT};
use serde_json::Value;

/// The three ways a caller reaches a mount.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Way {
    /// util-linux mount(8)/umount(8) with no helpers (`-i`).
    Direct,
    /// `sidemount mount|umount`, the kubelet's mounter path.
    Mounter,
    /// mount(8)/umount(8) finding sidemount's `mount.TYPE`/`umount.TYPE`.
    Helper,
}

const WAYS: [Way; 3] = [Way::Direct, Way::Mounter, Way::Helper];

impl Way {
    fn mount(self) -> String {
        match self {
            Way::Direct => "mount -i".into(),
            Way::Mounter => format!("{SIDEMOUNT} mount"),
            Way::Helper => "mount".into(),
        }
    }

    fn umount(self) -> String {
        match self {
            Way::Direct => "umount -i".into(),
            Way::Mounter => format!("{SIDEMOUNT} umount"),
            Way::Helper => "umount".into(),
        }
    }

    fn name(self) -> &'static str {
        match self {
            Way::Direct => "direct",
            Way::Mounter => "mounter",
            Way::Helper => "helper",
        }
    }
}

/// What a case does: a mount, or an unmount of what `pre` mounted (through the
/// same way), optionally while a process works in the target.
#[derive(Debug, Clone, Copy)]
enum Act {
    Mount,
    Umount {
        pre: &'static [&'static str],
        busy: bool,
    },
}

/// What the target is before the case runs.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Target {
    Dir,
    File,
    Missing,
}

/// A difference from util-linux that sidemount keeps on purpose, each listed
/// with its reason in README.md ("Behaving as mount(8)"); the matrix accepts no
/// other. Refusals by policy fail with exit 32, their words, nothing mounted.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Difference {
    /// Targets outside `target_roots`, sources outside `bind_source_roots`: the
    /// daemon is root and acts for pods.
    OutsideRoots,
    /// A target or bind source reached through a symbolic link: a pod can plant
    /// links in its volumes.
    Symlink,
    /// `LABEL=`/`UUID=` sources name no device that can be checked.
    Tag,
    /// Block devices outside `block_device_patterns`.
    DevicePattern,
    /// Pseudo filesystems unless `allowed_pseudo_filesystems`.
    Pseudo,
    /// Not a refusal: an overlay's layers reach the kernel as their checked
    /// handles, so its options list each lower layer as `lowerdir+=DIR` where
    /// mount(8)'s say `lowerdir=A:B`; the same directories, all else the same.
    LowerLayersOneByOne,
}

impl Difference {
    /// The words of a refusal's error; `None` for a difference that mounts.
    fn refusal(self) -> Option<&'static str> {
        match self {
            Difference::OutsideRoots => Some("outside the allowed roots"),
            Difference::Symlink => Some("symbolic link"),
            Difference::Tag => Some("tag"),
            Difference::DevicePattern => Some("block_device_patterns"),
            Difference::Pseudo => Some("pseudo filesystem"),
            Difference::LowerLayersOneByOne => None,
        }
    }
}

/// `mounts` with an overlay's `lowerdir+=A,lowerdir+=B` written as mount(8)
/// shows its layers, `lowerdir=A:B`.
fn lower_layers_joined(mounts: &[Value]) -> Vec<Value> {
    let mut mounts = mounts.to_vec();
    for m in &mut mounts {
        let Some(options) = m["fs-options"].as_str() else {
            continue;
        };
        let lower: Vec<&str> = options
            .split(',')
            .filter_map(|o| o.strip_prefix("lowerdir+="))
            .collect();
        let mut joined = Vec::new();
        for option in options.split(',') {
            match option.strip_prefix("lowerdir+=") {
                Some(first) if first == lower[0] => {
                    joined.push(format!("lowerdir={}", lower.join(":")))
                }
                Some(_) => {}
                None => joined.push(option.to_owned()),
            }
        }
        m["fs-options"] = Value::String(joined.join(","));
    }
    mounts
}

/// The ways that mount(8) does not hand to sidemount's helper.
const MOUNTER: &[Way] = &[Way::Mounter];
/// mount(8) -> helper only.
const HELPER: &[Way] = &[Way::Helper];
/// Both sidemount ways.
const SIDEMOUNT_WAYS: &[Way] = &[Way::Mounter, Way::Helper];

struct Case {
    name: &'static str,
    act: Act,
    target: Target,
    /// The arguments after `mount`/`umount`; placeholders: {dst} the way's own
    /// fresh target, {dir} a fresh directory of the way below the roots, {src} a
    /// directory and {file} a file below the roots, {outside} a directory outside
    /// them, {link} a symlink below the roots to {outside}, {lower} an overlay
    /// layer, {ext4} {xfs} {btrfs} images, {ext4dev} {xfsdev} {btrfsdev} loop
    /// devices over others, {ext4node} a node of {ext4dev} below the roots, {missing} a path that does not exist below the roots.
    args: &'static str,
    /// Per way (in the order of [`WAYS`]): `None` gives what util-linux gives,
    /// else the listed difference.
    expect: [Option<Difference>; 3],
}

const fn mount(name: &'static str, args: &'static str) -> Case {
    Case {
        name,
        act: Act::Mount,
        target: Target::Dir,
        args,
        expect: [None; 3],
    }
}

const fn umount(name: &'static str, pre: &'static [&'static str], args: &'static str) -> Case {
    Case {
        name,
        act: Act::Umount { pre, busy: false },
        target: Target::Dir,
        args,
        expect: [None; 3],
    }
}

impl Case {
    const fn on(mut self, target: Target) -> Case {
        self.target = target;
        self
    }

    const fn busy(mut self) -> Case {
        if let Act::Umount { pre, .. } = self.act {
            self.act = Act::Umount { pre, busy: true };
        }
        self
    }

    /// The `ways` differ from util-linux by `difference`, on purpose.
    const fn differs(mut self, difference: Difference, ways: &'static [Way]) -> Case {
        let mut i = 0;
        while i < ways.len() {
            self.expect[ways[i] as usize] = Some(difference);
            i += 1;
        }
        self
    }
}

const TMPFS: &[Case] = &[
    mount("tmpfs", "-t tmpfs tmpfs {dst}"),
    mount("tmpfs-size", "-t tmpfs -o size=1m tmpfs {dst}"),
    mount("tmpfs-size-pct", "-t tmpfs -o size=10% tmpfs {dst}"),
    mount(
        "tmpfs-nr-inodes",
        "-t tmpfs -o size=2m,nr_inodes=100 tmpfs {dst}",
    ),
    mount("tmpfs-mode", "-t tmpfs -o mode=0700 tmpfs {dst}"),
    mount("tmpfs-mode-sticky", "-t tmpfs -o mode=1777 tmpfs {dst}"),
    mount("tmpfs-uid-gid", "-t tmpfs -o uid=1000,gid=1000 tmpfs {dst}"),
    mount(
        "tmpfs-uid-name",
        "-t tmpfs -o uid=nobody,gid=nogroup tmpfs {dst}",
    ),
    mount("tmpfs-ro", "-t tmpfs -o ro tmpfs {dst}"),
    mount("tmpfs-rw", "-t tmpfs -o rw tmpfs {dst}"),
    mount("tmpfs-noatime", "-t tmpfs -o noatime tmpfs {dst}"),
    mount("tmpfs-strictatime", "-t tmpfs -o strictatime tmpfs {dst}"),
    mount("tmpfs-nodiratime", "-t tmpfs -o nodiratime tmpfs {dst}"),
    mount("tmpfs-lazytime", "-t tmpfs -o lazytime tmpfs {dst}"),
    mount(
        "tmpfs-nosuid-nodev-noexec",
        "-t tmpfs -o nosuid,nodev,noexec tmpfs {dst}",
    ),
    mount("tmpfs-sync-dirsync", "-t tmpfs -o sync,dirsync tmpfs {dst}"),
    mount("tmpfs-defaults", "-t tmpfs -o defaults tmpfs {dst}"),
    mount(
        "tmpfs-size-twice",
        "-t tmpfs -o size=1m,size=2m tmpfs {dst}",
    ),
    mount("tmpfs-ro-then-rw", "-t tmpfs -o ro,rw tmpfs {dst}"),
    mount("tmpfs-nosymfollow", "-t tmpfs -o nosymfollow tmpfs {dst}"),
    mount("tmpfs-noswap", "-t tmpfs -o noswap,size=1m tmpfs {dst}"),
    mount(
        "tmpfs-quoted-x",
        "-t tmpfs -o 'x-a=\"p,,q\",size=1m' tmpfs {dst}",
    ),
    mount("tmpfs-on-file", "-t tmpfs tmpfs {dst}").on(Target::File),
    mount(
        "tmpfs-x-option",
        "-t tmpfs -o x-kubernetes.io=1,size=1m tmpfs {dst}",
    ),
    mount("tmpfs-netdev", "-t tmpfs -o _netdev tmpfs {dst}"),
    mount("tmpfs-named-source", "-t tmpfs -o size=1m my-volume {dst}"),
    mount("tmpfs-mkdir", "-t tmpfs -o X-mount.mkdir tmpfs {dst}/a/b").on(Target::Missing),
    mount(
        "tmpfs-mkdir-mode",
        "-t tmpfs -o X-mount.mkdir=0700 tmpfs {dst}/a/b",
    )
    .on(Target::Missing),
    mount(
        "tmpfs-mkdir-bad-mode",
        "-t tmpfs -o X-mount.mkdir=999 tmpfs {dst}/a/b",
    )
    .on(Target::Missing),
    mount("untyped-name", "tmpfs {dst}"),
    mount("untyped-dir", "{src} {dst}"),
    mount("tmpfs-bad-option", "-t tmpfs -o no-such-option tmpfs {dst}"),
    mount("tmpfs-bad-size", "-t tmpfs -o size=lots tmpfs {dst}"),
    mount("tmpfs-bad-mode", "-t tmpfs -o mode=999 tmpfs {dst}"),
    mount("tmpfs-missing-target", "-t tmpfs tmpfs {dst}").on(Target::Missing),
    mount("tmpfs-outside", "-t tmpfs tmpfs {outside}")
        .differs(Difference::OutsideRoots, SIDEMOUNT_WAYS),
    // mount(8) canonicalizes the target before it calls the helper.
    mount("tmpfs-through-link", "-t tmpfs tmpfs {link}")
        .differs(Difference::Symlink, MOUNTER)
        .differs(Difference::OutsideRoots, HELPER),
    mount("proc", "-t proc proc {dst}").differs(Difference::Pseudo, SIDEMOUNT_WAYS),
];

const BIND: &[Case] = &[
    mount("bind", "-o bind {src} {dst}"),
    mount("bind-ro", "-o bind,ro {src} {dst}"),
    mount("rbind", "-o rbind {src} {dst}"),
    mount("bind-nosuid", "-o bind,nosuid {src} {dst}"),
    mount("bind-private", "-o bind,private {src} {dst}"),
    mount("bind-file", "-o bind {file} {dst}").on(Target::File),
    mount("bind-file-ro", "-o bind,ro {file} {dst}").on(Target::File),
    mount("bind-missing-source", "-o bind {missing} {dst}"),
    mount("bind-missing-target", "-o bind {src} {dst}").on(Target::Missing),
    mount("bind-dir-onto-file", "-o bind {src} {dst}").on(Target::File),
    mount("bind-file-onto-dir", "-o bind {file} {dst}"),
    mount(
        "bind-ro-nodev-noexec",
        "-o bind,ro,nodev,noexec {src} {dst}",
    ),
    mount("bind-shared", "-o bind,shared {src} {dst}"),
    mount("bind-unbindable", "-o bind,unbindable {src} {dst}"),
    mount("bind-outside-source", "-o bind {outside} {dst}")
        .differs(Difference::OutsideRoots, MOUNTER),
    mount("bind-linked-source", "-o bind {link} {dst}").differs(Difference::Symlink, MOUNTER),
];

const LOOP: &[Case] = &[
    mount("ext4-loop", "-t ext4 -o loop {ext4} {dst}"),
    mount("ext4-loop-ro", "-t ext4 -o loop,ro {ext4} {dst}"),
    mount("ext4-loop-noload", "-t ext4 -o loop,ro,noload {ext4} {dst}"),
    mount("ext4-loop-untyped", "-o loop {ext4} {dst}"),
    mount("ext4-dev", "-t ext4 {ext4dev} {dst}"),
    mount("ext4-dev-ro", "-t ext4 -o ro {ext4dev} {dst}"),
    mount(
        "ext4-dev-noexec",
        "-t ext4 -o nosuid,nodev,noexec,noatime {ext4dev} {dst}",
    ),
    mount("ext4-dev-untyped", "{ext4dev} {dst}"),
    mount("ext4-dev-node-elsewhere", "-t ext4 {ext4node} {dst}")
        .differs(Difference::DevicePattern, SIDEMOUNT_WAYS),
    mount("ext4-label", "-t ext4 LABEL=ext4-dev {dst}").differs(Difference::Tag, MOUNTER),
    mount("untyped-loop-file", "{ext4} {dst}"),
    mount("untyped-nfs", "server:/export {dst}"),
    mount("ext4-dev-auto", "-t auto {ext4dev} {dst}"),
    mount("ext4-dev-wrong-type", "-t xfs {ext4dev} {dst}"),
    mount("ext4-missing-source", "-t ext4 {missing} {dst}"),
    mount("ext4-missing-nofail", "-t ext4 -o nofail {missing} {dst}"),
    mount(
        "ext4-bad-option",
        "-t ext4 -o no-such-option {ext4dev} {dst}",
    ),
    mount("xfs-loop", "-t xfs -o loop {xfs} {dst}"),
    mount(
        "xfs-loop-ro-norecovery",
        "-t xfs -o loop,ro,norecovery {xfs} {dst}",
    ),
    mount("xfs-dev", "-t xfs {xfsdev} {dst}"),
    mount("xfs-dev-ro", "-t xfs -o ro {xfsdev} {dst}"),
    mount("xfs-dev-untyped", "{xfsdev} {dst}"),
    mount("xfs-loop-untyped", "-o loop {xfs} {dst}"),
    mount("xfs-loop-nouuid", "-t xfs -o loop,nouuid {xfs} {dst}"),
    mount("xfs-dev-wrong-type", "-t ext4 {xfsdev} {dst}"),
    mount("btrfs-loop", "-t btrfs -o loop {btrfs} {dst}"),
    mount("btrfs-loop-ro", "-t btrfs -o loop,ro {btrfs} {dst}"),
    mount("btrfs-dev", "-t btrfs {btrfsdev} {dst}"),
    mount("btrfs-dev-untyped", "{btrfsdev} {dst}"),
    mount("btrfs-dev-wrong-type", "-t ext4 {btrfsdev} {dst}"),
    mount("btrfs-missing-nofail", "-t btrfs -o nofail {missing} {dst}"),
];

const OVERLAY: &[Case] = &[
    mount(
        "overlay",
        "-t overlay -o lowerdir={lower},upperdir={dir}/upper,workdir={dir}/work overlay {dst}",
    )
    .differs(Difference::LowerLayersOneByOne, SIDEMOUNT_WAYS),
    mount(
        "overlay-ro-lower-only",
        "-t overlay -o lowerdir={lower}:{src} overlay {dst}",
    )
    .differs(Difference::LowerLayersOneByOne, SIDEMOUNT_WAYS),
    mount(
        "overlay-ro-nosuid",
        "-t overlay -o ro,nosuid,lowerdir={lower},upperdir={dir}/upper,workdir={dir}/work overlay {dst}",
    )
    .differs(Difference::LowerLayersOneByOne, SIDEMOUNT_WAYS),
    mount(
        "overlay-outside-layer",
        "-t overlay -o lowerdir={outside}:{lower} overlay {dst}",
    )
    .differs(Difference::OutsideRoots, SIDEMOUNT_WAYS),
    mount(
        "overlay-missing-upper",
        "-t overlay -o lowerdir={lower},upperdir={missing},workdir={dir}/work overlay {dst}",
    ),
];

const TREE: &[&str] = &[
    "-t tmpfs tmpfs {dst}",
    "-t tmpfs -o X-mount.mkdir tmpfs {dst}/a",
    "-t tmpfs -o X-mount.mkdir tmpfs {dst}/a/deep",
    "-t tmpfs -o X-mount.mkdir tmpfs {dst}/b",
];

const UMOUNT: &[Case] = &[
    umount("umount", &["-t tmpfs tmpfs {dst}"], "{dst}"),
    umount("umount-lazy", &["-t tmpfs tmpfs {dst}"], "-l {dst}"),
    umount("umount-force", &["-t tmpfs tmpfs {dst}"], "-f {dst}"),
    umount("umount-busy", &["-t tmpfs tmpfs {dst}"], "{dst}").busy(),
    umount("umount-busy-lazy", &["-t tmpfs tmpfs {dst}"], "-l {dst}").busy(),
    umount("umount-recursive", TREE, "-R {dst}"),
    umount("umount-tree-top", TREE, "{dst}"),
    umount("umount-not-mounted", &[], "{dst}"),
    umount("umount-lazy-not-mounted", &[], "-l {dst}"),
    umount("umount-force-busy", &["-t tmpfs tmpfs {dst}"], "-f {dst}").busy(),
    umount("umount-recursive-busy", TREE, "-R {dst}").busy(),
    umount("umount-missing", &[], "{dst}").on(Target::Missing),
    umount(
        "umount-by-device",
        &["-t ext4 {ext4dev} {dst}"],
        "{ext4dev}",
    ),
    umount(
        "umount-loop-file",
        &["-t ext4 -o loop {ext4} {dst}"],
        "{dst}",
    ),
    umount("umount-bind", &["-o bind {src} {dst}"], "{dst}"),
    umount("umount-bind-file", &["-o bind {file} {dst}"], "{dst}").on(Target::File),
];

/// The words of util-linux errors that callers match, each as the parts it must
/// hold, and sidemount's refusals.
const PHRASES: &[&[&str]] = &[
    &["mount point not mounted or bad option"],
    &["not mounted"],
    &["mount point does not exist"],
    &["already mounted on"],
    &["target is busy"],
    &["wrong fs type"],
    &["special device", "does not exist"],
    &["no mount point specified"],
    &["failed to parse mount options"],
    &["is not a block device"],
    &["not a directory"],
    &["Not a directory"],
    &["bad option"],
    &["No such file or directory"],
    &["can't find"],
    &["outside the allowed roots"],
    &["symbolic link"],
    &["pseudo filesystem"],
];

/// The key phrase of an error output, if it holds one.
fn phrase(output: &str) -> Option<String> {
    PHRASES
        .iter()
        .find(|parts| parts.iter().all(|p| output.contains(p)))
        .map(|parts| parts.join(" ... "))
}

/// What one way gave: exit code, key phrase, the mounts left at or below the
/// target (normalized), and the full output for messages.
#[derive(Debug)]
struct Outcome {
    code: Option<i32>,
    phrase: Option<String>,
    mounts: Vec<Value>,
    /// The modes of the target and of its first directory below, where they are
    /// directories (what `X-mount.mkdir` made).
    modes: Vec<String>,
    output: String,
}

impl PartialEq for Outcome {
    fn eq(&self, other: &Self) -> bool {
        (self.code, &self.phrase, &self.mounts, &self.modes)
            == (other.code, &other.phrase, &other.mounts, &other.modes)
    }
}

/// The fixtures every case may name, made once per test.
struct Fixtures {
    root: PathBuf,
    vars: Vec<(&'static str, String)>,
    images: Vec<PathBuf>,
    _devices: Vec<LoopDevice>,
    daemon: Daemon,
}

/// A fresh image file `name.img` holding an empty `fs` filesystem of `size`.
fn image(host: &Host, name: &str, fs: &str, size: &str) -> PathBuf {
    let image = host
        .dir("var/lib/kubelet/plugins/images")
        .join(format!("{name}.img"));
    sh(&format!(
        "truncate -s {size} {0} && mkfs.{fs} -q -L {name} {0} >/dev/null",
        quote(&image)
    ));
    image
}

impl Fixtures {
    fn new(host: &Host) -> Fixtures {
        let root = kubelet_root(host);
        sh(&install_helpers_line(
            host,
            "tmpfs,ext4,xfs,btrfs,overlay,proc",
        ));
        let src = host.dir("var/lib/kubelet/plugins/src");
        std::fs::write(src.join("in-src"), "src").unwrap();
        let file = root.join("plugins/file");
        std::fs::write(&file, "one file").unwrap();
        let lower = host.dir("var/lib/kubelet/plugins/lower");
        std::fs::write(lower.join("in-lower"), "lower").unwrap();
        let outside = host.dir("outside");
        let pods = host.dir("var/lib/kubelet/pods/p1/volumes/kubernetes.io~matrix");
        let link = pods.join("link");
        std::os::unix::fs::symlink(&outside, &link).unwrap();
        // Loop devices over images of their own, never shared with a loop file case.
        const SIZES: [(&str, &str); 3] = [("ext4", "16M"), ("xfs", "300M"), ("btrfs", "120M")];
        let images: Vec<PathBuf> = SIZES
            .iter()
            .map(|(fs, size)| image(host, fs, fs, size))
            .collect();
        let devices: Vec<LoopDevice> = SIZES
            .iter()
            .map(|(fs, size)| LoopDevice::attach(&image(host, &format!("{fs}-dev"), fs, size)))
            .collect();
        // The ext4 device again, as a node below the roots: no pattern names it.
        let node = host.dir("var/lib/kubelet/plugins/devices").join("ext4");
        sh(&format!(
            "mknod {} b $(stat -c '0x%t 0x%T' {} | xargs printf '%d %d')",
            quote(&node),
            devices[0].device
        ));
        let path = |p: &Path| p.to_str().unwrap().to_owned();
        let vars = vec![
            ("{src}", path(&src)),
            ("{file}", path(&file)),
            ("{lower}", path(&lower)),
            ("{outside}", path(&outside)),
            ("{link}", path(&link)),
            ("{missing}", path(&root.join("plugins/no-such-thing"))),
            ("{ext4}", path(&images[0])),
            ("{xfs}", path(&images[1])),
            ("{btrfs}", path(&images[2])),
            ("{ext4dev}", devices[0].device.clone()),
            ("{ext4node}", path(&node)),
            ("{xfsdev}", devices[1].device.clone()),
            ("{btrfsdev}", devices[2].device.clone()),
        ];
        let daemon = Daemon::start(host, &root, &[]);
        Fixtures {
            root,
            vars,
            images,
            _devices: devices,
            daemon,
        }
    }

    /// The way's own fresh target and directory for `case`.
    fn places(&self, case: &Case, way: Way) -> (PathBuf, PathBuf) {
        let dst = self.root.join(format!(
            "pods/p1/volumes/kubernetes.io~matrix/{}-{}",
            case.name,
            way.name()
        ));
        match case.target {
            Target::Dir => std::fs::create_dir(&dst).unwrap(),
            Target::File => std::fs::write(&dst, "").unwrap(),
            Target::Missing => {}
        }
        let dir = self
            .root
            .join(format!("plugins/ways/{}-{}", case.name, way.name()));
        for sub in ["upper", "work"] {
            std::fs::create_dir_all(dir.join(sub)).unwrap();
        }
        (dst, dir)
    }

    fn expand(&self, args: &str, dst: &Path, dir: &Path) -> String {
        let mut line = args
            .replace("{dst}", dst.to_str().unwrap())
            .replace("{dir}", dir.to_str().unwrap());
        for (name, value) in &self.vars {
            line = line.replace(name, value);
        }
        line
    }

    /// Runs `case` one way on its own fresh target, then unmounts what it left.
    fn outcome(&self, case: &Case, way: Way) -> Outcome {
        let (dst, dir) = self.places(case, way);
        let mut holder: Option<Child> = None;
        let line = match case.act {
            Act::Mount => format!("{} {}", way.mount(), self.expand(case.args, &dst, &dir)),
            Act::Umount { pre, busy } => {
                for args in pre {
                    let line = format!("{} {}", way.mount(), self.expand(args, &dst, &dir));
                    let (code, out) = self.daemon.run(&line);
                    assert_eq!(code, Some(0), "{}: {line}: {out}", case.name);
                }
                if busy {
                    holder = Some(
                        Command::new("sleep")
                            .arg("1000")
                            .current_dir(&dst)
                            .spawn()
                            .unwrap(),
                    );
                }
                format!("{} {}", way.umount(), self.expand(case.args, &dst, &dir))
            }
        };
        let (code, output) = self.daemon.run(&line);
        let outcome = Outcome {
            code,
            phrase: phrase(&output),
            mounts: self.mounts(&dst, &dir),
            modes: [dst.clone(), dst.join("a")]
                .iter()
                .filter(|p| p.is_dir() && !common::mount_points_under(None, p).contains(p))
                .map(|p| {
                    format!(
                        "{:o}",
                        std::fs::metadata(p).unwrap().permissions().mode() & 0o7777
                    )
                })
                .collect(),
            output: format!("{line}\n{output}"),
        };
        if let Some(mut holder) = holder {
            holder.kill().unwrap();
            holder.wait().unwrap();
        }
        self.clean(case, way, &dst);
        outcome
    }

    /// The mounts at or below `dst` (and on the case's refused places), as
    /// findmnt shows them, with the way's own paths and loop numbers replaced.
    fn mounts(&self, dst: &Path, dir: &Path) -> Vec<Value> {
        let out =
            sh("findmnt -J --list -o TARGET,FSTYPE,SOURCE,VFS-OPTIONS,FS-OPTIONS,PROPAGATION");
        let doc: Value = serde_json::from_str(&out).unwrap();
        let outside = self.vars.iter().find(|(n, _)| *n == "{outside}").unwrap();
        let normalize = |text: &str| {
            let text = text
                .replace(dst.to_str().unwrap(), "{dst}")
                .replace(dir.to_str().unwrap(), "{dir}");
            loop_numbers(&text)
        };
        doc["filesystems"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|m| {
                let target = Path::new(m["target"].as_str().unwrap());
                target.starts_with(dst) || target.starts_with(&outside.1)
            })
            .map(|m| {
                let mut m = m.clone();
                for (_, v) in m.as_object_mut().unwrap() {
                    if let Some(s) = v.as_str() {
                        *v = Value::String(normalize(s));
                    }
                }
                m
            })
            .collect()
    }

    /// Unmounts whatever the case left, deepest first, through the way that made
    /// it, then by util-linux alone for anything still there.
    fn clean(&self, case: &Case, way: Way, dst: &Path) {
        let outside = Path::new(&self.vars.iter().find(|(n, _)| *n == "{outside}").unwrap().1);
        for place in [dst, outside] {
            for umount in [way.umount(), Way::Direct.umount()] {
                let mut left = common::mount_points_under(None, place);
                left.sort_by_key(|p| std::cmp::Reverse(p.components().count()));
                for target in left {
                    let _ = self.daemon.run(&format!("{umount} {}", quote(&target)));
                }
            }
            assert!(
                common::mount_points_under(None, place).is_empty(),
                "{}: {} left mounts on {}",
                case.name,
                way.name(),
                place.display()
            );
        }
    }

    /// Runs every case three ways; returns each case that did not give what the
    /// matrix expects, with the three outcomes.
    fn check(&self, cases: &[Case]) {
        let mut failures = Vec::new();
        for case in cases {
            let outcomes: Vec<Outcome> = WAYS.iter().map(|&w| self.outcome(case, w)).collect();
            let direct = &outcomes[0];
            for (way, o) in WAYS.iter().zip(&outcomes) {
                let mounts = serde_json::to_string(&o.mounts).unwrap();
                eprintln!(
                    "{} {}: {:?} {:?} {:?} {mounts}",
                    case.name,
                    way.name(),
                    o.code,
                    o.phrase,
                    o.modes
                );
            }
            for (way, outcome) in WAYS.iter().zip(&outcomes).skip(1) {
                let ok = match case.expect[*way as usize].map(|d| (d, d.refusal())) {
                    Some((_, Some(words))) => {
                        outcome.code == Some(32)
                            && outcome.output.contains(words)
                            && outcome.mounts.is_empty()
                    }
                    Some((Difference::LowerLayersOneByOne, None)) => {
                        outcome.mounts != direct.mounts
                            && (outcome.code, &outcome.phrase, &outcome.modes)
                                == (direct.code, &direct.phrase, &direct.modes)
                            && lower_layers_joined(&outcome.mounts) == direct.mounts
                    }
                    Some((difference, None)) => unreachable!("{difference:?} mounts"),
                    None => outcome == direct,
                };
                if !ok {
                    failures.push(format!(
                        "{} ({}):\n  direct:  {:?} {:?} {:?} {}\n  {}: {:?} {:?} {:?} {}\n  output direct: {}\n  output {}: {}",
                        case.name,
                        way.name(),
                        direct.code,
                        direct.phrase,
                        direct.modes,
                        serde_json::to_string(&direct.mounts).unwrap(),
                        way.name(),
                        outcome.code,
                        outcome.phrase,
                        outcome.modes,
                        serde_json::to_string(&outcome.mounts).unwrap(),
                        direct.output.trim(),
                        way.name(),
                        outcome.output.trim(),
                    ));
                }
            }
            // A refusal really differs from what util-linux does there.
            let refused = case.expect.iter().flatten().any(|d| d.refusal().is_some());
            if refused {
                assert_eq!(
                    direct.code,
                    Some(0),
                    "{}: util-linux refused too: {}",
                    case.name,
                    direct.output
                );
            }
        }
        assert!(
            failures.is_empty(),
            "{} differences in {} cases:\n{}",
            failures.len(),
            cases.len(),
            failures.join("\n")
        );
        assert!(
            self.daemon.recorded().is_empty(),
            "{:?}",
            self.daemon.recorded()
        );
        assert_eq!(
            common::mount_points_under(None, &self.root.join("pods")),
            Vec::<PathBuf>::new()
        );
    }
}

impl Drop for Fixtures {
    fn drop(&mut self) {
        // Every loop device a case attached to an image is gone with its mount.
        for image in &self.images {
            let attached = sh(&format!("losetup -j {}", quote(image)));
            if !std::thread::panicking() {
                assert_eq!(attached, "", "{} is still attached", image.display());
            }
        }
    }
}

/// `text` with every `/dev/loopN` written `/dev/loopN`.
fn loop_numbers(text: &str) -> String {
    let mut out = String::new();
    let mut rest = text;
    while let Some(at) = rest.find("/dev/loop") {
        out.push_str(&rest[..at]);
        out.push_str("/dev/loopN");
        rest = rest[at + "/dev/loop".len()..].trim_start_matches(|c: char| c.is_ascii_digit());
    }
    out.push_str(rest);
    out
}

/// One test per table, each with its own namespace, daemon and fixtures.
macro_rules! matrix {
    ($($name:ident: $cases:expr;)*) => {$(
        privileged_test! {
            fn $name(host: &Host) {
                Fixtures::new(host).check($cases);
            }
        }
    )*};
}

matrix! {
    matrix_tmpfs: TMPFS;
    matrix_bind: BIND;
    matrix_loop_devices_and_files: LOOP;
    matrix_overlay: OVERLAY;
    matrix_umount: UMOUNT;
}
