//! What a notice says: which token (description, id, expiry), and how to
//! make a new one. Never a secret: a notice is built from the stored record,
//! which holds only hashes.

use jiff::Timestamp;

use crate::store::TokenRecord;

/// The management API's path on the gateway.
const TOKENS_PATH: &str = "/rest/de.resolution.apitokenauth/latest/user/token";

/// Where to send the owner to make a new token.
pub struct Addresses {
    /// `server.public_url`, without a trailing `/`.
    pub public_url: Option<String>,
    /// The token pages, when the gateway serves them.
    pub page_url: Option<String>,
}

impl Addresses {
    fn api(&self) -> String {
        match &self.public_url {
            Some(base) => format!("{base}{TOKENS_PATH}"),
            None => format!("{TOKENS_PATH} on the gateway"),
        }
    }

    /// The lines that say how to make a new token.
    fn how_to_renew(&self, r: &TokenRecord) -> String {
        let api = self.api();
        let mut out = String::new();
        if let Some(page) = &self.page_url {
            out.push_str(&format!("Make a new one on the token page: {page}\n"));
        }
        out.push_str(&format!(
            "Make a new one with the token management API:\n  POST {api}\n  body {{\"tokenDescription\": \"...\"}}, signed in with your password or a token\n\
             or give this one a new secret (same id, description and expiry):\n  POST {api}/{}/rotate\n",
            r.id
        ));
        out
    }
}

fn date(ms: u64) -> String {
    i64::try_from(ms)
        .ok()
        .and_then(|ms| Timestamp::from_millisecond(ms).ok())
        .map(|t| t.strftime("%Y-%m-%d %H:%M UTC").to_string())
        .unwrap_or_else(|| format!("{ms} ms after 1970"))
}

/// Subject and text of a notice that `r` expires in about `days` days.
pub fn expiry(r: &TokenRecord, days: u32, now_ms: u64, at: &Addresses) -> (String, String) {
    let left_ms = r.valid_until.saturating_sub(now_ms);
    let left = match left_ms / 86_400_000 {
        0 => format!("in {} hours", (left_ms / 3_600_000).max(1)),
        1 => "in 1 day".to_string(),
        n => format!("in {n} days"),
    };
    let subject = format!(
        "Your API token \"{}\" expires {left}",
        one_line(&r.description)
    );
    let text = format!(
        "Your API token \"{}\" (id {}) expires on {} ({left}; this is the {days}-day notice).\n\
         After that, requests with it are refused.\n\n{}\n\
         This message never contains a token.\n",
        one_line(&r.description),
        r.id,
        date(r.valid_until),
        at.how_to_renew(r),
    );
    (subject, text)
}

/// Subject and text of a notice that `r` was created.
pub fn created(r: &TokenRecord, at: &Addresses) -> (String, String) {
    let subject = format!(
        "An API token \"{}\" was created for your account",
        one_line(&r.description)
    );
    let expires = if r.valid_until == 0 {
        "It never expires.".to_string()
    } else {
        format!("It expires on {}.", date(r.valid_until))
    };
    let by = if r.created_by == r.user_key {
        String::new()
    } else {
        format!(" by the administrator {}", r.created_by)
    };
    let text = format!(
        "An API token \"{}\" (id {}) was created for your account {} on {}{by}. {expires}\n\n\
         If you did not expect it, revoke it:\n  DELETE {}/{}\n\
         and tell your administrator.\n\n\
         This message never contains a token.\n",
        one_line(&r.description),
        r.id,
        r.user_name,
        date(r.created),
        at.api(),
        r.id,
    );
    (subject, text)
}

/// The description on one line (it has no control characters, but keep it so).
fn one_line(s: &str) -> String {
    s.chars().filter(|c| !c.is_control()).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::{AllowedIps, Scope};
    use crate::token::TokenHash;

    #[test]
    fn a_notice_names_the_token_and_the_way_to_a_new_one() {
        let r = TokenRecord {
            id: 42,
            hash: TokenHash::of("tg_secret"),
            description: "CI deploy".into(),
            user_key: "JIRAUSER10100".into(),
            user_name: "alice".into(),
            created_by: "JIRAUSER10100".into(),
            created: 1_796_000_000_000,
            valid_until: 1_796_000_000_000 + 14 * 86_400_000,
            last_accessed: 0,
            scope: Scope::ReadWrite,
            allowed_ips: AllowedIps::default(),
            last_accessed_from: None,
            previous: None,
        };
        let at = Addresses {
            public_url: Some("https://gw.example.com".into()),
            page_url: None,
        };
        let (subject, text) = expiry(&r, 14, 1_796_000_000_000, &at);
        assert_eq!(subject, "Your API token \"CI deploy\" expires in 14 days");
        assert!(
            text.contains("(id 42) expires on 2026-12-14 00:53 UTC"),
            "{text}"
        );
        assert!(
            text.contains(
                "https://gw.example.com/rest/de.resolution.apitokenauth/latest/user/token/42/rotate"
            ),
            "{text}"
        );
        let (_, text) = created(&r, &at);
        assert!(text.contains("for your account alice"), "{text}");
        assert!(!text.contains("tg_secret"));
    }
}
