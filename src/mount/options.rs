//! Mount options, parsed once where a request enters: split on the commas that
//! separate options (never inside a double-quoted value, so `x-a="p,,q"` stays one
//! option, byte for byte), each marked sensitive or not. Everything else asks this
//! value: the flags and data for mount(2) or fsconfig, the `-o` argument of
//! mount(8), and the redacted display that logs, errors, records and status show.

use nix::mount::MsFlags;

use crate::api::wire::MountRequest;

/// What a secret is replaced with wherever options are shown.
pub const REDACTED: &str = "<redacted>";

/// Option keys whose values are secrets (compared case-insensitively).
const SENSITIVE_KEYS: &[&str] = &[
    "password",
    "passwd",
    "pass",
    "secret",
    "key",
    "token",
    "credentials",
    "auth",
];

/// Keys whose value is a secret when it holds a `%`: mount.cifs takes
/// `username=user%password`.
const USER_KEYS: &[&str] = &["username", "user"];

/// `MS_NOSYMFOLLOW` (Linux 5.10), which nix does not name.
const MS_NOSYMFOLLOW: MsFlags = MsFlags::from_bits_retain(256);

/// The VFS options mount(8) turns into mount(2) flags: name, flag, set (or clear).
pub const VFS_OPTIONS: &[(&str, MsFlags, bool)] = &[
    ("defaults", MsFlags::empty(), true),
    ("ro", MsFlags::MS_RDONLY, true),
    ("rw", MsFlags::MS_RDONLY, false),
    ("noexec", MsFlags::MS_NOEXEC, true),
    ("exec", MsFlags::MS_NOEXEC, false),
    ("nosuid", MsFlags::MS_NOSUID, true),
    ("suid", MsFlags::MS_NOSUID, false),
    ("nodev", MsFlags::MS_NODEV, true),
    ("dev", MsFlags::MS_NODEV, false),
    ("sync", MsFlags::MS_SYNCHRONOUS, true),
    ("async", MsFlags::MS_SYNCHRONOUS, false),
    ("dirsync", MsFlags::MS_DIRSYNC, true),
    ("silent", MsFlags::MS_SILENT, true),
    ("loud", MsFlags::MS_SILENT, false),
    ("mand", MsFlags::MS_MANDLOCK, true),
    ("nomand", MsFlags::MS_MANDLOCK, false),
    ("noatime", MsFlags::MS_NOATIME, true),
    ("atime", MsFlags::MS_NOATIME, false),
    ("nodiratime", MsFlags::MS_NODIRATIME, true),
    ("diratime", MsFlags::MS_NODIRATIME, false),
    ("relatime", MsFlags::MS_RELATIME, true),
    ("norelatime", MsFlags::MS_RELATIME, false),
    ("strictatime", MsFlags::MS_STRICTATIME, true),
    ("nostrictatime", MsFlags::MS_STRICTATIME, false),
    ("lazytime", MsFlags::MS_LAZYTIME, true),
    ("nolazytime", MsFlags::MS_LAZYTIME, false),
    ("iversion", MsFlags::MS_I_VERSION, true),
    ("noiversion", MsFlags::MS_I_VERSION, false),
    ("nosymfollow", MS_NOSYMFOLLOW, true),
    ("symfollow", MS_NOSYMFOLLOW, false),
];

/// Options that make mount(8) do more than one mount(2) of a new filesystem: binds,
/// moves, remounts and propagation changes, libmount's userspace options, and the
/// SELinux contexts it translates.
const UTIL_LINUX_OPTIONS: &[&str] = &[
    "bind",
    "rbind",
    "move",
    "remount",
    "shared",
    "rshared",
    "private",
    "rprivate",
    "slave",
    "rslave",
    "unbindable",
    "runbindable",
    "auto",
    "noauto",
    "user",
    "nouser",
    "users",
    "nousers",
    "owner",
    "noowner",
    "group",
    "nogroup",
    "nofail",
    "_netdev",
    "comment",
    "helper",
    "uhelper",
    "loop",
    "offset",
    "sizelimit",
    "encryption",
    "context",
    "fscontext",
    "defcontext",
    "rootcontext",
];

