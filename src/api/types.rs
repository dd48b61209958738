//! What the management API reads and writes: request bodies and query
//! strings, validated, and the JSON shapes of its answers.

use std::collections::BTreeMap;

use percent_encoding::{NON_ALPHANUMERIC, percent_decode_str, utf8_percent_encode};
use serde::Serialize;
use serde_json::{Map, Value};

use crate::error::ErrorReply;
use crate::store::{AllowedIps, Filter, MAX_ALLOWED_IPS, Scope, TokenRecord};

use super::body;
use super::validity::{self, Requested};

/// The most tokens one `tokensByFilter` page holds.
pub(super) const MAX_PAGE_LIMIT: u64 = 50;

/// A token as `GET /user/token` lists it.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct Listed {
    pub(super) created: u64,
    pub(super) description: String,
    pub(super) id: u64,
    pub(super) last_accessed: u64,
    /// The client address of that use; null before the first.
    pub(super) last_accessed_from: Option<String>,
    pub(super) valid_until: u64,
    pub(super) token_scope: u8,
    pub(super) allowed_ips: Vec<String>,
}

impl From<TokenRecord> for Listed {
    fn from(r: TokenRecord) -> Listed {
        Listed {
            created: r.created,
            description: r.description,
            id: r.id,
            last_accessed: r.last_accessed,
            last_accessed_from: r.last_accessed_from.map(|ip| ip.to_string()),
            valid_until: r.valid_until,
            token_scope: r.scope.code(),
            allowed_ips: r.allowed_ips.to_strings(),
        }
    }
}

/// A token as `tokensByFilter` shows it.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct Filtered {
    pub(super) created: u64,
    pub(super) description: String,
    pub(super) id: u64,
    pub(super) last_accessed: u64,
    pub(super) last_accessed_from: Option<String>,
    pub(super) token_created_by_user_key: String,
    pub(super) token_for_user_key: String,
    pub(super) valid_until: u64,
    pub(super) token_scope: u8,
    pub(super) allowed_ips: Vec<String>,
}

