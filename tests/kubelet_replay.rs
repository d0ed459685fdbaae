//! The kubelet's own calls, replayed as Kubernetes' mount-utils and subPath code
//! issue them (`mount [--no-canonicalize] [-t T] [-o O] [SRC] DST`, `umount DIR`,
//! `blkid`/`mkfs` before a mount), through mount(8) -> sidemount's helper where
//! mount(8) calls one, and through the mounter path (`sidemount mount ...`); each
//! result (exit code, the phrase mount-utils reads, and the mount's type,
//! source, options and propagation) is compared with mount(8) run directly
//! (`-i`: no helper) on a twin mount point.

mod common;

use std::os::fd::{AsRawFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::process::Command;

use common::swap::Swapper;
use common::{
    daemon_with_helpers, kubelet_root, mount_points_under, quote, sh, volume, Daemon, Host,
    LoopDevice,
};
use nix::fcntl::{open, openat, OFlag};
use nix::sys::stat::Mode;

const SIDEMOUNT: &str = common::SIDEMOUNT;

/// What a caller of mount(8) gets back: its exit code and combined output (what
/// mount-utils reads).
#[derive(Debug)]
struct Done {
    code: Option<i32>,
    output: String,
}

/// Runs `program args...` with the daemon's socket, as the kubelet execs it.
fn exec(daemon: &Daemon, program: &str, args: &[&str]) -> Done {
    let out = Command::new(program)
        .args(args)
        .env("SIDEMOUNT_SOCKET", &daemon.socket)
        .output()
        .unwrap();
    Done {
        code: out.status.code(),
        output: String::from_utf8_lossy(&out.stdout).into_owned()
            + &String::from_utf8_lossy(&out.stderr),
    }
}

/// The mount on top of `target` as findmnt shows it: type, source, per-mount
/// and filesystem options, and propagation; None when nothing is mounted there.
#[derive(Debug, PartialEq, Eq)]
struct Seen {
    fstype: String,
    source: String,
    vfs_options: String,
    fs_options: String,
    propagation: String,
}

fn seen(target: &Path) -> Option<Seen> {
    let out = Command::new("findmnt")
        .args([
            "-n",
            "-P",
            "-o",
            "FSTYPE,SOURCE,VFS-OPTIONS,FS-OPTIONS,PROPAGATION",
        ])
        .arg("--mountpoint")
        .arg(target)
        .output()
        .unwrap();
    let text = String::from_utf8(out.stdout).unwrap();
    let top = format!(" {}", text.lines().last()?);
    let field = |key: &str| {
        let start = top.find(&format!(" {key}=\"")).unwrap() + key.len() + 3;
        let len = top[start..].find('"').unwrap();
        top[start..start + len].to_owned()
    };
    Some(Seen {
        fstype: field("FSTYPE"),
        source: field("SOURCE"),
        vfs_options: field("VFS-OPTIONS"),
        fs_options: field("FS-OPTIONS"),
        propagation: field("PROPAGATION"),
    })
}

/// The ways a kubelet's call can take, each on a twin mount point of its own.
struct Ways<'a> {
    daemon: &'a Daemon,
    /// The twin mount points: direct mount(8), mount(8) -> helper, mounter path.
    direct: PathBuf,
    helper: Option<PathBuf>,
    mounter: PathBuf,
}

impl<'a> Ways<'a> {
    /// All three ways, on fresh volumes under `root`.
    fn volumes(daemon: &'a Daemon, root: &Path) -> Self {
        Ways {
            daemon,
            direct: volume(root, "direct"),
            helper: Some(volume(root, "helper")),
            mounter: volume(root, "mounter"),
        }
    }

