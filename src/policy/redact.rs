//! Which option values are secrets, and how they are kept out of anything shown:
//! options as listed in records and status, and free text such as an executor's
//! output.

use crate::api::wire::MountRequest;

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
/// What a secret is replaced with.
const REDACTED: &str = "<redacted>";

/// The request's options, then one "<redacted>" per sensitive option, with secrets
/// replaced: an option equal to a sensitive one becomes "<redacted>", and within
/// each comma-separated piece `KEY=value` whose key is sensitive (case-insensitive)
/// the value becomes "<redacted>".
pub fn redacted_options(req: &MountRequest) -> Vec<String> {
    let plain = req.options.iter().map(|o| {
        if req.sensitive_options.contains(o) {
            REDACTED.to_owned()
        } else {
            o.split(',')
                .map(|piece| match secret(piece) {
                    Some((key, _)) => format!("{key}={REDACTED}"),
                    None => piece.to_owned(),
                })
                .collect::<Vec<_>>()
                .join(",")
        }
    });
    let sensitive = req.sensitive_options.iter().map(|_| REDACTED.to_owned());
    plain.chain(sensitive).collect()
}

/// Removes every secret value (values of sensitive-key options, and each whole
/// caller-marked sensitive option and its value parts) from free text, e.g. an
/// executor's output or an error message, replacing it with "<redacted>". Empty
/// values are not replaced.
pub fn scrub(req: &MountRequest, text: &str) -> String {
    let keyed = req
        .options
        .iter()
        .chain(&req.sensitive_options)
        .flat_map(|o| o.split(','))
        .filter_map(|piece| secret(piece).map(|(_, value)| value));
    let marked = req.sensitive_options.iter().flat_map(|o| {
        let values = o.split(',').filter_map(|piece| piece.split_once('='));
        std::iter::once(o.as_str()).chain(values.map(|(_, value)| value))
    });
    let mut secrets: Vec<&str> = keyed.chain(marked).filter(|s| !s.is_empty()).collect();
    // Longest first, so that no part of a longer secret survives a shorter one.
    secrets.sort_by_key(|s| std::cmp::Reverse(s.len()));
    secrets.iter().fold(text.to_owned(), |text, secret| {
        text.replace(secret, REDACTED)
    })
}

/// Key and value of one option piece `KEY=value` whose key is sensitive.
fn secret(piece: &str) -> Option<(&str, &str)> {
    let (key, value) = piece.split_once('=')?;
    SENSITIVE_KEYS
        .iter()
        .any(|k| k.eq_ignore_ascii_case(key))
        .then_some((key, value))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn secret_request() -> MountRequest {
        MountRequest {
            source: "//server/share".into(),
            target: "/k/pods/x".into(),
            fstype: "cifs".into(),
            options: vec![
                "rw,password=hunter2".into(),
                "Key=abc".into(),
                "uid=1000".into(),
                "domain=corp".into(),
            ],
            sensitive_options: vec!["user=alice,pin=4242".into()],
            caller_pid: None,
            timeout_seconds: None,
        }
    }

    #[test]
    fn redacts_sensitive_options() {
        let mut req = secret_request();
        // An option the caller marked sensitive is hidden whole, wherever it appears.
        req.options.push("domain=corp".into());
        req.sensitive_options.push("domain=corp".into());
        assert_eq!(
            redacted_options(&req),
            vec![
                "rw,password=<redacted>",
                "Key=<redacted>",
                "uid=1000",
                "<redacted>",
                "<redacted>",
                "<redacted>",
                "<redacted>",
            ]
        );
    }

    #[test]
    fn scrubs_secrets_from_text() {
        let req = secret_request();
        assert_eq!(
            scrub(&req, "mount error: password=hunter2 failed"),
            "mount error: password=<redacted> failed"
        );
        let text = "opts user=alice,pin=4242 key abc, pin 4242 for alice; uid=1000 domain=corp";
        assert_eq!(
            scrub(&req, text),
            "opts <redacted> key <redacted>, pin <redacted> for <redacted>; uid=1000 domain=corp"
        );
        // Empty values are not secrets to hunt for.
        let mut empty = secret_request();
        empty.options = vec!["password=".into()];
        empty.sensitive_options.clear();
        assert_eq!(scrub(&empty, "password= is empty"), "password= is empty");
    }
}
