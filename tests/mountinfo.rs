//! The parser on a large synthetic table.

mod common;

use std::path::Path;

use sidemount::ns::mountinfo::MountTable;

#[test]
fn parses_a_50000_line_table() {
    let text = common::fixtures::kubelet_node_table(50_000);
    let table = MountTable::parse(text.as_bytes()).unwrap();
    assert_eq!(table.mounts.len(), 50_000);
    let m = table.by_id(43_211).unwrap();
    assert_eq!(m.root, Path::new("/sub dir/43210"));
    assert_eq!(
        m.target,
        Path::new("/var/lib/kubelet/pods/0000a8ca-pod/volumes/kubernetes.io~nfs/vol 43210")
    );
    assert_eq!(m.source, "server:/export\t43210");
    assert_eq!(m.propagation.shared, Some(43210));
    let holder = table
        .containing(Path::new(
            "/var/lib/kubelet/pods/0000a8ca-pod/volumes/kubernetes.io~nfs/vol 43210/file",
        ))
        .unwrap();
    assert_eq!(holder.id, 43_211);
    assert_eq!(table.containing(Path::new("/etc")).unwrap().id, 1);
}
