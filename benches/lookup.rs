//! The lookup that verification makes in each namespace, the mount on one target,
//! by statx(2) + statmount(2) beside a whole mountinfo read, as the namespace's
//! table grows. Needs root: it runs in a mount namespace of its own (`/`
//! rprivate), with a tmpfs scratch root under /tmp that goes with it.

use std::path::{Path, PathBuf};

use criterion::{BenchmarkId, Criterion};
use nix::mount::{mount, MsFlags};
use nix::sched::{unshare, CloneFlags};
use sidemount::ns::mountinfo::ProcRoot;
use sidemount::ns::namespace::Namespace;

/// Table sizes: a small node, a busy one, and DESIGN.md's large table.
const SIZES: [usize; 3] = [100, 5_000, 50_000];

fn main() {
    if !nix::unistd::geteuid().is_root() {
        eprintln!("skipping the lookup benchmark: it needs root (a mount namespace of its own)");
        return;
    }
    // 1. A mount namespace of this process's own, before any thread starts
    //    (unshare(CLONE_NEWNS) refuses a process whose threads share its fs).
    unshare(CloneFlags::CLONE_NEWNS).expect("unshare(CLONE_NEWNS)");
    // 2. Nothing done here propagates back to the machine.
    mount(
        None::<&str>,
        "/",
        None::<&str>,
        MsFlags::MS_REC | MsFlags::MS_PRIVATE,
        None::<&str>,
    )
    .expect("make / rprivate");
    // 3. A tmpfs scratch root, where the table grows by bind mounts.
    let scratch = tempfile::Builder::new()
        .prefix("sidemount-bench-lookup-")
        .tempdir()
        .unwrap();
    let root = scratch.path().to_owned();
    mount(
        Some("lookup"),
        &root,
        Some("tmpfs"),
        MsFlags::empty(),
        None::<&str>,
    )
    .expect("tmpfs");
    std::fs::create_dir(root.join("src")).unwrap();
    let target = root.join("target");
    std::fs::create_dir(&target).unwrap();
    mount(
        Some("volume"),
        &target,
        Some("tmpfs"),
        MsFlags::empty(),
        None::<&str>,
    )
    .expect("tmpfs");

    let mut c = Criterion::default().configure_from_args().sample_size(20);
    let ns = Namespace::new("bench", ProcRoot::default(), Some(std::process::id()));
    let mut group = c.benchmark_group("mount-on-target");
    let mut made = 0;
    for size in SIZES {
        made = grow(&root, made, size);
        let lines = ns.table().unwrap().mounts.len();
        group.bench_with_input(BenchmarkId::new("statmount", lines), &target, |b, t| {
            b.iter(|| ns.mount_at(t).unwrap().expect("mounted").id)
        });
        group.bench_with_input(BenchmarkId::new("mountinfo", lines), &target, |b, t| {
            b.iter(|| ns.table().unwrap().by_target(t).expect("mounted").id)
        });
    }
    group.finish();
    c.final_summary();
    // The namespace, and with it every mount, ends with the process; the scratch
    // directory is removed once its tmpfs is gone.
    let _ = nix::mount::umount2(&root, nix::mount::MntFlags::MNT_DETACH);
}

/// Binds the scratch root's `src` on new directories until `want` mounts exist.
fn grow(root: &Path, made: usize, want: usize) -> usize {
    for i in made..want {
        let dir: PathBuf = root.join(format!("m{i}"));
        std::fs::create_dir(&dir).unwrap();
        mount(
            Some(&root.join("src")),
            &dir,
            None::<&str>,
            MsFlags::MS_BIND,
            None::<&str>,
        )
        .expect("bind");
    }
    want.max(made)
}
