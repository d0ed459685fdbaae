//! `sidemount share` and peer-group comparison, on real mount namespaces.

mod common;

use std::path::Path;

use common::{expect_success, quote, sh, sidemount, Host};
use sidemount::ns::mountinfo::{MountTable, ProcRoot};
use sidemount::ns::namespace::Namespace;
use sidemount::ns::propagation::{link, BreakReason, Link};

fn own_table() -> MountTable {
    MountTable::read(&ProcRoot::default(), None).unwrap()
}

fn mounts_at(path: &Path) -> usize {
    own_table()
        .mounts
        .iter()
        .filter(|m| m.target == path)
        .count()
}

privileged_test! {
    fn share_binds_a_plain_directory_once(host: &Host) {
        let root = host.dir("var/lib/kubelet");
        let first = expect_success("share", sidemount(&["share", root.to_str().unwrap()]));
        assert!(first.contains("bound onto itself and made rshared"), "{first}");
        let group = own_table().peer_group(&root).expect("shared after share");
        assert!(first.ends_with(&format!("peer group {group}\n")), "{first}");
        assert_eq!(mounts_at(&root), 1);

        let again = expect_success("share again", sidemount(&["share", root.to_str().unwrap()]));
        assert!(again.contains("was already shared"), "{again}");
        assert_eq!(mounts_at(&root), 1, "share is idempotent");
        assert_eq!(own_table().peer_group(&root), Some(group));
    }
}

privileged_test! {
    fn share_makes_a_private_mount_point_rshared_without_binding(host: &Host) {
        let root = host.dir("kubelet");
        sh(&format!("mount -t tmpfs kubelet-root {0} && mkdir {0}/pods && mount -t tmpfs pod {0}/pods", quote(&root)));
        assert!(own_table().by_target(&root).unwrap().propagation.is_private());
        let out = expect_success("share", sidemount(&["share", root.to_str().unwrap()]));
        assert!(out.contains(": made rshared"), "{out}");
        assert_eq!(mounts_at(&root), 1);
        // MS_REC: the submount is shared too.
        assert!(own_table().peer_group(&root.join("pods")).is_some());
    }
}

privileged_test! {
    fn share_names_a_missing_path(_host: &Host) {
        let out = sidemount(&["share", "/nonexistent/kubelet"]);
        assert!(!out.status.success());
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains("cannot resolve /nonexistent/kubelet"), "{err}");
    }
}

privileged_test! {
    fn peer_groups_compare_across_namespaces(host: &Host) {
        let root = common::kubelet_root(host);
        let group = own_table().peer_group(&root).unwrap();
        let this = Namespace::new("host", ProcRoot::default(), None);
        let ns = |kubelet: &common::Namespace| {
            Namespace::new("kubelet", ProcRoot::default(), Some(kubelet.pid))
        };

        // A containerized kubelet with the root `:rshared`: one peer group, and a
        // mount made on either side shows on the other.
        let kubelet = host.namespace("kubelet", "true");
        assert_eq!(link(&root, &this, &ns(&kubelet)).unwrap(), Link::PeerGroup { group });
        let vol = root.join("pods/p1/volumes/v");
        std::fs::create_dir_all(&vol).unwrap();
        kubelet.sh(&format!("mount -t tmpfs vol {}", quote(&vol)));
        assert!(own_table().is_mount_point(&vol), "kubelet mount reached the host");
        sh(&format!("umount {}", quote(&vol)));
        assert!(!kubelet.sh("cat /proc/self/mountinfo").contains("/p1/volumes/v "));

        // The same namespace: the same mount, whatever its propagation.
        let pid1 = Namespace::new("pid 1", ProcRoot::default(), Some(1));
        assert!(matches!(link(&root, &pid1, &this).unwrap(), Link::SameMount { .. }));

        // Private in the kubelet's namespace: the break names that mount.
        let private = host.namespace("kubelet", &format!("mount --make-private {}", quote(&root)));
        match link(&root, &this, &ns(&private)).unwrap() {
            Link::Broken(b) => {
                assert_eq!((b.namespace.as_str(), b.reason.clone()), ("kubelet", BreakReason::Private));
                assert_eq!(b.target, root);
                assert!(b.remedy().contains(&format!("sidemount share {}", root.display())));
            }
            other => panic!("expected a break, got {other:?}"),
        }

        // A slave (`:rslave`): receives, does not send back.
        let slave = host.namespace("kubelet", &format!("mount --make-rslave {}", quote(&root)));
        match link(&root, &this, &ns(&slave)).unwrap() {
            Link::Broken(b) => assert_eq!(b.reason, BreakReason::SlaveOnly),
            other => panic!("expected a break, got {other:?}"),
        }

        // Shared, but re-shared into a group of its own (slave, then shared).
        let own = host.namespace(
            "kubelet",
            &format!("mount --make-rslave {0} && mount --make-rshared {0}", quote(&root)),
        );
        match link(&root, &this, &ns(&own)).unwrap() {
            Link::Broken(b) => assert!(
                matches!(b.reason, BreakReason::OtherPeerGroup { other_group, .. } if other_group == group),
                "{b:?}"
            ),
            other => panic!("expected a break, got {other:?}"),
        }
    }
}
