//! Parsing a 50,000-line mount table: sidemount's parser beside procfs's, one run.

use criterion::{criterion_group, criterion_main, Criterion};
use procfs::FromBufRead;
use sidemount::ns::mountinfo::MountTable;

#[path = "../tests/common/fixtures.rs"]
mod fixtures;

fn parse(c: &mut Criterion) {
    let text = fixtures::kubelet_node_table(50_000);
    let mut group = c.benchmark_group("mountinfo-50000-lines");
    group.sample_size(20);
    group.bench_function("sidemount", |b| {
        b.iter(|| MountTable::parse(text.as_bytes()).unwrap().mounts.len())
    });
    group.bench_function("procfs", |b| {
        b.iter(|| {
            procfs::process::MountInfos::from_buf_read(text.as_bytes())
                .unwrap()
                .0
                .len()
        })
    });
    group.finish();
}

criterion_group!(benches, parse);
criterion_main!(benches);
