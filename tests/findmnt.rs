//! `sidemount list --output json` against util-linux findmnt, mount for mount, on this
//! machine's table and on namespaces full of awkward mount point names.

mod common;

use std::collections::BTreeMap;
use std::process::Command;

use common::{expect_success, quote, sh, Host, SIDEMOUNT};
use serde_json::Value;

const COLUMNS: [&str; 6] = ["id", "parent", "target", "source", "fstype", "propagation"];

/// id -> the six columns, from a `{"filesystems": [...]}` document.
fn by_id(json: &str) -> BTreeMap<u64, Vec<Value>> {
    let doc: Value = serde_json::from_str(json).unwrap_or_else(|e| panic!("{e}: {json}"));
    doc["filesystems"]
        .as_array()
        .unwrap()
        .iter()
        .map(|fs| {
            let id = fs["id"].as_u64().unwrap();
            (id, COLUMNS.iter().map(|c| fs[*c].clone()).collect())
        })
        .collect()
}

/// Lists the table of `pid` (or this process's namespace) both ways and compares.
fn assert_agree(pid: Option<u32>) {
    let mut findmnt = Command::new("findmnt");
    findmnt.args([
        "--list",
        "-J",
        "-o",
        "ID,PARENT,TARGET,SOURCE,FSTYPE,PROPAGATION",
    ]);
    let mut ours = Command::new(SIDEMOUNT);
    ours.args(["list", "--output", "json"]);
    if let Some(pid) = pid {
        findmnt.args(["-N", &pid.to_string()]);
        ours.args(["--pid", &pid.to_string()]);
    }
    let theirs = by_id(&expect_success("findmnt", findmnt.output().unwrap()));
    let ours = by_id(&expect_success("sidemount list", ours.output().unwrap()));
    assert!(!ours.is_empty());
    for (id, row) in &theirs {
        assert_eq!(ours.get(id), Some(row), "mount {id} differs from findmnt");
    }
    assert_eq!(ours.len(), theirs.len(), "{ours:#?}\n{theirs:#?}");
}

#[test]
fn list_agrees_with_findmnt_on_this_machine() {
    assert_agree(None);
}

/// Mount points named with every character mountinfo escapes, and non-ASCII.
const AWKWARD: [&str; 6] = [
    "with space",
    "with\ttab",
    "with\nnewline",
    "back\\slash",
    "naïve-ünïcødé-日本",
    "all \t\n\\ of them",
];

privileged_test! {
    fn list_agrees_with_findmnt_on_awkward_names(host: &Host) {
        let base = host.dir("awkward");
        let source = host.dir("source dir\twith\\odd");
        for name in AWKWARD {
            let target = base.join(name);
            std::fs::create_dir(&target).unwrap();
            sh(&format!("mount -t tmpfs {} {}", quote(std::path::Path::new(name)), quote(&target)));
            // A bind of a subdirectory: findmnt prints it as source[root].
            let sub = source.join(name);
            std::fs::create_dir_all(&sub).unwrap();
            let bind = target.join("bound");
            std::fs::create_dir(&bind).unwrap();
            sh(&format!("mount --bind {} {}", quote(&sub), quote(&bind)));
        }
        // Every propagation form.
        let p = |i: usize| quote(&base.join(AWKWARD[i]));
        sh(&format!("mount --make-shared {}", p(0)));
        sh(&format!("mount --make-unbindable {}", p(1)));
        sh(&format!("mount --make-shared {0} && mount --bind {0} {1} && mount --make-slave {1}", p(2), p(3)));
        sh(&format!("mount --make-shared {}", p(3)));
        assert_agree(None);

        // Another namespace, through --pid / findmnt -N.
        let other = host.namespace("other", &format!("mount --make-rslave {}", quote(&host.scratch)));
        other.sh(&format!("mount -t tmpfs 'other ns' {}", p(5)));
        assert_agree(Some(other.pid));
    }
}
