//! Mounts on handles, on a real kernel: each lands exactly where the handle is,
//! with the flags asked for, and an undo removes exactly the mount that was made,
//! wherever it landed.

mod common;

use std::ffi::OsStr;
use std::os::fd::AsFd;
use std::path::Path;

use common::{quote, sh, Host};
use sidemount::mount::by_handle::{self, Api, Filesystem, Place};
use sidemount::mount::syscall::{Linux, MntFlags, MsFlags};
use sidemount::ns::beneath::{beneath, on_mount, open_root, Kind};

/// `findmnt` columns of the mounts at `target`, one line each, "" for none.
fn findmnt(target: &Path, columns: &str) -> String {
    let line = format!(
        "findmnt -n -o {columns} --mountpoint {} || true",
        quote(target)
    );
    let out = sh(&line);
    let lines = out
        .lines()
        .map(|l| l.split_whitespace().collect::<Vec<_>>().join(" "));
    lines.collect::<Vec<_>>().join("\n")
}

/// A checked target: `rest` beneath `root`, and its parent.
struct Checked {
    parent: std::os::fd::OwnedFd,
    name: std::ffi::OsString,
    fd: std::os::fd::OwnedFd,
}

impl Checked {
    fn new(root: &Path, rest: &str) -> Self {
        let rest = Path::new(rest);
        Checked {
            parent: beneath(root, rest.parent().unwrap(), Kind::Directory).unwrap(),
            name: rest.file_name().unwrap().to_owned(),
            fd: beneath(root, rest, Kind::Any).unwrap(),
        }
    }

    fn place(&self) -> Place<'_> {
        Place {
            parent: self.parent.as_fd(),
            name: &self.name,
            fd: self.fd.as_fd(),
        }
    }
}

fn tmpfs<'a>(source: &'a str, flags: MsFlags, data: &'a [&'a OsStr]) -> Filesystem<'a> {
    Filesystem {
        fstype: "tmpfs",
        source: OsStr::new(source),
        flags,
        data,
        files: &[],
    }
}

privileged_test! {
    fn new_filesystems_land_on_the_handle_by_either_api(host: &Host) {
        let root = host.dir("kubelet");
        for (api, name) in [(Api::NewMountApi, "new"), (Api::ProcFdPath, "legacy")] {
            let target = host.dir(&format!("kubelet/pods/p/volumes/{name}"));
            let checked = Checked::new(&root, &format!("pods/p/volumes/{name}"));
            let data = [OsStr::new("size=1m"), OsStr::new("mode=0700")];
            let fs = tmpfs(name, MsFlags::MS_NOSUID | MsFlags::MS_NODEV, &data);
            let made = by_handle::new_filesystem(&Linux, &fs, &checked.place(), api).unwrap();
            assert_eq!(findmnt(&target, "SOURCE,FSTYPE"), format!("{name} tmpfs"));
            let options = findmnt(&target, "VFS-OPTIONS,FS-OPTIONS");
            assert!(options.starts_with("rw,nosuid,nodev"), "{name}: {options}");
            assert!(options.contains("size=1024k,mode=700"), "{name}: {options}");
            // The fd handed back is the new mount's root.
            let on = on_mount(made.as_fd()).unwrap();
            assert!(on.root, "{name}");
            assert_ne!(on.id, on_mount(checked.fd.as_fd()).unwrap().id, "{name}");
            by_handle::detach(&Linux, made.as_fd()).unwrap();
            assert_eq!(findmnt(&target, "SOURCE"), "", "{name}");
        }
    }
}

privileged_test! {
    fn binds_clone_the_source_handle_with_their_flags(host: &Host) {
        let root = host.dir("kubelet");
        let source = host.dir("kubelet/plugins/disk");
        std::fs::write(source.join("data"), "payload").unwrap();
        std::fs::write(root.join("plugins/file"), "one file").unwrap();
        for (api, name) in [(Api::NewMountApi, "new"), (Api::ProcFdPath, "legacy")] {
            let target = host.dir(&format!("kubelet/pods/p/volumes/{name}"));
            let src = beneath(&root, Path::new("plugins/disk"), Kind::Any).unwrap();
            let dst = Checked::new(&root, &format!("pods/p/volumes/{name}"));
            let flags = MsFlags::MS_RDONLY | MsFlags::MS_NOSUID;
            let made = by_handle::bind(&Linux, src.as_fd(), false, flags, &dst.place(), api).unwrap();
            assert_eq!(std::fs::read_to_string(target.join("data")).unwrap(), "payload");
            let options = findmnt(&target, "VFS-OPTIONS");
            assert!(options.starts_with("ro,nosuid"), "{name}: {options}");
            assert!(std::fs::write(target.join("new"), "x").is_err(), "{name}: read-only");
            by_handle::detach(&Linux, made.as_fd()).unwrap();
            assert_eq!(findmnt(&target, "SOURCE"), "", "{name}");
        }
        // A file onto a file.
        std::fs::write(root.join("pods/p/volumes/target-file"), "").unwrap();
        let src = beneath(&root, Path::new("plugins/file"), Kind::Any).unwrap();
        let dst = Checked::new(&root, "pods/p/volumes/target-file");
        let made = by_handle::bind(&Linux, src.as_fd(), false, MsFlags::empty(), &dst.place(), Api::NewMountApi).unwrap();
        assert_eq!(std::fs::read_to_string(root.join("pods/p/volumes/target-file")).unwrap(), "one file");
        by_handle::detach(&Linux, made.as_fd()).unwrap();
    }
}

privileged_test! {
    fn a_staged_mount_moves_onto_the_handle_and_unmounts_beneath_its_parent(host: &Host) {
        let root = host.dir("kubelet");
        let target = host.dir("kubelet/pods/p/volumes/v");
        let staging = host.dir("state/staging");
        sh(&format!("mount -t tmpfs staging {0} && mount --make-private {0}", quote(&staging)));
        sh(&format!("mkdir {0}/1 && mount -t tmpfs -o size=1m made-by-mount8 {0}/1", quote(&staging)));
        let staged = open_root(&staging.join("1")).unwrap();
        let dst = Checked::new(&root, "pods/p/volumes/v");
        by_handle::move_onto(&Linux, staged.as_fd(), dst.fd.as_fd()).unwrap();
        assert_eq!(findmnt(&target, "SOURCE"), "made-by-mount8");
        assert_eq!(findmnt(&staging.join("1"), "SOURCE"), "");
        drop(staged);

        // The unmount names the target beneath its checked parent.
        let Checked { parent, name, .. } = dst;
        by_handle::unmount(&Linux, parent.as_fd(), &name, MntFlags::empty()).unwrap();
        assert_eq!(findmnt(&target, "SOURCE"), "");
        // A symlink put in the target's place is not followed.
        let outside = host.dir("outside");
        sh(&format!("mount -t tmpfs foreign {}", quote(&outside)));
        std::fs::remove_dir(&target).unwrap();
        std::os::unix::fs::symlink(&outside, &target).unwrap();
        let err = by_handle::unmount(&Linux, parent.as_fd(), &name, MntFlags::empty()).unwrap_err();
        assert_eq!(findmnt(&outside, "SOURCE"), "foreign", "{err}");
    }
}
