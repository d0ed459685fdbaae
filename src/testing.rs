//! Support for the library's unit tests: what several modules' tests need from
//! the machine, found one way.

use std::os::unix::fs::FileTypeExt;
use std::path::PathBuf;

/// A block device node in /dev, for tests that need a real one. Without one it
/// prints why `test` skips and returns None, unless `SIDEMOUNT_REQUIRE_ROOT=1`,
/// where skipping is a failure (as the privileged integration tests do).
pub fn block_device_or_skip(test: &str) -> Option<PathBuf> {
    let found = std::fs::read_dir("/dev")
        .expect("read /dev")
        .filter_map(Result::ok)
        .find(|e| e.file_type().is_ok_and(|t| t.is_block_device()))
        .map(|e| e.path());
    if found.is_none() {
        assert!(
            std::env::var("SIDEMOUNT_REQUIRE_ROOT").as_deref() != Ok("1"),
            "{test} needs a block device in /dev and SIDEMOUNT_REQUIRE_ROOT=1 forbids skipping it"
        );
        eprintln!("skipping {test}: no block device in /dev");
    }
    found
}
