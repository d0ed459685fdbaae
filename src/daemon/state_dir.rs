//! The daemon's state directory: what survives the daemon (its record, the status
//! file). A nobody-owned or symlinked state directory would let anyone empty or
//! forge the record, so it is opened once, beneath its parent, without following
//! symlinks, checked (owned by the daemon's user, not writable by group or others),
//! and every file in it is then reached through that handle, never its path again.
//! Files are replaced whole (temporary file, fsync, rename, fsync of the directory),
//! so a reader or a daemon killed at any moment sees the old file or the new.

use std::io::{Read, Write};
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use rustix::fs::{Mode, OFlags, ResolveFlags};
use rustix::io::Errno;

#[derive(Debug, thiserror::Error)]
pub enum StateDirError {
    #[error("cannot open the state directory {path}: {source}")]
    Open {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("the state directory {path} is a symbolic link (or reached through one beneath {parent}): refusing it; remove the link and let the daemon create the directory, or pass --state-dir with the real path")]
    Symlink { path: PathBuf, parent: PathBuf },
    #[error("the state directory {path} is owned by uid {owner}, not by uid {expected} that runs the daemon: anyone who owns it can rewrite the record; fix: chown {expected}:{expected} {path} (or remove it and let the daemon create it)")]
    Owner {
        path: PathBuf,
        owner: u32,
        expected: u32,
    },
    #[error("the state directory {path} has mode {mode:04o}, writable by group or others, who could rewrite the record; fix: chmod go-w {path}")]
    Writable { path: PathBuf, mode: u32 },
}

/// An open, checked directory under the state directory.
#[derive(Debug)]
pub struct StateDir {
    fd: OwnedFd,
    path: PathBuf,
}

/// Makes temporary file names unique within this process.
static TEMPORARY: AtomicU64 = AtomicU64::new(0);

/// Temporary files start with this; readers skip them.
const TEMPORARY_PREFIX: &str = ".tmp-";

impl StateDir {
    /// Opens `path` (created 0700 when missing, and its parent too): the parent by
    /// its path, `path`'s last component beneath it with openat2(2)
    /// `RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS`, then checked.
    pub fn open(path: &Path) -> Result<Self, StateDirError> {
        let open_err = |source| StateDirError::Open {
            path: path.to_owned(),
            source,
        };
        let (parent, name) = match (path.parent(), path.file_name()) {
            (Some(p), Some(n)) => (
                if p.as_os_str().is_empty() {
                    Path::new(".")
                } else {
                    p
                },
                n,
            ),
            _ => {
                return Err(open_err(std::io::Error::other(
                    "not a directory below another",
                )))
            }
        };
        use std::os::unix::fs::DirBuilderExt;
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(parent)
            .map_err(open_err)?;
        let parent_fd = rustix::fs::open(
            parent,
            OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC,
            Mode::empty(),
        )
        .map_err(|e| open_err(e.into()))?;
        Self::beneath(&parent_fd, Path::new(name), path, parent)
    }

    /// Opens (creating it 0700 when missing) the directory `name` in this one.
    pub fn subdir(&self, name: &str) -> Result<Self, StateDirError> {
        Self::beneath(&self.fd, Path::new(name), &self.path.join(name), &self.path)
    }

    fn beneath(
        parent_fd: &OwnedFd,
        name: &Path,
        path: &Path,
        parent: &Path,
    ) -> Result<Self, StateDirError> {
        let open_err = |source| StateDirError::Open {
            path: path.to_owned(),
            source,
        };
        match rustix::fs::mkdirat(parent_fd, name, Mode::from_raw_mode(0o700)) {
            Ok(()) | Err(Errno::EXIST) => {}
            Err(e) => return Err(open_err(e.into())),
        }
        let fd = rustix::fs::openat2(
            parent_fd,
            name,
            OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC | OFlags::NOFOLLOW,
            Mode::empty(),
            ResolveFlags::BENEATH | ResolveFlags::NO_SYMLINKS | ResolveFlags::NO_MAGICLINKS,
        )
        .map_err(|e| match e {
            Errno::LOOP | Errno::NOTDIR | Errno::XDEV => StateDirError::Symlink {
                path: path.to_owned(),
                parent: parent.to_owned(),
            },
            e => open_err(e.into()),
        })?;
        let stat = rustix::fs::fstat(&fd).map_err(|e| open_err(e.into()))?;
        let expected = nix::unistd::geteuid().as_raw();
        if stat.st_uid != expected {
            return Err(StateDirError::Owner {
                path: path.to_owned(),
                owner: stat.st_uid,
                expected,
            });
        }
        let mode = stat.st_mode & 0o7777;
        if mode & 0o022 != 0 {
            return Err(StateDirError::Writable {
                path: path.to_owned(),
                mode,
            });
        }
        Ok(StateDir {
            fd,
            path: path.to_owned(),
        })
    }

