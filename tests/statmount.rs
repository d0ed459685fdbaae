//! statx(2) + statmount(2) lookups against mountinfo, on real mount namespaces:
//! the entry of the mount on a path must be the mountinfo line, in this namespace
//! and in another process's.

mod common;

use std::path::{Path, PathBuf};

use common::{quote, sh, Host};
use sidemount::ns::mountinfo::{Mount, MountTable, ProcRoot};
use sidemount::ns::statmount::mount_at;

/// Mounts of every kind the daemon meets: a tmpfs with options and a space in
/// its path and source, a bind of a subdirectory, a read-only bind, stacked
/// mounts, and each propagation (shared, slave, shared+slave, unbindable).
fn varied_mounts(host: &Host) -> PathBuf {
    let top = host.dir("stat mounts");
    sh(&format!(
        "cd {top}
         mkdir -p 'a b' src bind ro stacked shared slave both unbindable
         mount -t tmpfs -o size=1m,mode=750,nosuid,nodev 'my tmpfs' 'a b'
         mount -t tmpfs src src && mkdir -p src/sub/dir
         mount --bind src/sub/dir bind
         mount --bind -o ro src ro
         mount -t tmpfs lower stacked && mount -t tmpfs -o noexec,noatime upper stacked
         mount -t tmpfs shared shared && mount --make-shared shared
                  mount -t tmpfs unbindable unbindable && mount --make-unbindable unbindable
         mount --bind shared slave && mount --make-slave slave
         mount --bind shared both && mount --make-slave both && mount --make-shared both",
        top = quote(&top)
    ));
    top
}

/// Every mount visible on its own target, as mountinfo lists them.
fn visible(table: &MountTable) -> Vec<&Mount> {
    table
        .mounts
        .iter()
        .filter(|m| table.by_target(&m.target).map(|v| v.id) == Some(m.id))
        .collect()
}

fn assert_same_everywhere(proc: &ProcRoot, pid: Option<u32>, under: &Path) {
    let table = MountTable::read(proc, pid).unwrap();
    let mounts: Vec<&Mount> = visible(&table)
        .into_iter()
        .filter(|m| m.target.starts_with(under))
        .collect();
    assert!(mounts.len() >= 10, "{mounts:#?}");
    for want in mounts {
        let got = mount_at(proc, pid, &want.target)
            .unwrap_or_else(|e| panic!("{}: {e}", want.target.display()))
            .unwrap_or_else(|| panic!("{} is not found as a mount point", want.target.display()));
        assert_eq!(&got, want, "pid {pid:?}");
    }
}

privileged_test! {
    fn the_entry_of_each_mount_is_its_mountinfo_line(host: &Host) {
        let top = varied_mounts(host);
        assert_same_everywhere(&ProcRoot::default(), None, &host.scratch);
        // A directory, and a path that does not exist, hold no mount.
        let proc = ProcRoot::default();
        assert_eq!(mount_at(&proc, None, &top.join("src/sub")).unwrap(), None);
        assert_eq!(mount_at(&proc, None, &top.join("missing/dir")).unwrap(), None);
        // The upper of two stacked mounts is the visible one.
        let stacked = mount_at(&proc, None, &top.join("stacked")).unwrap().unwrap();
        assert_eq!(stacked.source, "upper");
        // A symlink is not followed: mountinfo names mount points by their paths.
        sh(&format!("ln -s {0}/shared {0}/link", quote(&top)));
        assert!(mount_at(&proc, None, &top.join("link")).is_err());
    }
}

privileged_test! {
    fn another_namespace_is_seen_from_outside(host: &Host) {
        let top = varied_mounts(host);
        // The other namespace changes what it inherited: a mount only it has, one
        // it removed, and a propagation of its own.
        let ns = host.namespace(
            "other",
            &format!(
                "cd {0} && mkdir -p own && mount -t tmpfs own own && umount 'a b' && mount --make-private both",
                quote(&top)
            ),
        );
        let proc = ProcRoot::default();
        assert_same_everywhere(&proc, Some(ns.pid), &host.scratch);
        assert_eq!(mount_at(&proc, Some(ns.pid), &top.join("a b")).unwrap(), None);
        assert_eq!(mount_at(&proc, None, &top.join("own")).unwrap(), None);
        let own = mount_at(&proc, Some(ns.pid), &top.join("own")).unwrap().unwrap();
        assert_eq!(own.fstype, "tmpfs");
    }
}
