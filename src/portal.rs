//! What the /portal endpoint needs beyond a session: the Origin check that
//! stops cross-site WebSocket hijacking, and the embedded demo page with its
//! Content-Security-Policy.
//!
//! Must not authenticate; it only looks at headers and serves a constant.

use std::sync::LazyLock;

use base64::Engine;
use sha2::{Digest, Sha256};

use crate::http::{Answer, Head};

/// The demo User Portal page, embedded in the binary (no outside assets).
const DEMO_PAGE: &str = include_str!("../assets/portal.html");

/// The page's one inline `<script>` and one `<style>` are allowed by their
/// SHA-256 (CSP hash sources), never by 'unsafe-inline', so an injected
/// script or style attribute would not run. Computed from the embedded page,
/// so an edit to the page cannot leave the header stale. `img-src data:` is
/// for the empty `data:` favicon, which keeps the browser from asking for
/// /favicon.ico.
static CSP: LazyLock<String> = LazyLock::new(|| {
    format!(
        "default-src 'none'; script-src {}; style-src {}; img-src data:; connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'",
        inline_hash(DEMO_PAGE, "script"),
        inline_hash(DEMO_PAGE, "style")
    )
});

/// `'sha256-…'` of the text of the first `<tag>` element, or `'none'`.
fn inline_hash(page: &str, tag: &str) -> String {
    let open = format!("<{tag}>");
    let close = format!("</{tag}>");
    let text = page
        .split_once(&open)
        .and_then(|(_, rest)| rest.split_once(&close))
        .map(|(text, _)| text);
    match text {
        Some(text) => {
            let digest = Sha256::digest(text.as_bytes());
            format!(
                "'sha256-{}'",
                base64::engine::general_purpose::STANDARD.encode(digest)
            )
        }
        None => "'none'".to_owned(),
    }
}

/// A browser's upgrade is allowed from a listed origin or, with
/// `same_origin`, from this gateway's own origin (the demo page); a client
/// without Origin is not a browser and is allowed. /portal and /adjunct
/// both ask here, each with its own list.
pub fn origin_allowed(allowed: &[String], same_origin: bool, head: &Head) -> bool {
    let Some(origin) = head.origin.as_deref() else {
        return true;
    };
    let own = same_origin
        && head
            .host
            .as_deref()
            .is_some_and(|host| origin.strip_prefix("https://") == Some(host));
    own || allowed.iter().any(|o| o == origin)
}

pub fn demo_page() -> Answer {
    Answer {
        status: 200,
        reason: "OK",
        headers: vec![("Content-Security-Policy", CSP.clone())],
        content_type: "text/html; charset=utf-8",
        body: DEMO_PAGE.as_bytes().to_vec(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::PortalSection;

    fn head(origin: Option<&str>, host: &str) -> Head {
        Head {
            origin: origin.map(str::to_owned),
            host: Some(host.to_owned()),
            ..Head::default()
        }
    }

    #[test]
    fn the_csp_allows_exactly_the_pages_inline_script_and_style_by_hash() {
        assert_eq!(DEMO_PAGE.matches("<script").count(), 1);
        assert_eq!(DEMO_PAGE.matches("<style").count(), 1);
        assert!(
            !DEMO_PAGE.contains(" style="),
            "style attributes need 'unsafe-inline'"
        );
        assert!(!CSP.contains("unsafe-inline"), "{}", *CSP);
        assert_eq!(CSP.matches("'sha256-").count(), 2, "{}", *CSP);
        assert_eq!(inline_hash("<p>", "script"), "'none'");
        // The hash of "alert(1)" as CSP computes it.
        assert_eq!(
            inline_hash("<script>alert(1)</script>", "script"),
            "'sha256-bhHHL3z2vDgxUt0W3dWQOrprscmda2Y5pLsLg4GF+pI='"
        );
    }

    #[test]
    fn origin_rules() {
        let p = PortalSection {
            allowed_origins: vec!["https://portal.example.com".into()],
            demo_page: true,
        };
        let allowed = |h: &Head| origin_allowed(&p.allowed_origins, true, h);
        assert!(allowed(&head(None, "gw:8443")));
        assert!(allowed(&head(
            Some("https://portal.example.com"),
            "gw:8443"
        )));
        assert!(allowed(&head(Some("https://gw:8443"), "gw:8443")));
        assert!(!allowed(&head(Some("https://evil.example"), "gw:8443")));
        assert!(!allowed(&head(Some("http://gw:8443"), "gw:8443")));
        // Without same_origin (/adjunct) only listed origins pass.
        assert!(!origin_allowed(
            &[],
            false,
            &head(Some("https://gw:8443"), "gw:8443")
        ));
        assert!(origin_allowed(&[], false, &head(None, "gw:8443")));
    }
}
