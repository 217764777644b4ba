//! Small helpers shared by several modules: private files, the clock,
//! peers' strings cut short, and reports that must not flood the log.

use std::io::Write;
use std::path::Path;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// Writes `bytes` to a new file readable by the owner only (0600 on Unix).
pub fn write_private(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        opts.mode(0o600);
    }
    let mut f = opts.open(path)?;
    // `mode` applies only to new files: tighten an existing one too.
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        f.set_permissions(std::fs::Permissions::from_mode(0o600))?;
    }
    f.write_all(bytes)?;
    f.sync_all()
}

/// Lower-case hex of `bytes`.
pub fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write as _;
    bytes
        .iter()
        .fold(String::with_capacity(bytes.len() * 2), |mut s, b| {
            let _ = write!(s, "{b:02x}");
            s
        })
}

/// Seconds since the Unix epoch.
pub fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// The first `n` characters of `s`, borrowed: what of a peer's string goes
/// into a log line or an error.
pub fn prefix_chars(s: &str, n: usize) -> &str {
    match s.char_indices().nth(n) {
        Some((end, _)) => s.get(..end).unwrap_or(s),
        None => s,
    }
}

/// At most once per period: for a report a peer or a failing resource
/// could otherwise repeat as fast as it happens.
pub struct Every {
    period: Duration,
    last: Option<Instant>,
}

impl Every {
    pub const fn new(period: Duration) -> Every {
        Every { period, last: None }
    }

    /// True, and the period starts again, if the last `true` was at least
    /// a period ago (or never).
    pub fn due(&mut self) -> bool {
        let now = Instant::now();
        if self
            .last
            .is_some_and(|t| now.duration_since(t) < self.period)
        {
            return false;
        }
        self.last = Some(now);
        true
    }
}

/// Appends `s` as a JSON string literal, escaped exactly as serde_json
/// escapes it. Names and methods rarely need an escape: they are copied
/// as they are, without serde's temporary string.
pub fn push_json_str(out: &mut String, s: &str) {
    if s.bytes().any(|b| b == b'"' || b == b'\\' || b < 0x20) {
        out.push_str(&serde_json::to_string(s).unwrap_or_else(|_| "\"\"".into()));
        return;
    }
    out.reserve(s.len() + 2);
    out.push('"');
    out.push_str(s);
    out.push('"');
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_prefix_is_cut_on_a_character_boundary() {
        assert_eq!(prefix_chars("ab", 5), "ab");
        assert_eq!(prefix_chars("äöü", 2), "äö");
        assert_eq!(prefix_chars("", 0), "");
    }

    #[test]
    fn a_report_is_due_once_per_period() {
        let mut every = Every::new(Duration::from_secs(3600));
        assert!(every.due());
        assert!(!every.due());
        let mut always = Every::new(Duration::ZERO);
        assert!(always.due() && always.due());
    }

    #[test]
    fn json_strings_are_escaped_as_serde_escapes_them() {
        for s in [
            "",
            "cti.make_call",
            "Adjunct Server Connection",
            "quote\"d",
            "back\\slash",
            "tab\tnew\nline\u{1}",
            "\u{7f} and ünïcode",
        ] {
            let mut out = String::from("x");
            push_json_str(&mut out, s);
            assert_eq!(out, format!("x{}", serde_json::to_string(s).unwrap()));
        }
    }
}