/// mount(8)'s option that makes the missing directories of the mount point,
/// spelt either way libmount takes it.
const MKDIR: [&str; 2] = ["X-mount.mkdir", "x-mount.mkdir"];

/// The mode of the directories `X-mount.mkdir` makes when none (or 0) is given.
const MKDIR_DEFAULT_MODE: u32 = 0o755;

/// An `X-mount.mkdir=MODE` whose mode is not octal, which mount(8) refuses.
#[derive(Debug, thiserror::Error)]
#[error("failed to parse mount options: '{0}': the mode must be octal")]
pub struct BadMkdirMode(pub String);

/// Splits an option string as libmount does: on commas outside double quotes,
/// dropping empty options; each option is returned byte for byte, quotes included.
pub fn split(list: &str) -> impl Iterator<Item = &str> {
    let mut rest = list;
    std::iter::from_fn(move || loop {
        if rest.is_empty() {
            return None;
        }
        let mut quoted = false;
        let end = rest
            .char_indices()
            .find(|&(_, c)| {
                if c == '"' {
                    quoted = !quoted;
                }
                c == ',' && !quoted
            })
            .map_or(rest.len(), |(i, _)| i);
        let option = &rest[..end];
        rest = rest.get(end + 1..).unwrap_or("");
        if !option.is_empty() {
            return Some(option);
        }
    })
}

/// Splits every string of `lists` (see [`split`]) into single options.
pub fn split_all<'a>(lists: impl IntoIterator<Item = &'a str>) -> Vec<String> {
    lists
        .into_iter()
        .flat_map(split)
        .map(str::to_owned)
        .collect()
}

/// One option as the caller wrote it, and whether it is a secret.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MountOption {
    text: String,
    sensitive: bool,
    /// Sensitive because of its key: the key may then be shown.
    keyed: bool,
}

impl MountOption {
    /// The option byte for byte: `ro`, `size=2m`, `x-a="p,,q"`.
    pub fn text(&self) -> &str {
        &self.text
    }

    /// What comes before the first `=`.
    pub fn name(&self) -> &str {
        self.text
            .split_once('=')
            .map_or(&self.text, |(name, _)| name)
    }

    /// What comes after the first `=`, if there is one.
    pub fn value(&self) -> Option<&str> {
        self.text.split_once('=').map(|(_, value)| value)
    }

    pub fn is_sensitive(&self) -> bool {
        self.sensitive
    }

    /// As it may be shown: a secret's value (or, with no value, all of it) becomes
    /// "<redacted>".
    pub fn shown(&self) -> String {
        match (self.sensitive, self.value()) {
            (false, _) => self.text.clone(),
            (true, Some(_)) if self.keyed => format!("{}={REDACTED}", self.name()),
            (true, _) => REDACTED.to_owned(),
        }
    }

    /// The strings that give this secret away, for scrubbing free text: the whole
    /// option when the caller marked it, its value, and a password after `%`.
    fn secrets(&self) -> impl Iterator<Item = &str> {
        let value = self.value();
        let password = value.and_then(|v| v.split_once('%')).map(|(_, p)| p);
        let whole = (!self.keyed).then_some(self.text.as_str());
        [whole, value, password]
            .into_iter()
            .flatten()
            .filter(|s| self.sensitive && !s.is_empty())
    }
}

/// Whether an option with `name` and `value` holds a secret by its key: a built-in
/// sensitive key, one of `extra` (configured), or `username=user%pass`.
fn sensitive_key(name: &str, value: Option<&str>, extra: &[String]) -> bool {
    let Some(value) = value else {
        return false;
    };
    SENSITIVE_KEYS
        .iter()
        .copied()
        .chain(extra.iter().map(String::as_str))
        .any(|k| k.eq_ignore_ascii_case(name))
        || (USER_KEYS.iter().any(|k| k.eq_ignore_ascii_case(name)) && value.contains('%'))
}

