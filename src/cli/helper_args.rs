//! Parses the argument vectors util-linux mount(8)/umount(8) give external helpers,
//! so the binary can stand in as `mount.TYPE` / `umount.TYPE`.

use std::path::PathBuf;

use crate::api::wire::{MountRequest, UnmountRequest};
use crate::mount::options::split_all;

/// What a helper invocation asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Invocation {
    Mount {
        request: MountRequest,
        /// `-f`: do nothing, succeed.
        fake: bool,
        verbose: bool,
    },
    Unmount {
        request: UnmountRequest,
        verbose: bool,
    },
}

#[derive(Debug, thiserror::Error)]
pub enum ArgsError {
    #[error("{program}: missing {what}")]
    Missing { program: String, what: &'static str },
    #[error("{program}: unexpected argument '{arg}'")]
    Unexpected { program: String, arg: String },
    #[error("unknown option {0}")]
    UnknownOption(String),
    #[error("-{0} wants a value")]
    MissingValue(char),
    #[error("-N wants a pid or /proc/<pid>/ns/mnt, got '{0}'")]
    BadNamespace(String),
}

/// `program` is the basename of argv[0]: "mount.nfs", "mount.fuse.sshfs",
/// "umount.nfs". Returns None when it is neither mount.* nor umount.*.
pub fn parse_helper(program: &str, args: &[String]) -> Option<Result<Invocation, ArgsError>> {
    let helper_type = |prefix| {
        program
            .strip_prefix(prefix)
            .filter(|t: &&str| !t.is_empty())
    };
    if let Some(fstype) = helper_type("mount.") {
        Some(parse_mount(program, fstype, args))
    } else if helper_type("umount.").is_some() {
        Some(parse_umount(program, args))
    } else {
        None
    }
}

/// `mount.TYPE spec dir [-sfnv] [-N namespace] [-o options] [-t type.subtype]`
fn parse_mount(program: &str, fstype: &str, args: &[String]) -> Result<Invocation, ArgsError> {
    let mut request = MountRequest {
        fstype: fstype.to_owned(),
        ..MountRequest::default()
    };
    let (mut fake, mut verbose) = (false, false);
    let mut options = Vec::new();
    let mut positional = Vec::new();
    for arg in getopt(args, "sfnv", "Not")? {
        match arg {
            Arg::Flag('f') => fake = true,
            Arg::Flag('v') => verbose = true,
            Arg::Value('N', ns) => request.caller_pid = Some(namespace_pid(&ns)?),
            Arg::Value('o', opts) => options.push(opts),
            Arg::Value('t', fstype) => request.fstype = fstype,
            // -s sloppy, -n no mtab.
            Arg::Flag(_) | Arg::Value(..) => {}
            Arg::Positional(p) => positional.push(p),
        }
    }
    request.options = split_all(options.iter().map(String::as_str));
    let [source, target] = positionals(program, positional, ["source", "mount point"])?;
    request.source = source;
    request.target = PathBuf::from(target);
    Ok(Invocation::Mount {
        request,
        fake,
        verbose,
    })
}

/// `umount.TYPE dir [-flnrv] [-N namespace] [-t type]`
fn parse_umount(program: &str, args: &[String]) -> Result<Invocation, ArgsError> {
    let mut request = UnmountRequest::default();
    let mut verbose = false;
    let mut positional = Vec::new();
    for arg in getopt(args, "flnrv", "Nt")? {
        match arg {
            Arg::Flag('f') => request.force = true,
            Arg::Flag('l') => request.lazy = true,
            Arg::Flag('v') => verbose = true,
            Arg::Value('N', ns) => request.caller_pid = Some(namespace_pid(&ns)?),
            // -n no mtab, -r remount read-only on failure (unsupported), -t type.
            Arg::Flag(_) | Arg::Value(..) => {}
            Arg::Positional(p) => positional.push(p),
        }
    }
    let [target] = positionals(program, positional, ["mount point"])?;
    request.target = PathBuf::from(target);
    Ok(Invocation::Unmount { request, verbose })
}

/// One element of an argument vector, as getopt(3) sees it.
#[derive(Debug, PartialEq, Eq)]
enum Arg {
    Flag(char),
    Value(char, String),
    Positional(String),
}

/// getopt(3) with short options only: `flags` take no value, `valued` take one
/// (`-ofoo` or `-o foo`); flags combine (`-fv`); options may come anywhere, and
/// `--` ends them.
fn getopt(args: &[String], flags: &str, valued: &str) -> Result<Vec<Arg>, ArgsError> {
    let mut out = Vec::new();
    let mut rest = args.iter();
    while let Some(arg) = rest.next() {
        if arg == "--" {
            out.extend(rest.map(|a| Arg::Positional(a.clone())));
            break;
        }
        let Some(cluster) = arg.strip_prefix('-').filter(|c| !c.is_empty()) else {
            out.push(Arg::Positional(arg.clone()));
            continue;
        };
        if cluster.starts_with('-') {
            return Err(ArgsError::UnknownOption(arg.clone()));
        }
        for (i, c) in cluster.char_indices() {
            if valued.contains(c) {
                let attached = &cluster[i + c.len_utf8()..];
                let value = if attached.is_empty() {
                    rest.next().ok_or(ArgsError::MissingValue(c))?.clone()
                } else {
                    attached.to_owned()
                };
                out.push(Arg::Value(c, value));
                break;
            }
            if !flags.contains(c) {
                return Err(ArgsError::UnknownOption(format!("-{c}")));
            }
            out.push(Arg::Flag(c));
        }
    }
    Ok(out)
}

/// Exactly `N` positional arguments, named by `what` when one is missing.
fn positionals<const N: usize>(
    program: &str,
    positional: Vec<String>,
    what: [&'static str; N],
) -> Result<[String; N], ArgsError> {
    if let Some(extra) = positional.get(N) {
        return Err(ArgsError::Unexpected {
            program: program.to_owned(),
            arg: extra.clone(),
        });
    }
    positional
        .try_into()
        .map_err(|given: Vec<String>| ArgsError::Missing {
            program: program.to_owned(),
            what: what[given.len()],
        })
}

/// `-N`'s argument: `123` or `/proc/123/ns/mnt`.
fn namespace_pid(ns: &str) -> Result<u32, ArgsError> {
    let pid = ns
        .strip_prefix("/proc/")
        .and_then(|p| p.strip_suffix("/ns/mnt"))
        .unwrap_or(ns);
    pid.parse()
        .ok()
        .filter(|&pid| pid > 0)
        .ok_or_else(|| ArgsError::BadNamespace(ns.to_owned()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(line: &str) -> Vec<String> {
        line.split_whitespace().map(str::to_owned).collect()
    }

    fn mount(program: &str, line: &str) -> (MountRequest, bool, bool) {
        match parse_helper(program, &args(line)).unwrap().unwrap() {
            Invocation::Mount {
                request,
                fake,
                verbose,
            } => (request, fake, verbose),
            other => panic!("{line}: got {other:?}"),
        }
    }

    fn umount(line: &str) -> (UnmountRequest, bool) {
        match parse_helper("umount.nfs", &args(line)).unwrap().unwrap() {
            Invocation::Unmount { request, verbose } => (request, verbose),
            other => panic!("{line}: got {other:?}"),
        }
    }

    fn error(program: &str, line: &str) -> String {
        parse_helper(program, &args(line))
            .unwrap()
            .unwrap_err()
            .to_string()
    }

    fn opts(list: &[&str]) -> Vec<String> {
        list.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn plain_mount_takes_type_from_program_name() {
        let (r, fake, verbose) = mount("mount.nfs", "srv:/export /mnt/x");
        assert_eq!(
            r,
            MountRequest {
                source: "srv:/export".into(),
                target: PathBuf::from("/mnt/x"),
                fstype: "nfs".into(),
                ..MountRequest::default()
            }
        );
        assert!(!fake && !verbose);
        let (r, ..) = mount("mount.fuse.sshfs", "me@host:/ /mnt/s");
        assert_eq!(r.fstype, "fuse.sshfs");
    }

    #[test]
    fn every_mount_flag_alone() {
        let base = "srv:/e /mnt";
        let (_, fake, verbose) = mount("mount.nfs", &format!("{base} -f"));
        assert_eq!((fake, verbose), (true, false));
        let (_, fake, verbose) = mount("mount.nfs", &format!("{base} -v"));
        assert_eq!((fake, verbose), (false, true));
        for quiet in ["-s", "-n"] {
            let (r, fake, verbose) = mount("mount.nfs", &format!("{base} {quiet}"));
            assert_eq!((r.source.as_str(), fake, verbose), ("srv:/e", false, false));
        }
        let (r, ..) = mount("mount.nfs", &format!("{base} -o ro,vers=4"));
        assert_eq!(r.options, opts(&["ro", "vers=4"]));
        let (r, ..) = mount("mount.nfs", &format!("{base} -oro"));
        assert_eq!(r.options, opts(&["ro"]));
        let (r, ..) = mount("mount.nfs", &format!("{base} -N 42"));
        assert_eq!(r.caller_pid, Some(42));
        let (r, ..) = mount("mount.nfs", &format!("{base} -t nfs4"));
        assert_eq!(r.fstype, "nfs4");
    }

    #[test]
    fn combined_flags_and_a_trailing_value() {
        let (r, fake, verbose) = mount("mount.nfs", "a /b -sfnv");
        assert_eq!((r.target, fake, verbose), (PathBuf::from("/b"), true, true));
        let (r, fake, verbose) = mount("mount.nfs", "a /b -vo rw");
        assert_eq!((r.options, fake, verbose), (opts(&["rw"]), false, true));
        let (r, fake, ..) = mount("mount.nfs", "a /b -fN7");
        assert_eq!((r.caller_pid, fake), (Some(7), true));
    }

    #[test]
    fn repeated_o_appends_and_drops_empty_pieces() {
        let (r, ..) = mount("mount.nfs", "a /b -o ro,,hard, -o timeo=5 -o ,");
        assert_eq!(r.options, opts(&["ro", "hard", "timeo=5"]));
        assert_eq!(split_all(["a,b", "", ",c,"]), opts(&["a", "b", "c"]));
        // A quoted value keeps its commas, byte for byte.
        let argv: Vec<String> = ["a", "/b", "-o", r#"x-a="p,,q",ro"#]
            .map(String::from)
            .to_vec();
        let Some(Ok(Invocation::Mount { request, .. })) = parse_helper("mount.nfs", &argv) else {
            panic!("not a mount");
        };
        assert_eq!(request.options, opts(&[r#"x-a="p,,q""#, "ro"]));
    }

    #[test]
    fn options_may_come_anywhere() {
        let (r, _, verbose) = mount("mount.nfs", "-v -o ro a -t nfs4 /b");
        assert_eq!(
            (r.source.as_str(), r.target, r.options, r.fstype, verbose),
            ("a", PathBuf::from("/b"), opts(&["ro"]), "nfs4".into(), true)
        );
        let (r, ..) = mount("mount.nfs", "-f -- -weird /b");
        assert_eq!(r.source, "-weird");
    }

    #[test]
    fn namespace_as_pid_or_proc_path() {
        let (r, ..) = mount("mount.nfs", "a /b -N /proc/123/ns/mnt");
        assert_eq!(r.caller_pid, Some(123));
        for bad in ["foo", "0", "/proc/self/ns/mnt", "/proc/12/ns/net"] {
            assert_eq!(
                error("mount.nfs", &format!("a /b -N {bad}")),
                format!("-N wants a pid or /proc/<pid>/ns/mnt, got '{bad}'")
            );
        }
    }

    #[test]
    fn t_overrides_the_program_type_with_a_subtype() {
        let (r, ..) = mount("mount.fuse", "sshfs#me@h:/ /m -t fuse.sshfs");
        assert_eq!(r.fstype, "fuse.sshfs");
    }

    #[test]
    fn positional_count_is_exact() {
        assert_eq!(error("mount.nfs", ""), "mount.nfs: missing source");
        assert_eq!(error("mount.nfs", "a -v"), "mount.nfs: missing mount point");
        assert_eq!(
            error("mount.nfs", "a /b c"),
            "mount.nfs: unexpected argument 'c'"
        );
        assert_eq!(error("umount.nfs", "-l"), "umount.nfs: missing mount point");
        assert_eq!(
            error("umount.nfs", "/a /b"),
            "umount.nfs: unexpected argument '/b'"
        );
    }

    #[test]
    fn unknown_options_and_missing_values() {
        assert_eq!(error("mount.nfs", "a /b -x"), "unknown option -x");
        assert_eq!(error("mount.nfs", "a /b -fx"), "unknown option -x");
        assert_eq!(error("mount.nfs", "a /b --bind"), "unknown option --bind");
        assert_eq!(error("mount.nfs", "a /b -l"), "unknown option -l");
        assert_eq!(error("umount.nfs", "/a -o ro"), "unknown option -o");
        assert_eq!(error("mount.nfs", "a /b -o"), "-o wants a value");
        assert_eq!(error("umount.nfs", "/a -N"), "-N wants a value");
    }

    #[test]
    fn non_helper_names_are_none() {
        for program in [
            "sidemount",
            "mount",
            "umount",
            "mount.",
            "umount.",
            "xmount.nfs",
        ] {
            assert!(parse_helper(program, &args("a /b")).is_none(), "{program}");
        }
    }

    #[test]
    fn umount_flags() {
        let (r, verbose) = umount("/mnt/x");
        assert_eq!(
            (r, verbose),
            (
                UnmountRequest {
                    target: PathBuf::from("/mnt/x"),
                    ..UnmountRequest::default()
                },
                false
            )
        );
        let (r, _) = umount("/m -f");
        assert!(r.force && !r.lazy);
        let (r, _) = umount("/m -l");
        assert!(r.lazy && !r.force);
        let (r, verbose) = umount("/m -flnrv -t nfs4 -N /proc/9/ns/mnt");
        assert_eq!(
            (r.force, r.lazy, verbose, r.caller_pid, r.target),
            (true, true, true, Some(9), PathBuf::from("/m"))
        );
        let (r, verbose) = umount("-n -r /m");
        assert_eq!((r.force, r.lazy, verbose), (false, false, false));
        assert_eq!(r.target, PathBuf::from("/m"));
    }
}
