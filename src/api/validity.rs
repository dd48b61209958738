//! Token validity: calendar months in UTC, the configured default and
//! maximum. Anyone asking for more than the maximum for their own token is
//! refused with a message that names it; only an administrator creating a
//! token for another user has it cut down to the maximum.

use jiff::tz::TimeZone;
use jiff::{Timestamp, ToSpan};

use crate::config::TokensConfig;

/// What the creator asked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Requested {
    Default,
    Months(u32),
    /// An explicit expiry, epoch ms.
    Until(u64),
}

/// `now` plus `months` calendar months in UTC; the day is clamped to the end
/// of a shorter month (31 January + 1 month = 28/29 February).
pub fn add_months(now_ms: u64, months: u32) -> Option<u64> {
    let ts = Timestamp::from_millisecond(i64::try_from(now_ms).ok()?).ok()?;
    let later = ts
        .to_zoned_datetime(TimeZone::UTC)
        .checked_add(i64::from(months).months())
        .ok()?;
    u64::try_from(later.timestamp().as_millisecond()).ok()
}

/// Parses `tokenExpirationDateTime`: an ISO 8601 / RFC 3339 instant with an
/// offset (`2027-01-31T12:00:00Z`, `...+02:00`), or a date alone
/// (`2027-01-31`), which means the end of that day in UTC.
pub fn parse_expiry(text: &str) -> Option<u64> {
    let text = text.trim();
    let ms = if let Ok(ts) = text.parse::<Timestamp>() {
        ts.as_millisecond()
    } else {
        let date: jiff::civil::Date = text.parse().ok()?;
        let end = date.to_datetime(jiff::civil::time(23, 59, 59, 999_000_000));
        end.to_zoned_datetime(TimeZone::UTC)
            .ok()?
            .timestamp()
            .as_millisecond()
    };
    u64::try_from(ms).ok()
}

/// Epoch ms as ISO 8601 in UTC, as the create response shows it.
pub fn format_ms(ms: u64) -> Option<String> {
    let ts = Timestamp::from_millisecond(i64::try_from(ms).ok()?).ok()?;
    Some(ts.to_string())
}

/// Why a requested validity was refused (a message for the client).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refused {
    pub field: &'static str,
    pub message: String,
}

/// `validUntil` for a new token (0 = never expires).
///
/// `cut_down`: set only when an administrator creates a token for another
/// user; a too-long validity is then shortened to the maximum instead of
/// refused. A token for oneself never sets it, administrators included.
pub fn valid_until(
    now_ms: u64,
    requested: Requested,
    rules: &TokensConfig,
    cut_down: bool,
) -> Result<u64, Refused> {
    let max = rules.max_validity_months;
    let max_until = (max > 0).then(|| add_months(now_ms, max)).flatten();
    let too_long = |field| Refused {
        field,
        message: format!("the maximum validity is {max} months"),
    };
    let unrepresentable = |field| Refused {
        field,
        message: "is out of range".to_string(),
    };
    match requested {
        Requested::Default => {
            if rules.default_validity_months == 0 {
                Ok(0)
            } else {
                add_months(now_ms, rules.default_validity_months)
                    .ok_or(unrepresentable("tokenValidityTimeInMonths"))
            }
        }
        Requested::Months(months) => {
            let field = "tokenValidityTimeInMonths";
            if max > 0 && months > max {
                if cut_down {
                    return max_until.ok_or(unrepresentable(field));
                }
                return Err(too_long(field));
            }
            add_months(now_ms, months).ok_or(unrepresentable(field))
        }
        Requested::Until(until) => {
            let field = "tokenExpirationDateTime";
            if until <= now_ms {
                return Err(Refused {
                    field,
                    message: "must be in the future".to_string(),
                });
            }
            match max_until {
                Some(limit) if until > limit => {
                    if cut_down {
                        Ok(limit)
                    } else {
                        Err(too_long(field))
                    }
                }
                _ => Ok(until),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(s: &str) -> u64 {
        parse_expiry(s).unwrap()
    }

    fn rules(default: u32, max: u32) -> TokensConfig {
        TokensConfig {
            default_validity_months: default,
            max_validity_months: max,
            ..TokensConfig::default()
        }
    }

    #[test]
    fn months_are_calendar_months_in_utc() {
        assert_eq!(
            add_months(ms("2026-01-31T10:00:00Z"), 1),
            Some(ms("2026-02-28T10:00:00Z"))
        );
        assert_eq!(
            add_months(ms("2028-01-31T10:00:00Z"), 1),
            Some(ms("2028-02-29T10:00:00Z"))
        );
        assert_eq!(
            add_months(ms("2026-11-30T23:30:00Z"), 3),
            Some(ms("2027-02-28T23:30:00Z"))
        );
        assert_eq!(
            add_months(ms("2026-05-15T00:00:00Z"), 12),
            Some(ms("2027-05-15T00:00:00Z"))
        );
    }

    #[test]
    fn expiry_formats() {
        assert_eq!(ms("2027-01-31T12:00:00+02:00"), ms("2027-01-31T10:00:00Z"));
        assert_eq!(ms("2027-01-31"), ms("2027-01-31T23:59:59.999Z"));
        assert_eq!(parse_expiry("next tuesday"), None);
        assert_eq!(
            format_ms(ms("2027-01-31T10:00:00Z")).unwrap(),
            "2027-01-31T10:00:00Z"
        );
    }

    #[test]
    fn default_maximum_and_the_cut_down_for_another_user() {
        let now = ms("2026-11-30T00:00:00Z");
        let r = rules(6, 12);
        assert_eq!(
            valid_until(now, Requested::Default, &r, false),
            Ok(add_months(now, 6).unwrap())
        );
        assert_eq!(
            valid_until(now, Requested::Months(12), &r, false),
            Ok(add_months(now, 12).unwrap())
        );
        let refused = valid_until(now, Requested::Months(13), &r, false).unwrap_err();
        assert!(refused.message.contains("12 months"));
        assert_eq!(
            valid_until(now, Requested::Months(13), &r, true),
            Ok(add_months(now, 12).unwrap())
        );
        assert!(valid_until(now, Requested::Until(now - 1), &r, false).is_err());
        assert!(
            valid_until(now, Requested::Until(now - 1), &r, true).is_err(),
            "the past stays refused"
        );
        let far = ms("2030-01-01T00:00:00Z");
        assert!(valid_until(now, Requested::Until(far), &r, false).is_err());
        assert_eq!(
            valid_until(now, Requested::Until(far), &r, true),
            Ok(add_months(now, 12).unwrap())
        );
        // Unlimited maximum: a default of 0 means never expires.
        assert_eq!(
            valid_until(now, Requested::Default, &rules(0, 0), false),
            Ok(0)
        );
        assert_eq!(
            valid_until(now, Requested::Months(600), &rules(0, 0), false),
            Ok(add_months(now, 600).unwrap())
        );
    }
}