    /// Runs one mount-utils argv (`mount` or `umount` first, `{T}` for the mount
    /// point) each way, and asserts each ends as mount(8) run directly did: the
    /// exit code, and the mount left on its twin. Returns the direct result.
    fn replay(&self, argv: &[&str]) -> Done {
        let (tool, args) = argv.split_first().unwrap();
        let with = |target: &Path| -> Vec<String> {
            args.iter()
                .map(|a| a.replace("{T}", target.to_str().unwrap()))
                .collect()
        };
        let direct_args: Vec<String> = std::iter::once("-i".to_owned())
            .chain(with(&self.direct))
            .collect();
        let direct = exec(self.daemon, tool, &strs(&direct_args));
        let want = seen(&self.direct);
        let mut ways: Vec<(String, Done, Option<Seen>)> = Vec::new();
        if let Some(helper) = &self.helper {
            let done = exec(self.daemon, tool, &strs(&with(helper)));
            ways.push((format!("{tool} (helper)"), done, seen(helper)));
        }
        let mut mounter_args = vec![tool.to_string()];
        mounter_args.extend(with(&self.mounter));
        let done = exec(self.daemon, SIDEMOUNT, &strs(&mounter_args));
        ways.push(("mounter path".into(), done, seen(&self.mounter)));
        for (way, done, got) in ways {
            let line = argv.join(" ");
            assert_eq!(
                done.code, direct.code,
                "{way}: {line}: {} / direct: {}",
                done.output, direct.output
            );
            assert_eq!(
                got, want,
                "{way}: {line}: the mount differs from mount(8)'s"
            );
        }
        direct
    }
}

fn strs(v: &[String]) -> Vec<&str> {
    v.iter().map(String::as_str).collect()
}

fn has(options: &str, option: &str) -> bool {
    options.split(',').any(|o| o == option)
}

privileged_test! {
    fn the_read_only_bind_pair_as_mount_utils_issues_it(host: &Host) {
        let root = kubelet_root(host);
        let daemon = Daemon::start(host, &root, &[]);
        let source = root.join("plugins/kubernetes.io~test/global");
        std::fs::create_dir_all(&source).unwrap();
        std::fs::write(source.join("data"), "volume").unwrap();
        let src = source.to_str().unwrap();
        // mount(8) never calls a helper for a bind: direct and mounter path.
        let ways = Ways { daemon: &daemon, direct: volume(&root, "direct"), helper: None, mounter: volume(&root, "mounter") };
        let done = ways.replay(&["mount", "-o", "bind", src, "{T}"]);
        assert_eq!(done.code, Some(0), "{}", done.output);
        let first = seen(&ways.mounter).unwrap();
        assert!(has(&first.vfs_options, "rw"), "{first:?}");
        ways.replay(&["mount", "-o", "bind,remount,ro", src, "{T}"]);
        let now = seen(&ways.mounter).unwrap();
        assert!(has(&now.vfs_options, "ro"), "{now:?}");
        assert_eq!(std::fs::read_to_string(ways.mounter.join("data")).unwrap(), "volume");
        assert!(std::fs::write(ways.mounter.join("data"), "x").is_err(), "read-only");
        assert_eq!(daemon.recorded(), [ways.mounter.display().to_string()]);
        let done = ways.replay(&["umount", "{T}"]);
        assert_eq!(done.code, Some(0), "{}", done.output);
        assert!(daemon.recorded().is_empty());
    }
}

/// Opens `sub` below `volume` as the kubelet's doSafeOpen does: each directory
/// `O_NOFOLLOW`, the last component `O_PATH | O_NOFOLLOW`.
fn safe_open(volume: &Path, sub: &Path) -> nix::Result<OwnedFd> {
    let flags = OFlag::O_RDONLY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC;
    let mut dir = open(volume, flags, Mode::empty())?;
    let names: Vec<_> = sub.iter().collect();
    for (i, name) in names.iter().enumerate() {
        let last = i + 1 == names.len();
        let how = match last {
            true => OFlag::O_PATH | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
            false => flags,
        };
        dir = openat(&dir, *name, how, Mode::empty())?;
    }
    Ok(dir)
}

/// `/proc/<this process>/fd/N`: the kubelet binds its own fd by that name.
fn fd_source(fd: &OwnedFd) -> String {
    format!("/proc/{}/fd/{}", std::process::id(), fd.as_raw_fd())
}

