//! Every mount of a namespace by its unique id, in a few calls (listmount(2),
//! Linux 6.8; another namespace than the caller's by its id, 6.11): how a restart
//! checks thousands of recorded mounts without reading and parsing mountinfo,
//! whose size grows with every mount and which must be read twice to be whole.

use std::collections::HashSet;

use nix::errno::Errno;

use crate::ns::statmount::MntIdReq;

const SYS_LISTMOUNT: nix::libc::c_long = 458;
/// `LSMT_ROOT`: from the namespace's root, so every mount in it.
const LSMT_ROOT: u64 = u64::MAX;
/// Ids asked for per call.
const PAGE: usize = 4096;

/// The unique ids (statx `STATX_MNT_ID_UNIQUE`) of every mount in the mount
/// namespace whose id (`NS_GET_MNTNS_ID`) is `ns_id`; `ENOSYS` or `EINVAL` from
/// a kernel that cannot list them.
pub fn unique_ids(ns_id: u64) -> Result<HashSet<u64>, Errno> {
    in_pages(ns_id, PAGE)
}

/// [`unique_ids`], asking for `size` ids per call.
fn in_pages(ns_id: u64, size: usize) -> Result<HashSet<u64>, Errno> {
    let mut ids = HashSet::new();
    let mut page = vec![0u64; size];
    // Ids come in increasing order; each call goes on after the last one seen.
    let mut last = 0;
    loop {
        let req = MntIdReq {
            size: std::mem::size_of::<MntIdReq>() as u32,
            mnt_ns_fd: 0,
            mnt_id: LSMT_ROOT,
            param: last,
            mnt_ns_id: ns_id,
        };
        // SAFETY: `req` is a valid mnt_id_req of the size it declares, and the
        // kernel writes at most `size` u64 ids into `page`, which holds `size`.
        let rc = unsafe {
            nix::libc::syscall(
                SYS_LISTMOUNT,
                &req as *const MntIdReq,
                page.as_mut_ptr(),
                size,
                0,
            )
        };
        let n = usize::try_from(rc).map_err(|_| Errno::last())?;
        ids.extend(&page[..n]);
        match page[..n].last() {
            Some(&id) if n == size => last = id,
            _ => return Ok(ids),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ns::mountinfo::ProcRoot;
    use crate::ns::statmount::mount_namespace_id;

    /// The own namespace's mounts, listed whole (as many as mountinfo shows),
    /// in one call or in many.
    #[test]
    fn lists_every_mount_of_a_namespace() {
        let Ok(ns) = mount_namespace_id(&ProcRoot::default(), None) else {
            eprintln!("no NS_GET_MNTNS_ID here (Linux < 6.11)");
            return;
        };
        let ids = unique_ids(ns).unwrap();
        let table = crate::ns::mountinfo::MountTable::read(&ProcRoot::default(), None).unwrap();
        assert_eq!(ids.len(), table.mounts.len());
        // Unique ids start above the reusable ones (INT_MAX).
        assert!(ids.iter().all(|&id| id > i32::MAX as u64), "{ids:?}");
        assert_eq!(in_pages(ns, 2).unwrap(), ids);
    }
}