    /// The directory's path, for messages.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Replaces the file `name` with `bytes` (see the module doc), with `mode`.
    pub fn replace(&self, name: &str, bytes: &[u8], mode: u32) -> std::io::Result<()> {
        let n = TEMPORARY.fetch_add(1, Ordering::Relaxed);
        let tmp = format!("{TEMPORARY_PREFIX}{}-{n}-{name}", std::process::id());
        let fd = rustix::fs::openat(
            &self.fd,
            tmp.as_str(),
            OFlags::WRONLY | OFlags::CREATE | OFlags::EXCL | OFlags::NOFOLLOW | OFlags::CLOEXEC,
            Mode::from_raw_mode(mode),
        )?;
        let written = (|| -> std::io::Result<()> {
            rustix::fs::fchmod(&fd, Mode::from_raw_mode(mode))?;
            let mut file = std::fs::File::from(fd);
            file.write_all(bytes)?;
            file.sync_all()?;
            rustix::fs::renameat(&self.fd, tmp.as_str(), &self.fd, name)?;
            Ok(())
        })();
        if written.is_err() {
            let _ = rustix::fs::unlinkat(&self.fd, tmp.as_str(), rustix::fs::AtFlags::empty());
        }
        written?;
        self.sync()
    }

    /// Removes the file `name` durably; a file already gone is not an error.
    pub fn remove(&self, name: &str) -> std::io::Result<()> {
        self.unlink(name)?;
        self.sync()
    }

    /// Removes the file `name`, durably only once the directory is synced; a
    /// file already gone is not an error.
    pub fn unlink(&self, name: &str) -> std::io::Result<()> {
        match rustix::fs::unlinkat(&self.fd, name, rustix::fs::AtFlags::empty()) {
            Ok(()) | Err(Errno::NOENT) => Ok(()),
            Err(e) => Err(e.into()),
        }
    }

    /// Renames the file `from` to `to` (which must not exist), durably only once
    /// the directory is synced.
    pub fn rename(&self, from: &str, to: &str) -> std::io::Result<()> {
        Ok(rustix::fs::renameat_with(
            &self.fd,
            from,
            &self.fd,
            to,
            rustix::fs::RenameFlags::NOREPLACE,
        )?)
    }

    /// Makes the directory's entries durable.
    pub fn sync(&self) -> std::io::Result<()> {
        Ok(rustix::fs::fsync(&self.fd)?)
    }

    /// Every file here (temporary files left by a killed writer are removed), with
    /// its contents, in no particular order.
    pub fn files(&self) -> std::io::Result<Vec<(String, Vec<u8>)>> {
        self.read_many(&self.names()?)
    }

    /// The names of the files here, in no particular order, without reading them;
    /// temporary files a killed writer left are removed.
    pub fn names(&self) -> std::io::Result<Vec<String>> {
        let mut dir = rustix::fs::Dir::read_from(&self.fd)?;
        let mut names = Vec::new();
        while let Some(entry) = dir.read() {
            let entry = entry?;
            if entry.file_type() != rustix::fs::FileType::RegularFile {
                continue;
            }
            let Ok(name) = entry.file_name().to_str() else {
                continue;
            };
            if name.starts_with(TEMPORARY_PREFIX) {
                let _ = rustix::fs::unlinkat(&self.fd, name, rustix::fs::AtFlags::empty());
                continue;
            }
            names.push(name.to_owned());
        }
        Ok(names)
    }

