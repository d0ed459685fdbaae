//! The mountinfo line format, both ways: one line parsed into a [`Mount`] with its
//! octal escapes decoded, and a path escaped as the kernel writes it.

use std::ffi::OsString;
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::path::{Path, PathBuf};

use super::{Mount, Propagation};

/// `36 35 98:0 /mnt1 /mnt2 rw,noatime master:1 - ext3 /dev/root rw,errors=continue`
pub(super) fn parse_line(line: &[u8]) -> Result<Mount, String> {
    let mut fields = line.split(|&b| b == b' ');
    let mut next = |name: &str| {
        fields
            .next()
            .filter(|f| !f.is_empty())
            .ok_or_else(|| format!("missing {name}"))
    };
    let id = number(next("mount id")?, "mount id")?;
    let parent = number(next("parent id")?, "parent id")?;
    let devno = next("major:minor")?;
    let (major, minor) = split_once(devno, b':')
        .ok_or_else(|| format!("major:minor {:?} has no ':'", lossy(devno)))?;
    let major = number(major, "major")?;
    let minor = number(minor, "minor")?;
    let root = PathBuf::from(OsString::from_vec(unescape(next("root")?)?));
    let target = PathBuf::from(OsString::from_vec(unescape(next("mount point")?)?));
    let options = text(next("mount options")?, "mount options")?;
    let mut propagation = Propagation::default();
    loop {
        let field = next("separator '-'")?;
        if field == b"-" {
            break;
        }
        apply_optional(&mut propagation, field)?;
    }
    let fstype = text(&unescape(next("filesystem type")?)?, "filesystem type")?;
    let source = OsString::from_vec(unescape(next("mount source")?)?);
    let super_options = text(next("super options")?, "super options")?;
    Ok(Mount {
        id,
        parent,
        major,
        minor,
        root,
        target,
        options,
        propagation,
        fstype,
        source,
        super_options,
    })
}

fn apply_optional(p: &mut Propagation, field: &[u8]) -> Result<(), String> {
    let (tag, value) = split_once(field, b':').unwrap_or((field, b""));
    let group = || number(value, &format!("{} peer group", lossy(tag)));
    match tag {
        b"shared" => p.shared = Some(group()?),
        b"master" => p.master = Some(group()?),
        b"propagate_from" => p.propagate_from = Some(group()?),
        b"unbindable" => p.unbindable = true,
        // Later kernels may add tags; an unknown one is not an error (proc(5)).
        _ => {}
    }
    Ok(())
}

/// Decodes the kernel's octal escapes (`\040` space, `\011` tab, `\012` newline,
/// `\134` backslash, and any other `\ooo`).
pub fn unescape(field: &[u8]) -> Result<Vec<u8>, String> {
    let mut out = Vec::with_capacity(field.len());
    let mut i = 0;
    while i < field.len() {
        if field[i] == b'\\' {
            let digits = field
                .get(i + 1..i + 4)
                .filter(|d| d.iter().all(|b| (b'0'..=b'7').contains(b)))
                .ok_or_else(|| {
                    format!(
                        "bad escape at byte {i} of {:?}: want a backslash and three octal digits",
                        lossy(field)
                    )
                })?;
            let value = digits
                .iter()
                .fold(0u32, |acc, d| acc * 8 + u32::from(d - b'0'));
            out.push(
                u8::try_from(value)
                    .map_err(|_| format!("escape \\{} is over 255", lossy(digits)))?,
            );
            i += 4;
        } else {
            out.push(field[i]);
            i += 1;
        }
    }
    Ok(out)
}

fn split_once(s: &[u8], sep: u8) -> Option<(&[u8], &[u8])> {
    let at = s.iter().position(|&b| b == sep)?;
    Some((&s[..at], &s[at + 1..]))
}

fn number(s: &[u8], what: &str) -> Result<u32, String> {
    std::str::from_utf8(s)
        .ok()
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| format!("{what} {:?} is not a number", lossy(s)))
}

fn text(s: &[u8], what: &str) -> Result<String, String> {
    String::from_utf8(s.to_vec()).map_err(|_| format!("{what} {:?} is not UTF-8", lossy(s)))
}

fn lossy(s: &[u8]) -> std::borrow::Cow<'_, str> {
    String::from_utf8_lossy(s)
}

/// Encodes a path the way the kernel writes it into mountinfo (for fixtures and
/// for messages that must stay on one line).
pub fn escape(path: &Path) -> String {
    let mut out = Vec::new();
    for &b in path.as_os_str().as_bytes() {
        match b {
            b' ' | b'\t' | b'\n' | b'\\' => out.extend(format!("\\{b:03o}").bytes()),
            _ => out.push(b),
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escape_round_trips() {
        let p = Path::new("/a b\tc\nd\\e/é");
        let escaped = escape(p);
        assert!(!escaped.contains([' ', '\t', '\n']));
        assert_eq!(
            unescape(escaped.as_bytes()).unwrap(),
            p.as_os_str().as_bytes()
        );
    }
}