privileged_test! {
    fn a_sub_path_binds_the_kubelets_own_fd_and_never_one_outside_the_roots(host: &Host) {
        let root = kubelet_root(host);
        let daemon = Daemon::start(host, &root, &[]);
        let vol = volume(&root, "vol");
        std::fs::create_dir_all(vol.join("sub/dir")).unwrap();
        std::fs::write(vol.join("sub/dir/inside"), "inside").unwrap();
        let fd = safe_open(&vol, Path::new("sub/dir")).unwrap();
        let src = fd_source(&fd);
        // The kubelet runs mount(8) itself for a bind: direct and mounter path.
        let subpaths = root.join("pods/p1/volume-subpaths/vol/c");
        for twin in ["0", "1"] {
            std::fs::create_dir_all(subpaths.join(twin)).unwrap();
        }
        let ways = Ways { daemon: &daemon, direct: subpaths.join("0"), helper: None, mounter: subpaths.join("1") };
        for argv in [
            ["mount", "--no-canonicalize", "-o", "bind", &src, "{T}"],
            ["mount", "--no-canonicalize", "-o", "bind,remount", &src, "{T}"],
        ] {
            let done = ways.replay(&argv);
            assert_eq!(done.code, Some(0), "{}", done.output);
        }
        assert_eq!(std::fs::read_to_string(ways.mounter.join("inside")).unwrap(), "inside");
        // Recorded by the path the fd was found at, not the fd's name.
        let mounts = daemon.get("/v1/mounts").unwrap();
        assert_eq!(mounts[0]["source"], vol.join("sub/dir").display().to_string());
        assert_eq!(ways.replay(&["umount", "{T}"]).code, Some(0));
        // A subPath that is a file binds onto a file the kubelet made.
        std::fs::write(vol.join("sub/config"), "a file").unwrap();
        let file = safe_open(&vol, Path::new("sub/config")).unwrap();
        let files = Ways { daemon: &daemon, direct: subpaths.join("2"), helper: None, mounter: subpaths.join("3") };
        for twin in [&files.direct, &files.mounter] {
            std::fs::write(twin, "").unwrap();
        }
        let done = files.replay(&["mount", "--no-canonicalize", "-o", "bind", &fd_source(&file), "{T}"]);
        assert_eq!(done.code, Some(0), "{}", done.output);
        assert_eq!(std::fs::read_to_string(&files.mounter).unwrap(), "a file");
        assert_eq!(files.replay(&["umount", "{T}"]).code, Some(0));

        // A hostile fd: one on /etc. mount(8) would bind it; the daemon refuses,
        // naming the rule, and nothing is mounted.
        let etc = open("/etc", OFlag::O_PATH | OFlag::O_CLOEXEC, Mode::empty()).unwrap();
        let target = ways.mounter.to_str().unwrap();
        let done = exec(&daemon, SIDEMOUNT, &["mount", "--no-canonicalize", "-o", "bind", &fd_source(&etc), target]);
        assert_eq!(done.code, Some(32), "{}", done.output);
        for part in ["source /etc is outside the allowed roots", "bind_source_roots", "source_not_allowed"] {
            assert!(done.output.contains(part), "{part}: {}", done.output);
        }
        assert!(seen(&ways.mounter).is_none());
        // An fd number the caller does not hold.
        let done = exec(&daemon, SIDEMOUNT, &["mount", "--no-canonicalize", "-o", "bind", &format!("/proc/{}/fd/999", std::process::id()), target]);
        assert_eq!(done.code, Some(32), "{}", done.output);
        assert!(done.output.contains("cannot open the source"), "{}", done.output);
        // The name of an fd sent to the daemon as a plain path is never its own.
        let plain = Command::new("curl").args(["-s", "--max-time", "10", "--unix-socket"]).arg(&daemon.socket)
            .args(["-d", &serde_json::json!({"source": fd_source(&fd), "target": target, "options": ["bind"]}).to_string()])
            .arg("http://sidemount/v1/mounts").output().unwrap();
        let answer = String::from_utf8_lossy(&plain.stdout);
        assert!(answer.contains("is outside the allowed roots"), "{answer}");
        assert!(seen(&ways.mounter).is_none());
        assert!(daemon.recorded().is_empty());
    }
}

