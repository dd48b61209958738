//! The pages' files, compiled into the binary: plain HTML, CSS and
//! JavaScript modules, no build step. Each static asset has a strong `ETag`
//! (a SHA-256 of its bytes), so a browser revalidates it with one 304.

use std::sync::OnceLock;

use http::header::HeaderValue;
use sha2::{Digest, Sha256};

/// A file served as it is.
pub struct Asset {
    pub name: &'static str,
    pub bytes: &'static [u8],
    pub content_type: &'static str,
}

impl Asset {
    /// `"<the first 128 bits of the SHA-256 of the bytes, in hex>"`: strong,
    /// it changes with any byte.
    pub fn etag(&self) -> HeaderValue {
        let hash = Sha256::digest(self.bytes);
        let hex: String = hash[..16].iter().map(|b| format!("{b:02x}")).collect();
        HeaderValue::from_str(&format!("\"{hex}\"")).unwrap_or(HeaderValue::from_static("\"0\""))
    }
}

const HTML: &str = "text/html; charset=utf-8";
const CSS: &str = "text/css; charset=utf-8";
const JS: &str = "text/javascript; charset=utf-8";
const SVG: &str = "image/svg+xml";

/// The user's tokens (`{path}/`).
pub static TOKENS_PAGE: Asset = Asset {
    name: "tokens.html",
    bytes: include_bytes!("assets/tokens.html"),
    content_type: HTML,
};

/// The admin console (`{path}/admin`).
pub static ADMIN_PAGE: Asset = Asset {
    name: "admin.html",
    bytes: include_bytes!("assets/admin.html"),
    content_type: HTML,
};

/// What a non-administrator sees at `{path}/admin` (with a 403).
pub static FORBIDDEN_PAGE: Asset = Asset {
    name: "forbidden.html",
    bytes: include_bytes!("assets/forbidden.html"),
    content_type: HTML,
};

/// Under `{path}/assets/`.
pub static STATIC: [Asset; 5] = [
    Asset {
        name: "tokengate.css",
        bytes: include_bytes!("assets/tokengate.css"),
        content_type: CSS,
    },
    Asset {
        name: "common.js",
        bytes: include_bytes!("assets/common.js"),
        content_type: JS,
    },
    Asset {
        name: "tokens.js",
        bytes: include_bytes!("assets/tokens.js"),
        content_type: JS,
    },
    Asset {
        name: "admin.js",
        bytes: include_bytes!("assets/admin.js"),
        content_type: JS,
    },
    Asset {
        name: "icon.svg",
        bytes: include_bytes!("assets/icon.svg"),
        content_type: SVG,
    },
];

/// The static asset called `name`, with its `ETag` (worked out once).
pub fn find(name: &str) -> Option<(&'static Asset, &'static HeaderValue)> {
    static ETAGS: OnceLock<Vec<HeaderValue>> = OnceLock::new();
    let etags = ETAGS.get_or_init(|| STATIC.iter().map(Asset::etag).collect());
    let i = STATIC.iter().position(|a| a.name == name)?;
    Some((&STATIC[i], etags.get(i)?))
}

/// Does `If-None-Match` name `etag` (or `*`)? Compared weakly, as RFC 9110
/// §13.1.2 says this header is.
pub fn none_match(if_none_match: &HeaderValue, etag: &HeaderValue) -> bool {
    let Ok(list) = if_none_match.to_str() else {
        return false;
    };
    let ours = etag.as_bytes();
    let ours = ours.strip_prefix(b"W/").unwrap_or(ours);
    list.split(',')
        .map(str::trim)
        .any(|tag| tag == "*" || tag.strip_prefix("W/").unwrap_or(tag).as_bytes() == ours)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_file_a_page_names_is_served() {
        for page in [&TOKENS_PAGE, &ADMIN_PAGE, &FORBIDDEN_PAGE] {
            let text = std::str::from_utf8(page.bytes).unwrap();
            for (at, _) in text.match_indices("assets/") {
                let name: String = text[at + 7..]
                    .chars()
                    .take_while(|c| c.is_ascii_alphanumeric() || *c == '.' || *c == '-')
                    .collect();
                assert!(find(&name).is_some(), "{} names {name}", page.name);
            }
        }
        // Modules import each other by relative name.
        for asset in &STATIC {
            let text = std::str::from_utf8(asset.bytes).unwrap();
            for (at, _) in text.match_indices("from \"./") {
                let name: String = text[at + 8..].chars().take_while(|c| *c != '"').collect();
                assert!(find(&name).is_some(), "{} imports {name}", asset.name);
            }
        }
    }

    #[test]
    fn no_inline_script_or_style_and_nothing_from_elsewhere() {
        for asset in [&TOKENS_PAGE, &ADMIN_PAGE, &FORBIDDEN_PAGE]
            .into_iter()
            .chain(STATIC.iter())
        {
            let text = std::str::from_utf8(asset.bytes).unwrap();
            assert!(
                !text.contains("http://") && !text.contains("https://")
                    || asset.name.ends_with(".svg"),
                "{} names another origin",
                asset.name
            );
            if asset.content_type == HTML {
                for (at, _) in text.match_indices("<script") {
                    let tag: String = text[at..].chars().take_while(|c| *c != '>').collect();
                    assert!(tag.contains(" src="), "{}: inline script {tag}", asset.name);
                }
                assert!(!text.contains("<style"), "{}: inline style", asset.name);
                assert!(!text.contains(" style="), "{}: style attribute", asset.name);
                let handler = text.match_indices(" on").any(|(at, _)| {
                    let rest = &text[at + 3..];
                    let n = rest.chars().take_while(char::is_ascii_lowercase).count();
                    n > 0 && rest[n..].starts_with('=')
                });
                assert!(!handler, "{}: an inline event handler", asset.name);
            }
            if asset.content_type == JS {
                assert!(!text.contains("innerHTML"), "{}: innerHTML", asset.name);
                for storage in ["localStorage", "sessionStorage", "document.cookie"] {
                    assert!(!text.contains(storage), "{}: {storage}", asset.name);
                }
            }
        }
    }

    #[test]
    fn etags_are_strong_hashes_of_the_bytes() {
        let (asset, etag) = find("tokengate.css").unwrap();
        assert_eq!(etag, &asset.etag());
        let text = etag.to_str().unwrap();
        assert!(
            text.starts_with('"') && text.ends_with('"') && text.len() == 34,
            "{text}"
        );
        assert_ne!(find("common.js").unwrap().1, etag);
        assert!(find("../tokens.html").is_none() && find("tokens.html").is_none());
    }

    #[test]
    fn if_none_match_is_compared_weakly() {
        let etag = HeaderValue::from_static("\"abc\"");
        let m = |v: &'static str| none_match(&HeaderValue::from_static(v), &etag);
        assert!(m("\"abc\""));
        assert!(m("W/\"abc\""));
        assert!(m("\"x\", \"abc\""));
        assert!(m("*"));
        assert!(!m("\"abd\""));
        assert!(!m("abc"));
    }

    #[test]
    fn the_pages_weigh_less_than_100_kb() {
        let total: usize = [&TOKENS_PAGE, &ADMIN_PAGE]
            .iter()
            .map(|p| p.bytes.len())
            .chain(STATIC.iter().map(|a| a.bytes.len()))
            .sum();
        assert!(total < 100_000, "{total} bytes");
    }
}
