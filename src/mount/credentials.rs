//! Secrets that reach a mount helper through its own channel rather than its
//! command line, where `/proc/PID/cmdline` would show them to every process:
//! mount.cifs reads `username`, `password` and `domain` from a credentials file,
//! which the executor writes 0600 on its private staging tmpfs for the time of the
//! mount; sshfs with `password_stdin` reads the password from its standard input,
//! which the executor feeds with the `password=` option's value.

use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use super::options::MountOptions;

/// The types whose helper (mount.cifs) takes `credentials=FILE`.
const CREDENTIAL_FILE_TYPES: &[&str] = &["cifs", "smb3"];

/// The options mount.cifs reads from a credentials file, and the name it reads
/// them by there.
const FILE_KEYS: &[(&str, &str)] = &[
    ("username", "username"),
    ("user", "username"),
    ("password", "password"),
    ("pass", "password"),
    ("domain", "domain"),
    ("dom", "domain"),
    ("workgroup", "domain"),
];

/// A credentials file, removed when dropped.
#[derive(Debug)]
pub struct CredentialsFile {
    pub path: PathBuf,
}

impl Drop for CredentialsFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

/// For a type whose helper takes a credentials file: the options without the ones
/// that go into the file, and the file's lines; `None` when there are none
/// (another type, or no credentials among the options). `username=user%pass`
/// gives both lines, as mount.cifs reads it.
pub fn split_out(fstype: &str, options: &[&str]) -> Option<(Vec<String>, String)> {
    if !CREDENTIAL_FILE_TYPES.contains(&fstype) {
        return None;
    }
    let mut kept = Vec::new();
    let mut lines = String::new();
    for option in options {
        let file_key = option.split_once('=').and_then(|(key, value)| {
            let (_, name) = FILE_KEYS
                .iter()
                .find(|(k, _)| k.eq_ignore_ascii_case(key))?;
            Some((*name, value))
        });
        match file_key {
            Some(("username", value)) if value.contains('%') => {
                let (user, pass) = value.split_once('%').expect("contains %");
                lines.push_str(&format!("username={user}\npassword={pass}\n"));
            }
            Some((name, value)) => lines.push_str(&format!("{name}={value}\n")),
            None => kept.push(option.to_string()),
        }
    }
    (!lines.is_empty()).then_some((kept, lines))
}

/// The types whose tool (sshfs) reads a password on its standard input when
/// given `password_stdin`.
const STDIN_TYPES: &[&str] = &["fuse.sshfs", "sshfs"];

/// The option that asks sshfs to read the password on its standard input.
const PASSWORD_STDIN: &str = "password_stdin";

/// For a type whose tool reads its password on stdin, asked to with
/// `password_stdin`: the options without `password=` (or `pass=`), and what the
/// tool's stdin gets (the password and a newline); `None` otherwise, when the
/// options stay as they are.
pub fn split_stdin(fstype: &str, options: &[&str]) -> Option<(Vec<String>, String)> {
    if !STDIN_TYPES.contains(&fstype) || !options.contains(&PASSWORD_STDIN) {
        return None;
    }
    let mut kept = Vec::new();
    let mut password = None;
    for option in options {
        match option.split_once('=') {
            Some((key, value))
                if key.eq_ignore_ascii_case("password") || key.eq_ignore_ascii_case("pass") =>
            {
                password = Some(value)
            }
            _ => kept.push(option.to_string()),
        }
    }
    Some((kept, format!("{}\n", password?)))
}

/// `options` as the tool's command line gets them, and what its stdin gets (see
/// [`split_stdin`]).
pub fn with_stdin(fstype: &str, options: &MountOptions) -> (MountOptions, Option<String>) {
    let pieces: Vec<&str> = options.iter().map(|o| o.text()).collect();
    match split_stdin(fstype, &pieces) {
        Some((kept, input)) => (MountOptions::new(&kept, &[], &[]), Some(input)),
        None => (options.clone(), None),
    }
}

/// Writes `lines` to a new file of mode 0600 at `path` (which must not exist).
pub fn write(path: &Path, lines: &str) -> std::io::Result<CredentialsFile> {
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)?;
    let written = CredentialsFile {
        path: path.to_owned(),
    };
    file.write_all(lines.as_bytes())?;
    file.sync_all()?;
    Ok(written)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn cifs_secrets_move_to_the_file_and_the_rest_stays() {
        let options = [
            "vers=3.0",
            "username=alice%s3cret",
            "domain=CORP",
            "uid=1000",
        ];
        let (kept, lines) = split_out("cifs", &options).unwrap();
        assert_eq!(kept, vec!["vers=3.0", "uid=1000"]);
        assert_eq!(lines, "username=alice\npassword=s3cret\ndomain=CORP\n");
        let (kept, lines) = split_out("smb3", &["user=bob", "Password=x,y", "ro"]).unwrap();
        assert_eq!(
            (kept, lines.as_str()),
            (vec!["ro".to_string()], "username=bob\npassword=x,y\n")
        );
        assert_eq!(split_out("cifs", &["ro", "guest"]), None);
        assert_eq!(split_out("nfs", &["password=x"]), None);
    }

    #[test]
    fn an_sshfs_password_moves_to_stdin_only_when_asked() {
        let options = ["port=22", "password_stdin", "password=s3cr,et", "ro"];
        let (kept, stdin) = split_stdin("fuse.sshfs", &options).unwrap();
        assert_eq!(kept, vec!["port=22", "password_stdin", "ro"]);
        assert_eq!(stdin, "s3cr,et\n");
        assert_eq!(split_stdin("sshfs", &["password_stdin"]), None);
        assert_eq!(split_stdin("fuse.sshfs", &["password=x"]), None);
        assert_eq!(split_stdin("nfs", &["password_stdin", "password=x"]), None);
    }

    #[test]
    fn the_file_is_0600_and_goes_away() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("cred");
        let file = write(&path, "password=x\n").unwrap();
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "password=x\n");
        assert!(
            write(&path, "again").is_err(),
            "never over an existing file"
        );
        drop(file);
        assert!(!path.exists());
    }
}