privileged_test! {
    fn a_symlink_swap_on_the_sub_path_never_redirects_the_bind(host: &Host) {
        let root = kubelet_root(host);
        let daemon = Daemon::start(host, &root, &[]);
        let vol = volume(&root, "vol");
        let sub = vol.join("sub");
        std::fs::create_dir(&sub).unwrap();
        std::fs::write(sub.join("inside"), "inside").unwrap();
        let outside = host.dir("outside");
        std::fs::write(outside.join("outside"), "outside").unwrap();
        let evil = vol.join("evil");
        std::os::unix::fs::symlink(&outside, &evil).unwrap();
        let target = volume(&root, "target");
        let t = target.to_str().unwrap();
        let swapper = Swapper::start(&sub, &evil);
        let (mut bound, mut refused) = (0, 0);
        for _ in 0..200 {
            // The kubelet's open may find the link: it then holds the link itself.
            let Ok(fd) = safe_open(&vol, Path::new("sub")) else { continue };
            let done = exec(&daemon, SIDEMOUNT, &["mount", "--no-canonicalize", "-o", "bind", &fd_source(&fd), t]);
            match done.code {
                Some(0) => {
                    bound += 1;
                    let names: Vec<_> = std::fs::read_dir(&target).unwrap()
                        .map(|e| e.unwrap().file_name().into_string().unwrap()).collect();
                    assert_eq!(names, ["inside"], "the bind was redirected");
                    let done = exec(&daemon, SIDEMOUNT, &["umount", t]);
                    assert_eq!(done.code, Some(0), "{}", done.output);
                }
                code => {
                    refused += 1;
                    assert_eq!(code, Some(32), "{}", done.output);
                    assert!(["symbolic link", "moved or replaced", "does not exist", "outside the allowed roots"].iter().any(|w| done.output.contains(w)),
                        "not a policy refusal: {}", done.output);
                    assert!(seen(&target).is_none(), "{}", done.output);
                }
            }
            assert_eq!(mount_points_under(None, &outside), Vec::<PathBuf>::new());
        }
        let swaps = swapper.stop();
        eprintln!("{bound} bound, {refused} refused, {swaps} swaps");
        assert!(swaps > 0, "the attack never ran");
        assert!(bound > 0, "the subPath was never bound");
        assert!(daemon.recorded().is_empty());
    }
}

/// SafeFormatAndMount's rounds on a blank loop device of `size`: blkid finds
/// nothing, `mkfs` formats it, then the mount, replayed each way; a second round
/// finds the filesystem, checks it with `fsck -a` and just mounts; a read-only
/// round mounts `ro,defaults` and checks nothing.
fn format_and_mount(host: &Host, fstype: &str, mkfs: &[&str], size: &str) {
    let (root, daemon) = daemon_with_helpers(host, fstype);
    let image = host.dir("images").join("disk.img");
    sh(&format!("truncate -s {size} {}", quote(&image)));
    let disk = LoopDevice::attach(&image);
    let dev = disk.device.as_str();
    let blkid = || {
        let out = Command::new("blkid")
            .args(["-p", "-s", "TYPE", "-s", "PTTYPE", "-o", "export", dev])
            .output()
            .unwrap();
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
        )
    };
    // Blank: blkid exits 2 with nothing; the kubelet formats it.
    assert_eq!(blkid(), (Some(2), String::new()));
    let mut format = Command::new(format!("mkfs.{fstype}"));
    let out = format.args(mkfs).arg(dev).output().unwrap();
    common::expect_success(&format!("mkfs.{fstype}"), out);
    let ways = Ways::volumes(&daemon, &root);
    let mount = |options| ["mount", "-t", fstype, "-o", options, dev, "{T}"];
    // The same device on three twins at once, as the kernel allows.
    let done = ways.replay(&mount("defaults"));
    assert_eq!(done.code, Some(0), "{}", done.output);
    assert_eq!(seen(&ways.mounter).unwrap().source, dev);
    std::fs::write(ways.mounter.join("written"), "first round").unwrap();
    assert_eq!(ways.replay(&["umount", "{T}"]).code, Some(0));
    // A second round finds the filesystem (and checks it), and just mounts.
    let (code, found) = blkid();
    assert_eq!(code, Some(0));
    assert!(
        found.lines().any(|l| l == format!("TYPE={fstype}")),
        "{found}"
    );
    sh(&format!("fsck -a {dev}"));
    for options in ["defaults", "ro,defaults"] {
        assert_eq!(ways.replay(&mount(options)).code, Some(0), "{options}");
        for twin in [&ways.direct, ways.helper.as_ref().unwrap(), &ways.mounter] {
            let read = std::fs::read_to_string(twin.join("written")).unwrap();
            assert_eq!(read, "first round", "{options}");
        }
        assert_eq!(ways.replay(&["umount", "{T}"]).code, Some(0));
    }
    assert!(daemon.recorded().is_empty());
}

privileged_test! {
    fn format_and_mount_ext4_as_safe_format_and_mount_does(host: &Host) {
        format_and_mount(host, "ext4", &["-F", "-m0"], "32M");
    }
}