    /// The files `names` with their contents (one gone meanwhile is left out).
    /// Read by a few threads at once: a start with thousands of files to read
    /// waits on little else.
    pub fn read_many(&self, names: &[String]) -> std::io::Result<Vec<(String, Vec<u8>)>> {
        let threads = std::thread::available_parallelism().map_or(1, |n| n.get().min(8));
        let chunk = names.len().div_ceil(threads).max(256);
        let read = |names: &[String]| -> std::io::Result<Vec<(String, Vec<u8>)>> {
            let mut files = Vec::with_capacity(names.len());
            for name in names {
                if let Some(bytes) = self.read(name)? {
                    files.push((name.clone(), bytes));
                }
            }
            Ok(files)
        };
        std::thread::scope(|scope| {
            let parts: Vec<_> = names
                .chunks(chunk)
                .map(|part| scope.spawn(move || read(part)))
                .collect();
            let mut files = Vec::with_capacity(names.len());
            for part in parts {
                files.extend(part.join().expect("a record reader panicked")?);
            }
            Ok(files)
        })
    }

    /// The same directory through a handle of its own, for another thread.
    pub fn try_clone(&self) -> std::io::Result<Self> {
        Ok(StateDir {
            fd: self.fd.try_clone()?,
            path: self.path.clone(),
        })
    }

    /// The contents of the file `name`, `None` when there is none.
    pub fn read(&self, name: &str) -> std::io::Result<Option<Vec<u8>>> {
        let fd = match rustix::fs::openat(
            &self.fd,
            name,
            OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
            Mode::empty(),
        ) {
            Ok(fd) => fd,
            Err(Errno::NOENT) => return Ok(None),
            Err(e) => return Err(e.into()),
        };
        // One read(2) takes a record whole; no stat(2) for a size hint.
        let mut file = std::fs::File::from(fd);
        let mut bytes = vec![0; 4096];
        let mut len = 0;
        loop {
            match file.read(&mut bytes[len..])? {
                0 => break,
                n if len + n < bytes.len() => {
                    len += n;
                    break;
                }
                n => {
                    len += n;
                    bytes.resize(bytes.len() * 2, 0);
                }
            }
        }
        bytes.truncate(len);
        Ok(Some(bytes))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn replaces_whole_files_and_lists_them() {
        let dir = tempfile::tempdir().unwrap();
        let state = StateDir::open(&dir.path().join("state")).unwrap();
        state
            .replace("status.json", b"first, and longer\n", 0o644)
            .unwrap();
        state.replace("status.json", b"second\n", 0o644).unwrap();
        state.replace("a", b"x", 0o600).unwrap();
        let path = dir.path().join("state/status.json");
        assert_eq!(std::fs::read(&path).unwrap(), b"second\n");
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o644);
        // A temporary file a killed writer left is not listed, and is removed.
        std::fs::write(dir.path().join("state/.tmp-1-2-a"), "half").unwrap();
        let mut files = state.files().unwrap();
        files.sort();
        assert_eq!(
            files,
            vec![
                ("a".into(), b"x".to_vec()),
                ("status.json".into(), b"second\n".to_vec())
            ]
        );
        assert_eq!(
            std::fs::read_dir(dir.path().join("state")).unwrap().count(),
            2
        );
        state.remove("a").unwrap();
        state.remove("a").unwrap();
        assert_eq!(state.files().unwrap().len(), 1);
    }

    #[test]
    fn refuses_a_symlink_and_a_writable_directory() {
        let dir = tempfile::tempdir().unwrap();
        let real = dir.path().join("real");
        std::fs::create_dir(&real).unwrap();
        std::os::unix::fs::symlink(&real, dir.path().join("state")).unwrap();
        let err = StateDir::open(&dir.path().join("state")).unwrap_err();
        assert!(matches!(err, StateDirError::Symlink { .. }), "{err}");
        assert!(err.to_string().contains("symbolic link"), "{err}");

        std::fs::set_permissions(&real, std::fs::Permissions::from_mode(0o777)).unwrap();
        let err = StateDir::open(&real).unwrap_err();
        assert!(
            matches!(err, StateDirError::Writable { mode: 0o777, .. }),
            "{err}"
        );
        assert!(err.to_string().contains("chmod go-w"), "{err}");
        std::fs::set_permissions(&real, std::fs::Permissions::from_mode(0o755)).unwrap();
        assert!(StateDir::open(&real).is_ok());
    }
}