impl From<TokenRecord> for Filtered {
    fn from(r: TokenRecord) -> Filtered {
        Filtered {
            created: r.created,
            description: r.description,
            id: r.id,
            last_accessed: r.last_accessed,
            last_accessed_from: r.last_accessed_from.map(|ip| ip.to_string()),
            token_created_by_user_key: r.created_by,
            token_for_user_key: r.user_key,
            valid_until: r.valid_until,
            token_scope: r.scope.code(),
            allowed_ips: r.allowed_ips.to_strings(),
        }
    }
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct Created {
    pub(super) id: u64,
    pub(super) plain_text_token: String,
    pub(super) token_description: String,
    pub(super) token_expiration_date_time: Option<String>,
    pub(super) token_expiration_date_time_millis: u64,
    pub(super) token_scope: u8,
    pub(super) token_for_user_key: String,
    pub(super) allowed_ips: Vec<String>,
}

impl Created {
    /// The answer of a create or a rotation: the token with its plain secret.
    pub(super) fn of(r: TokenRecord, plain_text_token: String) -> Created {
        Created {
            id: r.id,
            plain_text_token,
            token_description: r.description,
            token_expiration_date_time: (r.valid_until != 0)
                .then(|| validity::format_ms(r.valid_until))
                .flatten(),
            token_expiration_date_time_millis: r.valid_until,
            token_scope: r.scope.code(),
            token_for_user_key: r.user_key,
            allowed_ips: r.allowed_ips.to_strings(),
        }
    }
}

/// What a create request asked for, validated.
pub(super) struct CreateRequest {
    pub(super) description: String,
    pub(super) requested: Requested,
    pub(super) scope: Option<Scope>,
    pub(super) for_user_key: Option<String>,
    pub(super) allowed_ips: AllowedIps,
}

pub(super) fn parse_create(obj: &Map<String, Value>) -> Result<CreateRequest, ErrorReply> {
    let mut errors = BTreeMap::new();
    body::unknown_fields(
        obj,
        &[
            "tokenDescription",
            "tokenValidityTimeInMonths",
            "tokenExpirationDateTime",
            "tokenScope",
            "tokenForUserKey",
            "allowedIps",
        ],
        &mut errors,
    );
    let description = body::description(obj, &mut errors);
    let months = body::optional_int(obj, "tokenValidityTimeInMonths", 1, 1200, &mut errors);
    let until = match obj.get("tokenExpirationDateTime") {
        None => None,
        Some(Value::String(s)) => match validity::parse_expiry(s) {
            Some(ms) => Some(ms),
            None => {
                errors.insert(
                    "tokenExpirationDateTime".into(),
                    "must be an ISO 8601 date-time such as 2027-01-31T12:00:00Z, or a date such as 2027-01-31".into(),
                );
                None
            }
        },
        Some(_) => {
            errors.insert("tokenExpirationDateTime".into(), "must be a string".into());
            None
        }
    };
    let scope = body::optional_int(obj, "tokenScope", 1, 2, &mut errors)
        .and_then(|c| Scope::from_code(c as i64));
    let for_user_key = match obj.get("tokenForUserKey") {
        None => None,
        Some(Value::String(s)) if !s.trim().is_empty() && s.len() <= 255 => Some(s.clone()),
        Some(_) => {
            errors.insert(
                "tokenForUserKey".into(),
                "must be a non-empty user key".into(),
            );
            None
        }
    };
    let allowed_ips = allowed_ips(obj, &mut errors);
    if months.is_some() && until.is_some() {
        errors.insert(
            "tokenExpirationDateTime".into(),
            "give either tokenValidityTimeInMonths or tokenExpirationDateTime, not both".into(),
        );
    }
    if !errors.is_empty() {
        return Err(ErrorReply::fields(errors));
    }
    let requested = match (months, until) {
        (Some(m), _) => Requested::Months(m as u32),
        (None, Some(u)) => Requested::Until(u),
        (None, None) => Requested::Default,
    };
    Ok(CreateRequest {
        description: description.unwrap_or_default(),
        requested,
        scope,
        for_user_key,
        allowed_ips: allowed_ips.unwrap_or_default(),
    })
}

/// `allowedIps`: optional, an array of at most 32 IP addresses or CIDRs.
/// An entry that is neither is named by its position, and quoted back only
/// when it reads like an address (a secret pasted in the wrong place is never
/// echoed).
fn allowed_ips(
    obj: &Map<String, Value>,
    errors: &mut BTreeMap<String, String>,
) -> Option<AllowedIps> {
    const FIELD: &str = "allowedIps";
    let entries = match obj.get(FIELD) {
        None | Some(Value::Null) => return Some(AllowedIps::default()),
        Some(Value::Array(entries)) => entries,
        Some(_) => {
            errors.insert(
                FIELD.into(),
                "must be an array of IP addresses or CIDRs, such as [\"192.0.2.0/24\", \"2001:db8::/32\"]".into(),
            );
            return None;
        }
    };
    if entries.len() > MAX_ALLOWED_IPS {
        errors.insert(
            FIELD.into(),
            format!(
                "must hold at most {MAX_ALLOWED_IPS} entries (it holds {})",
                entries.len()
            ),
        );
        return None;
    }
    let mut nets = Vec::with_capacity(entries.len());
    for (i, entry) in entries.iter().enumerate() {
        match entry.as_str().and_then(AllowedIps::parse_entry) {
            Some(net) => nets.push(net),
            None => {
                let shown = match entry.as_str() {
                    Some(s)
                        if s.len() <= 64
                            && s.bytes()
                                .all(|b| b.is_ascii_hexdigit() || b".:/".contains(&b)) =>
                    {
                        format!(" ({s:?})")
                    }
                    _ => String::new(),
                };
                errors.insert(
                    FIELD.into(),
                    format!(
                        "entry {i}{shown} is not an IP address or CIDR, such as 192.0.2.7, 192.0.2.0/24 or 2001:db8::/32"
                    ),
                );
                return None;
            }
        }
    }
    Some(AllowedIps::from_nets(nets))
}

/// `graceSeconds` of a rotation: optional, 0 to 86400, default 0.
pub(super) fn parse_rotate(obj: &Map<String, Value>) -> Result<u64, ErrorReply> {
    let mut errors = BTreeMap::new();
    body::unknown_fields(obj, &["graceSeconds"], &mut errors);
    let grace = match obj.get("graceSeconds") {
        None | Some(Value::Null) => Some(0),
        Some(_) => body::optional_int(obj, "graceSeconds", 0, MAX_GRACE_SECONDS, &mut errors),
    };
    if !errors.is_empty() {
        return Err(ErrorReply::fields(errors));
    }
    Ok(grace.unwrap_or(0))
}

/// The longest grace a rotation may give the old secret: a day.
pub(super) const MAX_GRACE_SECONDS: u64 = 86_400;

/// The new description of an update request, validated.
pub(super) fn parse_update(obj: &Map<String, Value>) -> Result<String, ErrorReply> {
    let mut errors = BTreeMap::new();
    body::unknown_fields(obj, &["tokenDescription"], &mut errors);
    let description = body::description(obj, &mut errors);
    if !errors.is_empty() {
        return Err(ErrorReply::fields(errors));
    }
    Ok(description.unwrap_or_default())
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct PageLinks {
    pub(super) base_url: String,
    pub(super) next_page: String,
    pub(super) previous_page: String,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct PageOut {
    pub(super) content: Vec<Filtered>,
    pub(super) current_page: u64,
    pub(super) limit: u64,
    pub(super) offset: u64,
    pub(super) pagination_links: PageLinks,
    pub(super) total: u64,
    pub(super) total_pages: u64,
}

/// `tokensByFilter` query parameters, validated.
pub(super) struct FilterQuery {
    pub(super) not_valid_after: Option<i64>,
    pub(super) page: u64,
    pub(super) limit: u64,
    pub(super) users: Vec<String>,
    pub(super) description: Option<String>,
    pub(super) scope: Option<Scope>,
    pub(super) allowed_ips_set: Option<bool>,
}

impl FilterQuery {
    pub(super) fn parse(query: Option<&str>) -> Result<FilterQuery, ErrorReply> {
        let mut q = FilterQuery {
            not_valid_after: None,
            page: 0,
            limit: MAX_PAGE_LIMIT,
            users: Vec::new(),
            description: None,
            scope: None,
            allowed_ips_set: None,
        };
        let mut errors = BTreeMap::new();
        for pair in query.unwrap_or("").split('&').filter(|p| !p.is_empty()) {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            let k = form_decode(k);
            let v = form_decode(v);
            let mut number = |field: &str, min: i64| -> Option<i64> {
                match whole_number(&v) {
                    Some(n) if n >= min => Some(n),
                    _ => {
                        errors.insert(field.to_string(), format!("must be a whole number ≥ {min}"));
                        None
                    }
                }
            };
            match k.as_str() {
                "notValidAfter" => q.not_valid_after = number("notValidAfter", -1),
                "page" => q.page = number("page", 0).unwrap_or(0) as u64,
                "limit" => q.limit = (number("limit", 1).unwrap_or(1) as u64).min(MAX_PAGE_LIMIT),
                "userFilter" if !v.is_empty() => q.users.push(v),
                "userFilter" => {}
                "descriptionFilter" => q.description = (!v.is_empty()).then_some(v),
                "tokenScope" => match number("tokenScope", 1).and_then(Scope::from_code) {
                    Some(s) => q.scope = Some(s),
                    None => {
                        errors.insert(
                            "tokenScope".into(),
                            "must be 1 (read-only) or 2 (read-write)".into(),
                        );
                    }
                },
                "allowedIpsSet" => match v.as_str() {
                    "true" => q.allowed_ips_set = Some(true),
                    "false" => q.allowed_ips_set = Some(false),
                    _ => {
                        errors.insert("allowedIpsSet".into(), "must be true or false".into());
                    }
                },
                other => {
                    errors.insert(other.to_string(), "unknown query parameter".into());
                }
            }
        }
        if errors.is_empty() {
            Ok(q)
        } else {
            Err(ErrorReply::fields(errors))
        }
    }

    /// Where the page starts; 400 when that is beyond any number a JSON
    /// client reads exactly (2^53 − 1), instead of an offset that wrapped.
    pub(super) fn offset(&self) -> Result<u64, ErrorReply> {
        const MAX_SAFE: u64 = (1 << 53) - 1;
        match self.page.checked_mul(self.limit) {
            Some(offset) if offset <= MAX_SAFE => Ok(offset),
            _ => {
                let mut f = BTreeMap::new();
                f.insert(
                    "page".to_string(),
                    format!("is too large: page × limit must be at most {MAX_SAFE}"),
                );
                Err(ErrorReply::fields(f))
            }
        }
    }

    pub(super) fn filter(&self) -> Filter {
        Filter {
            not_valid_after: self.not_valid_after.filter(|&n| n >= 0).map(|n| n as u64),
            user_keys: self.users.clone(),
            description: self.description.as_ref().map(|d| d.to_lowercase()),
            scope: self.scope,
            allowed_ips_set: self.allowed_ips_set,
        }
    }

    /// The query string of another page with the same filters.
    pub(super) fn link(&self, base: &str, path: &str, page: u64) -> String {
        let enc = |s: &str| utf8_percent_encode(s, NON_ALPHANUMERIC).to_string();
        let mut url = format!("{base}{path}?page={page}&limit={}", self.limit);
        if let Some(n) = self.not_valid_after {
            url.push_str(&format!("&notValidAfter={n}"));
        }
        for u in &self.users {
            url.push_str(&format!("&userFilter={}", enc(u)));
        }
        if let Some(d) = &self.description {
            url.push_str(&format!("&descriptionFilter={}", enc(d)));
        }
        if let Some(s) = self.scope {
            url.push_str(&format!("&tokenScope={}", s.code()));
        }
        if let Some(set) = self.allowed_ips_set {
            url.push_str(&format!("&allowedIpsSet={set}"));
        }
        url
    }
}

/// A whole number; one too large for 64 bits counts as the largest (a page
/// beyond the last, a limit to be capped, a date after every token).
pub(super) fn whole_number(text: &str) -> Option<i64> {
    let t = text.trim();
    let digits = t.strip_prefix('-').unwrap_or(t);
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    match t.parse::<i64>() {
        Ok(n) => Some(n),
        Err(_) if t.starts_with('-') => Some(i64::MIN),
        Err(_) => Some(i64::MAX),
    }
}

pub(super) fn form_decode(s: &str) -> String {
    percent_decode_str(&s.replace('+', " "))
        .decode_utf8_lossy()
        .into_owned()
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct AuthTestOut {
    pub(super) is_successful_authentication: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(super) authentication_failure_details: Option<String>,
}