/// The options of one mount request, in the caller's order (its options, then its
/// sensitive options), each marked sensitive or not.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MountOptions {
    options: Vec<MountOption>,
}

/// What mount(2) or fsconfig takes for a set of options: the flags of the VFS
/// options, and the filesystem's own options in the order given.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KernelOptions<'a> {
    pub flags: MsFlags,
    pub data: Vec<&'a MountOption>,
}

impl KernelOptions<'_> {
    /// The data argument of mount(2): the filesystem's options, comma-separated.
    pub fn data(&self) -> String {
        let texts: Vec<&str> = self.data.iter().map(|o| o.text()).collect();
        texts.join(",")
    }
}

impl MountOptions {
    /// Parses `options` and the caller-marked `sensitive` ones; `keys` are option
    /// keys the configuration adds to the built-in sensitive ones. An option in
    /// `options` equal to a caller-marked one is a secret too.
    pub fn new(options: &[String], sensitive: &[String], keys: &[String]) -> Self {
        let marked = split_all(sensitive.iter().map(String::as_str));
        let option = |text: &str, by_caller: bool| {
            let (name, value) = text
                .split_once('=')
                .map_or((text, None), |(n, v)| (n, Some(v)));
            let keyed = sensitive_key(name, value, keys);
            MountOption {
                text: text.to_owned(),
                sensitive: keyed || by_caller || marked.iter().any(|m| m == text),
                keyed,
            }
        };
        let plain = options
            .iter()
            .flat_map(|o| split(o))
            .map(|t| option(t, false));
        let by_caller = marked.iter().map(|t| option(t, true));
        MountOptions {
            options: plain.chain(by_caller).collect(),
        }
    }

    /// The options of `req` (see [`MountOptions::new`]).
    pub fn of(req: &MountRequest, keys: &[String]) -> Self {
        Self::new(&req.options, &req.sensitive_options, keys)
    }

    pub fn iter(&self) -> impl Iterator<Item = &MountOption> {
        self.options.iter()
    }

    pub fn is_empty(&self) -> bool {
        self.options.is_empty()
    }

    /// Whether an option named `name` is present (with or without a value).
    pub fn has(&self, name: &str) -> bool {
        self.options.iter().any(|o| o.name() == name)
    }

    /// These options without any named in `names` (with or without a value).
    pub fn without(&self, names: &[&str]) -> MountOptions {
        MountOptions {
            options: self
                .options
                .iter()
                .filter(|o| !names.contains(&o.name()))
                .cloned()
                .collect(),
        }
    }

    /// The mode of the directories `X-mount.mkdir[=MODE]` makes, read as libmount
    /// reads it (octal, optionally in double quotes; none or 0 is 0755); `None`
    /// without the option.
    pub fn mkdir_mode(&self) -> Result<Option<u32>, BadMkdirMode> {
        let Some(option) = self.options.iter().find(|o| MKDIR.contains(&o.name())) else {
            return Ok(None);
        };
        let value = option.value().unwrap_or("");
        let digits = value
            .strip_prefix('"')
            .and_then(|v| v.strip_suffix('"'))
            .unwrap_or(value);
        let mode = match digits {
            "" => 0,
            _ => u32::from_str_radix(digits, 8)
                .ok()
                .filter(|mode| *mode <= 0o7777)
                .ok_or_else(|| BadMkdirMode(option.text().to_owned()))?,
        };
        Ok(Some(if mode == 0 { MKDIR_DEFAULT_MODE } else { mode }))
    }

    /// Whether the mount takes a path as its source: a bind or a move.
    pub fn binds(&self) -> bool {
        ["bind", "rbind", "move"].iter().any(|o| self.has(o))
    }

