//! What the /portal endpoint needs beyond a session: the Origin check that
//! stops cross-site WebSocket hijacking, and the embedded demo page.
//!
//! Must not authenticate; it only looks at headers and serves a constant.

use crate::http::{Answer, Head};

/// The demo User Portal page, embedded in the binary (no outside assets).
const DEMO_PAGE: &str = include_str!("../assets/portal.html");

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
        headers: vec![(
            "Content-Security-Policy",
            "default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'".to_owned(),
        )],
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
