//! Secrets reach a mount helper through its own channel: a CIFS password goes to
//! mount.cifs in a 0600 credentials file on the executor's private staging tmpfs,
//! never on a command line (`/proc/PID/cmdline`), and the file is gone after.

mod common;

use std::path::PathBuf;

use common::{expect_success, kubelet_root, quote, sh, Daemon, Host};

privileged_test! {
    fn a_cifs_password_reaches_mount_cifs_in_a_file_not_its_argv(host: &Host) {
        let root = kubelet_root(host);
        // A mount.cifs that logs its argv and the credentials file it was given,
        // then mounts a tmpfs where mount(8) asked.
        let helpers = host.dir("helpers");
        let log = host.dir("run").join("mount.cifs.log");
        let helper = helpers.join("mount.cifs");
        std::fs::write(&helper, format!(r#"#!/bin/sh
echo "argv: $*" >> {log}
target=$2
shift 2
while [ $# -gt 0 ]; do
  if [ "$1" = -o ]; then
    for o in $(echo "$2" | tr ',' ' '); do
      case $o in credentials=*) f=${{o#credentials=}}; stat -c 'mode: %a' "$f" >> {log}; cat "$f" >> {log};; esac
    done
    shift
  fi
  shift
done
exec mount -t tmpfs -o size=64k cifs-fake "$target"
"#, log = quote(&log))).unwrap();
        sh(&format!("chmod +x {0} && mount -t overlay helpers -o lowerdir={1}:/usr/sbin /usr/sbin",
            quote(&helper), quote(&helpers)));
        let daemon = Daemon::start(host, &root, &[]);
        let target = host.dir("var/lib/kubelet/pods/p/volumes/kubernetes.io~cifs/share");
        let options = "vers=3.0,username=alice%hunter2,domain=CORP";
        let out = daemon.client(["mount", "-t", "cifs", "-o", options, "//server/share", target.to_str().unwrap()]);
        expect_success("mount -t cifs", out);

        let logged = std::fs::read_to_string(&log).unwrap();
        let argv = logged.lines().find(|l| l.starts_with("argv: ")).unwrap();
        assert!(!argv.contains("hunter2") && !argv.contains("alice"), "{argv}");
        assert!(argv.contains("vers=3.0") && argv.contains("credentials="), "{argv}");
        // It took effect: the helper read the password from the file, 0600.
        assert!(logged.contains("mode: 600\nusername=alice\npassword=hunter2\ndomain=CORP\n"), "{logged}");
        let seen = sh(&format!("findmnt -n -o SOURCE --mountpoint {}", quote(&target)));
        assert_eq!(seen.trim(), "cifs-fake");
        // The file is gone, and nothing else lies in the staging directory.
        let staging = daemon.state_dir.join("staging");
        let left: Vec<PathBuf> = std::fs::read_dir(&staging).unwrap().map(|e| e.unwrap().path()).collect();
        assert_eq!(left, Vec::<PathBuf>::new(), "left in {}", staging.display());

        expect_success("umount", daemon.client(["umount", target.to_str().unwrap()]));
    }
}
