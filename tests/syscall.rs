//! The real syscall seam (`mount::syscall::Linux`) on a real kernel: the fd-based
//! mount API lands mounts on the directory an fd is open on, with the options and
//! attributes asked for, as findmnt reports them.

mod common;

use std::ffi::OsStr;
use std::os::fd::AsFd;
use std::path::Path;

use common::{quote, sh, Host};
use sidemount::mount::syscall::{
    AtFlags, Errno, FsMountFlags, FsOpenFlags, Linux, MntFlags, MountAttr, MountAttrFlags,
    MoveMountFlags, MsFlags, OpenTreeFlags, Syscall, AT_RECURSIVE, CWD,
};

/// `findmnt` columns for the mount at `target`, or "" when there is none.
fn findmnt(target: &Path, columns: &str) -> String {
    let line = format!(
        "findmnt -n -o {columns} --mountpoint {} || true",
        quote(target)
    );
    sh(&line).trim().to_owned()
}

/// An O_PATH fd on `dir`, as policy hands on a checked target.
fn handle(dir: &Path) -> std::os::fd::OwnedFd {
    use rustix::fs::{open, Mode, OFlags};
    open(
        dir,
        OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC,
        Mode::empty(),
    )
    .unwrap()
}

privileged_test! {
    fn the_new_mount_api_mounts_onto_an_fd(host: &Host) {
        let sys = Linux;
        let target = host.dir("kubelet/pods/p/volumes/v");
        let fd = handle(&target);

        // fsopen -> fsconfig -> fsmount -> move_mount onto the O_PATH fd.
        let fs = sys.fsopen("tmpfs", FsOpenFlags::FSOPEN_CLOEXEC).unwrap();
        sys.fsconfig_set_string(fs.as_fd(), "size", OsStr::new("2m")).unwrap();
        sys.fsconfig_set_string(fs.as_fd(), "source", OsStr::new("seam-test")).unwrap();
        sys.fsconfig_set_flag(fs.as_fd(), "ro").unwrap();
        let bad = sys.fsconfig_set_string(fs.as_fd(), "nosuchkey", OsStr::new("secret-value"));
        let bad = bad.unwrap_err();
        assert_eq!(bad.errno(), Errno::EINVAL);
        assert!(!bad.to_string().contains("secret-value"), "{bad}");
        sys.fsconfig_create(fs.as_fd()).unwrap();
        let mnt = sys
            .fsmount(fs.as_fd(), FsMountFlags::FSMOUNT_CLOEXEC, MountAttrFlags::MOUNT_ATTR_NOSUID)
            .unwrap();
        let flags = MoveMountFlags::MOVE_MOUNT_F_EMPTY_PATH | MoveMountFlags::MOVE_MOUNT_T_EMPTY_PATH;
        sys.move_mount(mnt.as_fd(), Path::new(""), fd.as_fd(), Path::new(""), flags).unwrap();
        assert_eq!(findmnt(&target, "SOURCE,FSTYPE"), "seam-test tmpfs");
        let options = findmnt(&target, "OPTIONS");
        assert!(options.starts_with("ro,nosuid,"), "{options}");
        assert!(options.contains("size=2048k"), "{options}");

        // open_tree(OPEN_TREE_CLONE | AT_RECURSIVE) of it, moved onto a second fd,
        // then mount_setattr: read-write but noexec, and private.
        let source = host.dir("kubelet/pods/p/volumes/src");
        let src = quote(&source);
        sh(&format!("mount -t tmpfs outer {src} && mkdir {src}/sub && mount -t tmpfs inner {src}/sub"));
        let copy = host.dir("kubelet/pods/p/volumes/copy");
        let tree = sys
            .open_tree(CWD, &source, OpenTreeFlags::OPEN_TREE_CLONE | OpenTreeFlags::AT_RECURSIVE | OpenTreeFlags::OPEN_TREE_CLOEXEC)
            .unwrap();
        sys.move_mount(tree.as_fd(), Path::new(""), handle(&copy).as_fd(), Path::new(""), flags).unwrap();
        assert_eq!(findmnt(&copy.join("sub"), "SOURCE"), "inner");
        let attr = MountAttr::flags(MountAttrFlags::MOUNT_ATTR_NOEXEC, MountAttrFlags::MOUNT_ATTR_RDONLY);
        sys.mount_setattr(CWD, &copy, AtFlags::empty(), &attr).unwrap();
        let options = findmnt(&copy, "VFS-OPTIONS");
        assert!(options.starts_with("rw,noexec"), "{options}");
        let private = MountAttr::propagation(MsFlags::MS_PRIVATE);
        sys.mount_setattr(handle(&copy).as_fd(), Path::new(""), AtFlags::EMPTY_PATH | AT_RECURSIVE, &private)
            .unwrap();
        assert_eq!(findmnt(&copy, "PROPAGATION"), "private");

        // mount(2) with a type and data, then umount2 with UMOUNT_NOFOLLOW, which
        // refuses a symlink.
        let plain = host.dir("plain");
        sys.mount(Some(Path::new("plain-src")), &plain, Some("tmpfs"), MsFlags::MS_NODEV, Some(OsStr::new("size=1m,mode=0700")))
            .unwrap();
        let options = findmnt(&plain, "OPTIONS");
        assert!(options.contains("nodev") && options.contains("size=1024k") && options.contains("mode=700"), "{options}");
        let link = host.scratch.join("link");
        std::os::unix::fs::symlink(&plain, &link).unwrap();
        let err = sys.umount2(&link, MntFlags::UMOUNT_NOFOLLOW).unwrap_err();
        assert_eq!(err.errno(), Errno::EINVAL, "{err}");
        sys.umount2(&plain, MntFlags::UMOUNT_NOFOLLOW).unwrap();
        assert_eq!(findmnt(&plain, "SOURCE"), "");
        // An fd on a mount keeps it busy.
        drop((tree, mnt));
        for dir in [copy.join("sub"), copy, source.join("sub"), source, target] {
            sys.umount2(&dir, MntFlags::UMOUNT_NOFOLLOW).unwrap();
        }
    }
}