    /// The flags and data of the one mount(2) mount(8) would make, or `None` when it
    /// would do more (userspace, bind, propagation or SELinux options, a VFS option
    /// with a value such as `ro=recursive`).
    pub fn kernel(&self) -> Option<KernelOptions<'_>> {
        let mut flags = MsFlags::empty();
        let mut data = Vec::new();
        for option in &self.options {
            let name = option.name();
            // libmount turns `uid=nobody` into a number; the kernel takes numbers.
            let user_name = matches!(name, "uid" | "gid")
                && option
                    .value()
                    .is_some_and(|v| !v.bytes().all(|b| b.is_ascii_digit()));
            let userspace = UTIL_LINUX_OPTIONS.contains(&name)
                || name.starts_with("x-")
                || name.starts_with("X-")
                || name.starts_with("make-")
                || user_name;
            if userspace {
                return None;
            }
            match VFS_OPTIONS.iter().find(|(n, ..)| *n == name) {
                Some(_) if option.value().is_some() => return None,
                Some((_, flag, true)) => flags.insert(*flag),
                Some((_, flag, false)) => flags.remove(*flag),
                None => data.push(option),
            }
        }
        Some(KernelOptions { flags, data })
    }

    /// mount(8)'s `-o` argument: every option, secrets included (they must reach
    /// the mount), in the caller's order; `None` when there are none.
    pub fn argument(&self) -> Option<String> {
        (!self.is_empty()).then(|| {
            let texts: Vec<&str> = self.options.iter().map(|o| o.text()).collect();
            texts.join(",")
        })
    }

    /// Each option as it may be shown (see [`MountOption::shown`]).
    pub fn shown(&self) -> Vec<String> {
        self.options.iter().map(MountOption::shown).collect()
    }

    /// Removes every secret these options hold from free text (an executor's
    /// output, an error message), longest first so that no part of a longer secret
    /// survives a shorter one.
    pub fn scrub(&self, text: &str) -> String {
        let mut secrets: Vec<&str> = self.options.iter().flat_map(|o| o.secrets()).collect();
        secrets.sort_by_key(|s| std::cmp::Reverse(s.len()));
        secrets.iter().fold(text.to_owned(), |text, secret| {
            text.replace(secret, REDACTED)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn strings(list: &[&str]) -> Vec<String> {
        list.iter().map(|s| s.to_string()).collect()
    }

    fn options(plain: &[&str], sensitive: &[&str]) -> MountOptions {
        MountOptions::new(&strings(plain), &strings(sensitive), &[])
    }

    #[test]
    fn splits_on_commas_outside_quotes_only() {
        let got: Vec<&str> = split(r#"ro,,x-a="p,,q",size=1m,"#).collect();
        assert_eq!(got, vec!["ro", r#"x-a="p,,q""#, "size=1m"]);
        assert_eq!(split(",,").count(), 0);
        // An unclosed quote runs to the end, as libmount reads it.
        let got: Vec<&str> = split(r#"a="b,c,d"#).collect();
        assert_eq!(got, vec![r#"a="b,c,d"#]);
        let o = options(&[r#"x-a="p,,q",ro"#], &[]);
        assert_eq!(o.argument().unwrap(), r#"x-a="p,,q",ro"#);
        assert_eq!(o.iter().count(), 2);
    }

    #[test]
    fn marks_secrets_by_caller_key_configuration_and_cifs_user() {
        let keys = strings(&["pin"]);
        let o = MountOptions::new(
            &strings(&[
                "rw,password=hunter2",
                "Key=abc",
                "uid=1000",
                "domain=corp",
                "username=alice%s3cret",
                "user=bob",
                "PIN=4242",
            ]),
            &strings(&["domain=corp,size=2m", "ro"]),
            &keys,
        );
        let marks: Vec<(&str, bool)> = o.iter().map(|o| (o.text(), o.is_sensitive())).collect();
        assert_eq!(
            marks,
            vec![
                ("rw", false),
                ("password=hunter2", true),
                ("Key=abc", true),
                ("uid=1000", false),
                ("domain=corp", true),
                ("username=alice%s3cret", true),
                ("user=bob", false),
                ("PIN=4242", true),
                ("domain=corp", true),
                ("size=2m", true),
                ("ro", true),
            ]
        );
        assert_eq!(
            o.shown(),
            vec![
                "rw",
                "password=<redacted>",
                "Key=<redacted>",
                "uid=1000",
                "<redacted>",
                "username=<redacted>",
                "user=bob",
                "PIN=<redacted>",
                "<redacted>",
                "<redacted>",
                "<redacted>",
            ]
        );
        // Secrets reach the command line in the caller's order.
        assert_eq!(
            o.argument().unwrap(),
            "rw,password=hunter2,Key=abc,uid=1000,domain=corp,username=alice%s3cret,\
             user=bob,PIN=4242,domain=corp,size=2m,ro"
        );
    }

    #[test]
    fn scrubs_secrets_from_text() {
        let o = options(
            &[
                "rw,password=hunter2",
                "Key=abc",
                "uid=1000",
                "username=al%pw9",
            ],
            &["user=alice,pin=4242"],
        );
        assert_eq!(
            o.scrub("mount error: password=hunter2 failed"),
            "mount error: password=<redacted> failed"
        );
        let text = "opts user=alice,pin=4242 key abc, pin 4242 for alice; uid=1000 al%pw9 pw9";
        assert_eq!(
            o.scrub(text),
            "opts <redacted>,<redacted> key <redacted>, pin <redacted> for <redacted>; \
             uid=1000 <redacted> <redacted>"
        );
        // Empty values are not secrets to hunt for.
        let empty = options(&["password="], &[]);
        assert_eq!(empty.scrub("password= is empty"), "password= is empty");
    }

    #[test]
    fn kernel_flags_and_data_or_none() {
        let o = options(&["rw,nosuid,size=1m,mode=700"], &["ro,nr_inodes=9"]);
        let k = o.kernel().unwrap();
        assert_eq!(k.flags, MsFlags::MS_NOSUID | MsFlags::MS_RDONLY);
        assert_eq!(k.data(), "size=1m,mode=700,nr_inodes=9");
        for userspace in [
            "bind",
            "user",
            "users",
            "owner",
            "group",
            "nouser",
            "nousers",
            "noowner",
            "nogroup",
            "uid=nobody",
            "gid=nogroup",
            "auto",
            "noauto",
            "comment=x",
            "_netdev",
            "loop=/dev/loop7",
            "offset=512",
            "sizelimit=1m",
            "X-mount.mkdir",
            "x-k=1",
            r#"x-a="p,,q""#,
            "nofail",
            "ro=recursive",
            "make-shared",
        ] {
            assert_eq!(options(&[userspace], &[]).kernel(), None, "{userspace}");
        }
        assert_eq!(
            options(&["defaults"], &[]).kernel().unwrap().flags,
            MsFlags::empty()
        );
        let numbers = options(&["uid=1000,gid=0"], &[]);
        assert_eq!(numbers.kernel().unwrap().data(), "uid=1000,gid=0");
        assert!(options(&["ro,rbind"], &[]).binds());
        assert!(options(&[], &["move"]).binds());
        assert!(!options(&["binding=x"], &[]).binds());
        assert_eq!(options(&[], &[]).argument(), None);
    }

    #[test]
    fn mkdir_mode_is_octal_as_libmount_reads_it() {
        let mode = |list: &str| options(&[list], &[]).mkdir_mode().ok();
        assert_eq!(mode("ro"), Some(None));
        assert_eq!(mode("X-mount.mkdir"), Some(Some(0o755)));
        assert_eq!(mode("x-mount.mkdir=0700"), Some(Some(0o700)));
        assert_eq!(mode(r#"X-mount.mkdir="750""#), Some(Some(0o750)));
        assert_eq!(mode("X-mount.mkdir=0"), Some(Some(0o755)));
        assert_eq!(mode("X-mount.mkdir=1777"), Some(Some(0o1777)));
        for bad in ["999", "0o700", "rwx", "70000", "-1"] {
            let list = format!("X-mount.mkdir={bad}");
            let err = options(&[&list], &[]).mkdir_mode().unwrap_err();
            assert_eq!(err.0, list);
        }
    }
}
