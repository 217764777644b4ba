//! Which parts of the config text are node-local and which are shared by
//! the cluster, and how a node's whole config is put back together.
//!
//! Node-local: `[server]`, `[tls]`, `[admin]`, `[audit]`, `[cluster]`.
//! Everything else is shared. Works on the text (comments kept); must not
//! validate: `Config::parse` judges the composed text.

use toml_edit::DocumentMut;

/// The sections that stay in each node's file.
pub const LOCAL: [&str; 5] = ["server", "tls", "admin", "audit", "cluster"];

/// Splits `text` into (node-local, shared) TOML texts.
pub fn split(text: &str) -> Result<(String, String), String> {
    let doc: DocumentMut = text
        .parse()
        .map_err(|e: toml_edit::TomlError| e.message().to_owned())?;
    let mut local = doc.clone();
    let mut shared = doc;
    let keys: Vec<String> = shared
        .as_table()
        .iter()
        .map(|(k, _)| k.to_owned())
        .collect();
    for k in keys {
        if LOCAL.contains(&k.as_str()) {
            shared.remove(&k);
        } else {
            local.remove(&k);
        }
    }
    Ok((local.to_string(), shared.to_string()))
}

/// A node's whole config text: its file's local sections, then the shared ones.
pub fn compose(local: &str, shared: &str) -> String {
    let mut out = String::with_capacity(local.len() + shared.len() + 2);
    out.push_str(local.trim_end());
    out.push_str("\n\n");
    out.push_str(shared.trim_start());
    out
}

/// Whether two shared texts say the same (whitespace and comments aside).
pub fn same(a: &str, b: &str) -> bool {
    match (a.parse::<toml::Table>(), b.parse::<toml::Table>()) {
        (Ok(a), Ok(b)) => a == b,
        _ => a == b,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_local_from_shared_and_composes_back() {
        let text = "# the node\n[server]\nlisten = \"127.0.0.1:1\"\n\n# users\n[[service_user]]\nname = \"a\"\n\n[tls]\ncert = \"c\"\nkey = \"k\"\n\n[limits]\nmax_batch = 3\n";
        let (local, shared) = split(text).unwrap();
        assert!(local.contains("[server]") && local.contains("[tls]"));
        assert!(!local.contains("service_user") && !local.contains("[limits]"));
        assert!(shared.contains("# users") && shared.contains("[limits]"));
        assert!(!shared.contains("[server]"));
        let back = compose(&local, &shared);
        assert!(same(&back, text));
    }
}
