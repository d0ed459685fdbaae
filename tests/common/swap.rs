//! The attack of a pod on the one path: a thread that swaps a directory under
//! the roots with a symlink to a directory outside them (renameat2
//! `RENAME_EXCHANGE`) while the daemon acts on it.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use rustix::fs::{renameat_with, RenameFlags, CWD};

/// Swaps `a` and `b` (a directory and a symlink) until dropped; counts the swaps.
pub struct Swapper {
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<usize>>,
    a: PathBuf,
    b: PathBuf,
}

impl Swapper {
    pub fn start(a: &Path, b: &Path) -> Swapper {
        let stop = Arc::new(AtomicBool::new(false));
        let (flag, x, y) = (stop.clone(), a.to_owned(), b.to_owned());
        let thread = std::thread::spawn(move || {
            let mut swaps = 0;
            while !flag.load(Ordering::Relaxed) {
                // EBUSY while one of them is a mount point: the attack waits.
                if renameat_with(CWD, &x, CWD, &y, RenameFlags::EXCHANGE).is_ok() {
                    swaps += 1;
                }
            }
            swaps
        });
        Swapper {
            stop,
            thread: Some(thread),
            a: a.to_owned(),
            b: b.to_owned(),
        }
    }

    /// Stops swapping and puts the directory back at `a`; the number of swaps.
    pub fn stop(mut self) -> usize {
        self.stop.store(true, Ordering::Relaxed);
        let swaps = self.thread.take().unwrap().join().unwrap();
        if std::fs::symlink_metadata(&self.a)
            .unwrap()
            .file_type()
            .is_symlink()
        {
            renameat_with(CWD, &self.a, CWD, &self.b, RenameFlags::EXCHANGE).unwrap();
        }
        swaps
    }
}
