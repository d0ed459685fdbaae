//! Synthetic mount tables for parser tests and benchmarks.

/// `n` mountinfo lines shaped like a busy kubelet node: pod volumes with escaped
/// names, every propagation form, binds of subdirectories.
pub fn kubelet_node_table(n: usize) -> String {
    let mut out = String::with_capacity(n * 160);
    out.push_str("1 0 254:0 / / rw,relatime shared:1 - ext4 /dev/vda rw\n");
    for i in 1..n as u32 {
        let id = i + 1;
        let propagation = match i % 5 {
            0 => format!("shared:{i}"),
            1 => format!("shared:{i} master:1"),
            2 => "master:1 propagate_from:1".to_string(),
            3 => "unbindable".to_string(),
            _ => String::new(),
        };
        let sep = if propagation.is_empty() { "" } else { " " };
        out.push_str(&format!(
            "{id} 1 0:{i} /sub\\040dir/{i} /var/lib/kubelet/pods/{i:08x}-pod/volumes/kubernetes.io~nfs/vol\\040{i} \
             rw,nosuid,nodev,relatime{sep}{propagation} - nfs4 server:/export\\011{i} rw,vers=4.2,rsize=1048576,addr=10.0.0.1\n"
        ));
    }
    out
}
