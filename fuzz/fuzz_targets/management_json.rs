//! The management API's request parsing on arbitrary bytes: the create and
//! update JSON bodies and the `tokensByFilter` query string. Every input
//! gives a valid request or a client error (4xx), never a panic; what is
//! accepted obeys the field rules, and a filter's pagination link reads
//! back as the same filter.
#![no_main]

use libfuzzer_sys::fuzz_target;
use tokengate::api::fuzzing::{create_body, filter_query, update_body};
use tokengate::api::validity::Requested;
use tokengate::error::ErrorReply;

fn client_error(e: &ErrorReply) {
    assert!(e.status.is_client_error(), "status {}", e.status);
    assert!(
        !e.messages.is_empty() || !e.fields.is_empty(),
        "an error says nothing"
    );
}

fn good_description(d: &str) {
    assert!(!d.trim().is_empty(), "empty description accepted");
    assert!(d.chars().count() <= 255, "long description accepted");
    assert!(
        !d.chars().any(char::is_control),
        "control character accepted"
    );
}

fuzz_target!(|data: &[u8]| {
    // The first byte picks what the rest is.
    let Some((&which, rest)) = data.split_first() else {
        return;
    };
    match which % 3 {
        0 => match create_body(rest) {
            Ok(c) => {
                good_description(&c.description);
                match c.requested {
                    Requested::Months(m) => assert!((1..=1200).contains(&m)),
                    Requested::Until(_) | Requested::Default => {}
                }
                assert!(matches!(c.scope, None | Some(1 | 2)));
                if let Some(k) = &c.for_user_key {
                    assert!(!k.trim().is_empty() && k.len() <= 255);
                }
            }
            Err(e) => client_error(&e),
        },
        1 => match update_body(rest) {
            Ok(d) => good_description(&d),
            Err(e) => client_error(&e),
        },
        _ => {
            let Ok(query) = std::str::from_utf8(rest) else {
                return;
            };
            // A page number from the query's own length keeps the link varied.
            let page = query.len() as u64 * 7;
            match filter_query(Some(query), page) {
                Ok((q, link)) => {
                    assert!((1..=50).contains(&q.limit), "limit {}", q.limit);
                    assert!(q.not_valid_after.is_none_or(|n| n >= -1));
                    assert!(matches!(q.scope, None | Some(1 | 2)));
                    assert!(q.users.iter().all(|u| !u.is_empty()));
                    assert!(q.description.as_deref() != Some(""));
                    let (again, _) = filter_query(Some(&link), 0)
                        .unwrap_or_else(|e| panic!("own link refused: {:?}", e.fields));
                    assert_eq!(again.page, page, "link's page");
                    assert_eq!(again.limit, q.limit);
                    assert_eq!(again.not_valid_after, q.not_valid_after);
                    assert_eq!(again.users, q.users);
                    assert_eq!(again.description, q.description);
                    assert_eq!(again.scope, q.scope);
                }
                Err(e) => client_error(&e),
            }
        }
    }
});