privileged_test! {
    fn format_and_mount_xfs_as_safe_format_and_mount_does(host: &Host) {
        format_and_mount(host, "xfs", &[], "320M");
    }
}

privileged_test! {
    fn umount_of_a_directory_not_mounted_says_so_as_umount8(host: &Host) {
        let (root, daemon) = daemon_with_helpers(host, "tmpfs");
        let ways = Ways::volumes(&daemon, &root);
        let direct = ways.replay(&["umount", "{T}"]);
        assert_eq!(direct.code, Some(32), "{}", direct.output);
        // mount-utils takes an unmount whose output says this as done.
        let mounter = exec(&daemon, SIDEMOUNT, &["umount", ways.mounter.to_str().unwrap()]);
        for done in [&direct, &mounter] {
            assert!(done.output.contains("not mounted"), "{}", done.output);
        }
        assert!(daemon.recorded().is_empty());
    }
}

privileged_test! {
    fn tmpfs_with_the_kubelets_option_shapes(host: &Host) {
        let (root, daemon) = daemon_with_helpers(host, "tmpfs");
        let ways = Ways::volumes(&daemon, &root);
        // emptyDir (medium Memory) with a size limit; the noswap probe; a secret's
        // volume; mount-utils joins sensitive options into the same -o.
        for options in ["size=1048576,noswap", "noswap", "size=1048576", "size=1m,mode=0750,uid=0"] {
            let done = ways.replay(&["mount", "-t", "tmpfs", "-o", options, "tmpfs", "{T}"]);
            assert_eq!(done.code, Some(0), "{options}: {}", done.output);
            let got = seen(&ways.mounter).unwrap();
            assert_eq!((got.fstype.as_str(), got.source.as_str()), ("tmpfs", "tmpfs"));
            assert_eq!(ways.replay(&["umount", "{T}"]).code, Some(0));
        }
        // sidemount's own flag for what a caller marks secret: applied, never shown.
        let t = ways.mounter.to_str().unwrap();
        let done = exec(&daemon, SIDEMOUNT, &["mount", "-t", "tmpfs", "-o", "size=1m", "--sensitive-options", "mode=0711", "tmpfs", t]);
        assert_eq!(done.code, Some(0), "{}", done.output);
        let got = seen(&ways.mounter).unwrap();
        assert!(has(&got.fs_options, "mode=711"), "{got:?}");
        let record = daemon.get("/v1/mounts").unwrap().to_string();
        assert!(record.contains("size=1m") && !record.contains("0711"), "{record}");
        assert!(!daemon.log_text().contains("0711"));
        assert_eq!(exec(&daemon, SIDEMOUNT, &["umount", t]).code, Some(0));
        assert!(daemon.recorded().is_empty());
    }
}

privileged_test! {
    fn a_raw_block_volume_is_mapped_by_binding_its_device_node(host: &Host) {
        let root = kubelet_root(host);
        let daemon = Daemon::start(host, &root, &[]);
        let image = host.dir("images").join("raw.img");
        sh(&format!("truncate -s 16M {}", quote(&image)));
        let disk = LoopDevice::attach(&image);
        // The kubelet names the device as its plugin found it: a udev link.
        let by_path = host.dir("dev/disk/by-path").join("ip-127.0.0.1:3260-iscsi-iqn.test-lun-1");
        std::os::unix::fs::symlink(&disk.device, &by_path).unwrap();
        let dev = by_path.to_str().unwrap();
        // MapBlockVolume: a file per pod under the volume's map directory, the
        // device node bound onto it (mount(8) itself: no helper for a bind).
        let map = root.join("plugins/kubernetes.io~csi/volumeDevices/pv/dev");
        std::fs::create_dir_all(&map).unwrap();
        let ways = Ways { daemon: &daemon, direct: map.join("pod-direct"), helper: None, mounter: map.join("pod-mounter") };
        for twin in [&ways.direct, &ways.mounter] {
            std::fs::write(twin, "").unwrap();
        }
        for argv in [["mount", "-o", "bind", dev, "{T}"], ["mount", "-o", "bind,remount", dev, "{T}"]] {
            let done = ways.replay(&argv);
            assert_eq!(done.code, Some(0), "{}", done.output);
        }
        use std::os::unix::fs::FileTypeExt;
        assert!(std::fs::metadata(&ways.mounter).unwrap().file_type().is_block_device());
        assert_eq!(daemon.recorded(), [ways.mounter.display().to_string()]);
        // UnmapBlockVolume: `umount FILE`, the mount point, not the device.
        let done = ways.replay(&["umount", "{T}"]);
        assert_eq!(done.code, Some(0), "{}", done.output);
        assert!(daemon.recorded().is_empty());
        // A character device is no block device: a path, outside the roots.
        let done = exec(&daemon, SIDEMOUNT, &["mount", "-o", "bind", "/dev/null", ways.mounter.to_str().unwrap()]);
        assert_eq!(done.code, Some(32), "{}", done.output);
        assert!(done.output.contains("outside the allowed roots"), "{}", done.output);
        assert!(seen(&ways.mounter).is_none());
    }
}

