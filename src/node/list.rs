//! `sidemount list`: a findmnt-like view of one namespace's mounts, with the peer
//! groups findmnt leaves out.

use std::os::unix::ffi::OsStrExt;
use std::path::Path;

use serde::Serialize;

use crate::ns::mountinfo::{escape, Mount, MountTable};

/// One row, with findmnt's column names; `propagation` uses findmnt's words.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Row {
    pub id: u32,
    pub parent: u32,
    pub target: String,
    /// `source[root]` when a subdirectory is mounted, as findmnt prints it.
    pub source: String,
    pub fstype: String,
    pub propagation: String,
    pub root: String,
    pub peer_group: Option<u32>,
    pub master: Option<u32>,
    pub propagate_from: Option<u32>,
    pub unbindable: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Listing {
    pub filesystems: Vec<Row>,
}

impl Row {
    pub fn new(m: &Mount) -> Self {
        let text = |p: &Path| String::from_utf8_lossy(p.as_os_str().as_bytes()).into_owned();
        let mut source = String::from_utf8_lossy(m.source.as_bytes()).into_owned();
        if m.root != Path::new("/") {
            source = format!("{source}[{}]", text(&m.root));
        }
        Row {
            id: m.id,
            parent: m.parent,
            target: text(&m.target),
            source,
            fstype: m.fstype.clone(),
            propagation: m.propagation.to_string(),
            root: text(&m.root),
            peer_group: m.propagation.shared,
            master: m.propagation.master,
            propagate_from: m.propagation.propagate_from,
            unbindable: m.propagation.unbindable,
        }
    }

    /// Peer groups in full: `shared:7,master:3`, `private`, `master:3,unbindable`.
    fn groups(&self) -> String {
        let mut words: Vec<String> = [("shared", self.peer_group), ("master", self.master)]
            .iter()
            .filter_map(|(tag, group)| group.map(|g| format!("{tag}:{g}")))
            .collect();
        if words.is_empty() {
            words.push("private".into());
        }
        if self.unbindable {
            words.push("unbindable".into());
        }
        words.join(",")
    }
}

/// The mounts of `table`, all or only those at or below `target`.
pub fn listing(table: &MountTable, target: Option<&Path>) -> Listing {
    let filesystems = table
        .mounts
        .iter()
        .filter(|m| target.is_none_or(|t| m.target.starts_with(t)))
        .map(Row::new)
        .collect();
    Listing { filesystems }
}

/// Aligned columns; targets and sources escaped as in mountinfo so that each mount
/// stays on one line.
pub fn table_text(listing: &Listing) -> String {
    let header = ["ID", "PARENT", "TARGET", "SOURCE", "FSTYPE", "PROPAGATION"].map(String::from);
    let rows: Vec<[String; 6]> = listing
        .filesystems
        .iter()
        .map(|r| {
            [
                r.id.to_string(),
                r.parent.to_string(),
                escape(Path::new(&r.target)),
                escape(Path::new(&r.source)),
                r.fstype.clone(),
                r.groups(),
            ]
        })
        .collect();
    let mut widths = header.clone().map(|h| h.len());
    for row in &rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    std::iter::once(&header)
        .chain(&rows)
        .map(|cells| {
            let line: Vec<String> = cells
                .iter()
                .zip(widths)
                // Padded by hand: a format width stops at 65,535.
                .map(|(c, w)| format!("{c}{}", " ".repeat(w - c.chars().count())))
                .collect();
            line.join(" ").trim_end().to_string() + "\n"
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rows_follow_findmnt_words() {
        let t = MountTable::parse(
            b"27 1 254:0 / / rw shared:1 - ext4 /dev/vda rw\n\
              32 27 254:0 /srv\\040x /mnt/a\\040b rw master:1 unbindable - ext4 /dev/vda rw\n",
        )
        .unwrap();
        let l = listing(&t, None);
        assert_eq!(l.filesystems[1].source, "/dev/vda[/srv x]");
        assert_eq!(l.filesystems[1].target, "/mnt/a b");
        assert_eq!(l.filesystems[1].propagation, "private,slave,unbindable");
        let text = table_text(&l);
        assert!(text.contains("/mnt/a\\040b"), "{text}");
        assert!(text.contains("master:1,unbindable"), "{text}");
        assert_eq!(listing(&t, Some(Path::new("/mnt"))).filesystems.len(), 1);
    }

    #[test]
    fn fields_of_any_length_are_listed() {
        let long = "a".repeat(70_000);
        let text = format!(
            "27 1 254:0 / /{long} rw - ext4 /dev/{long} rw\n28 27 0:5 / /b rw - tmpfs t rw\n"
        );
        let l = listing(&MountTable::parse(text.as_bytes()).unwrap(), None);
        let lines: Vec<String> = table_text(&l).lines().map(str::to_owned).collect();
        assert_eq!(lines.len(), 3);
        assert!(lines[1].contains(&format!("/{long} /dev/{long} ext4")));
        // Columns stay aligned past the long ones.
        let at = |line: &str| line.find("tmpfs").or(line.find("ext4"));
        assert_eq!(at(&lines[1]), at(&lines[2]));
    }
}