privileged_test! {
    fn a_containerized_kubelets_sub_path_fd_is_taken_from_its_namespace(host: &Host) {
        let root = kubelet_root(host);
        let daemon = Daemon::start(host, &root, &[]);
        let vol = volume(&root, "vol");
        std::fs::create_dir_all(vol.join("sub")).unwrap();
        std::fs::write(vol.join("sub/inside"), "inside").unwrap();
        let subpaths = root.join("pods/p1/volume-subpaths/vol/c");
        for twin in ["0", "1"] {
            std::fs::create_dir_all(subpaths.join(twin)).unwrap();
        }
        let socket = quote(&daemon.socket);
        // The kubelet in a container: its own mount namespace, the root rshared.
        // It holds the subPath open and binds /proc/<its pid>/fd/7 there.
        let kubelet = host.namespace("kubelet", "true");
        let bind = |mount: &str, sub: &Path, target: &Path| {
            kubelet.command("sh").arg("-c")
                .arg(format!("exec 7<{} && SIDEMOUNT_SOCKET={socket} {mount} --no-canonicalize -o bind /proc/$$/fd/7 {} 2>&1", quote(sub), quote(target)))
                .output().unwrap()
        };
        let direct = bind("mount -i", &vol.join("sub"), &subpaths.join("0"));
        assert!(direct.status.success(), "{direct:?}");
        let mounter = bind(&format!("{SIDEMOUNT} mount"), &vol.join("sub"), &subpaths.join("1"));
        assert!(mounter.status.success(), "{mounter:?}");
        assert_eq!(seen(&subpaths.join("1")), seen(&subpaths.join("0")));
        for ns in [None, Some(kubelet.pid)] {
            assert_eq!(mount_points_under(ns, &subpaths).len(), 2, "{ns:?}");
        }
        let read = kubelet.sh(&format!("cat {}/inside", quote(&subpaths.join("1"))));
        assert_eq!(read, "inside");
        sh(&format!("umount -i {}", quote(&subpaths.join("0"))));
        let done = exec(&daemon, SIDEMOUNT, &["umount", subpaths.join("1").to_str().unwrap()]);
        assert_eq!(done.code, Some(0), "{}", done.output);
        assert!(daemon.recorded().is_empty());

        // A directory only the kubelet's namespace holds (a mount there that
        // does not reach the host): the same name in the daemon's namespace is
        // another directory, which is never bound in its place.
        let private = vol.join("private");
        std::fs::create_dir_all(private.join("sub")).unwrap();
        std::fs::write(private.join("sub/host"), "the host's").unwrap();
        let apart = host.namespace("kubelet-apart", &format!(
            "mount --make-rslave {root} && mount -t tmpfs apart {p} && mkdir {p}/sub && echo kubelet > {p}/sub/kubelet",
            root = quote(&root), p = quote(&private)));
        let out = apart.command("sh").arg("-c")
            .arg(format!("exec 7<{} && SIDEMOUNT_SOCKET={socket} {SIDEMOUNT} mount --no-canonicalize -o bind /proc/$$/fd/7 {} 2>&1",
                quote(&private.join("sub")), quote(&subpaths.join("1"))))
            .output().unwrap();
        let said = String::from_utf8_lossy(&out.stdout);
        assert_eq!(out.status.code(), Some(32), "{said}");
        assert!(said.contains("moved or replaced"), "{said}");
        assert!(seen(&subpaths.join("1")).is_none());
        assert!(daemon.recorded().is_empty());
    }
}
