//! Changes made by other gateways, as they commit: every delete, description
//! change and user deletion sends `NOTIFY tokengate_events` in its
//! transaction, so it is delivered on commit and only then. The payload:
//!
//! ```json
//! {"at": 1767225600000, "node": "5f1c0e…", "token": "<SHA-256 hex>" | "all"}
//! ```
//!
//! `at` is the database's clock at the change (epoch ms; for the notify-lag
//! metric), `node` the sending backend (its own changes it evicted already),
//! `token` the changed token's hash, or `all` when a user's tokens went.
//!
//! One connection of its own (not from the pool) listens. When it is lost —
//! an error, the server ending it, or a check (`SELECT 1` every second)
//! unanswered for a second — the cache is told at once: it drops what it
//! holds and stops trusting old entries. The listener connects again with
//! growing pauses (100 ms doubling to 5 s, until closed); once `LISTEN`
//! works again, whatever was read in between is dropped too (a change in the
//! gap was never announced) and the cache trusts its entries again.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::StreamExt;
use serde::Deserialize;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_postgres::AsyncMessage;
use tokio_util::sync::CancellationToken;

use super::connect::{LISTEN_NAME, Target};
use super::describe;
use crate::clock::{Clock, SystemClock};
use crate::store::cache::{Change, HotCache};
use crate::token::TokenHash;

/// The channel of change notifications.
pub(super) const CHANNEL: &str = "tokengate_events";

/// The pause before the first reconnection attempt; doubled after each
/// failed one, up to [`MAX_BACKOFF`].
const FIRST_BACKOFF: Duration = Duration::from_millis(100);
const MAX_BACKOFF: Duration = Duration::from_secs(5);
/// How long connecting and `LISTEN` may take.
const SETUP_TIMEOUT: Duration = Duration::from_secs(10);
/// How often the listening connection is checked, and how long the check
/// may take: a connection that died silently is noticed within 2 s.
const CHECK_EVERY: Duration = Duration::from_secs(1);
const CHECK_TIMEOUT: Duration = Duration::from_secs(1);

/// The payload of a notification.
#[derive(Debug, Deserialize)]
struct Event {
    at: i64,
    node: String,
    token: String,
}

/// What `health()` says about notifications: "ok" or why not.
#[derive(Debug)]
struct State(Mutex<String>);

impl State {
    fn new() -> State {
        State(Mutex::new("not listening: not started".to_string()))
    }

    fn get(&self) -> String {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    fn set(&self, state: String) {
        *self.0.lock().unwrap_or_else(|p| p.into_inner()) = state;
    }
}

/// The running listener task.
pub(super) struct Listener {
    stop: CancellationToken,
    task: JoinHandle<()>,
    state: Arc<State>,
}

impl Listener {
    pub(super) fn start(
        runtime: &tokio::runtime::Handle,
        target: Target,
        node: Arc<str>,
        cache: Arc<HotCache>,
    ) -> Listener {
        // Nothing arrives until LISTEN works: until then entries are
        // trusted only while young.
        cache.set_listening(false);
        let stop = CancellationToken::new();
        let state = Arc::new(State::new());
        let task = runtime.spawn(run(
            target.named(LISTEN_NAME),
            node,
            cache,
            state.clone(),
            stop.clone(),
        ));
        Listener { stop, task, state }
    }

    /// "ok", or why notifications are not arriving.
    pub(super) fn state(&self) -> String {
        self.state.get()
    }

    /// Asks the task to stop, without waiting.
    pub(super) fn cancel(&self) {
        self.stop.cancel();
    }

    /// Stops the task and waits (briefly) until it has.
    pub(super) async fn stop(self) {
        self.stop.cancel();
        if tokio::time::timeout(Duration::from_secs(2), self.task)
            .await
            .is_err()
        {
            tracing::warn!("the notification listener did not stop within 2 s");
        }
    }
}

/// Why listening stopped.
struct Lost {
    reason: String,
    /// Had `LISTEN` worked on this connection?
    was_listening: bool,
}

impl Lost {
    fn before(reason: impl Into<String>) -> Lost {
        Lost {
            reason: reason.into(),
            was_listening: false,
        }
    }

    fn after(reason: impl Into<String>) -> Lost {
        Lost {
            reason: reason.into(),
            was_listening: true,
        }
    }
}

async fn run(
    target: Target,
    node: Arc<str>,
    cache: Arc<HotCache>,
    state: Arc<State>,
    stop: CancellationToken,
) {
    let mut backoff = FIRST_BACKOFF;
    // Whether the last loss was logged as a warning (once per outage).
    let mut warned = false;
    loop {
        let lost = tokio::select! {
            _ = stop.cancelled() => break,
            lost = listen(&target, &node, &cache, &state) => lost,
        };
        cache.set_listening(false);
        state.set(format!("not listening: {}", lost.reason));
        if lost.was_listening {
            backoff = FIRST_BACKOFF;
            warned = false;
        }
        if !warned {
            tracing::warn!(
                reason = %lost.reason,
                "not receiving changes from other gateways: the token cache is dropped, and \
                 entries are read again when older than cache_max_stale_ms; reconnecting"
            );
            warned = true;
        } else {
            tracing::debug!(reason = %lost.reason, ?backoff, "reconnecting the notification listener");
        }
        tokio::select! {
            _ = stop.cancelled() => break,
            _ = tokio::time::sleep(backoff) => {}
        }
        backoff = (backoff * 2).min(MAX_BACKOFF);
    }
    cache.set_listening(false);
    state.set("not listening: closed".to_string());
}

/// Aborts the task driving a connection when the listener lets go of it.
struct AbortOnDrop(JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Connects, listens and delivers notifications until the connection is lost.
async fn listen(target: &Target, node: &str, cache: &HotCache, state: &State) -> Lost {
    let (client, mut connection) = match tokio::time::timeout(SETUP_TIMEOUT, target.connect()).await
    {
        Ok(Ok(connected)) => connected,
        Ok(Err(e)) => return Lost::before(describe(&e)),
        Err(_) => return Lost::before("no connection within 10 s"),
    };
    // The connection is driven here; its notifications (or why it ended)
    // go to the loop below.
    let (tx, mut rx) = mpsc::unbounded_channel();
    let _driver = AbortOnDrop(tokio::spawn(async move {
        let mut messages = futures_util::stream::poll_fn(move |cx| connection.poll_message(cx));
        while let Some(message) = messages.next().await {
            match message {
                Ok(AsyncMessage::Notification(n)) => {
                    if tx.send(Ok(n)).is_err() {
                        return;
                    }
                }
                Ok(_) => {}
                Err(e) => {
                    let _ = tx.send(Err(describe(&e)));
                    return;
                }
            }
        }
        let _ = tx.send(Err("the server closed the connection".to_string()));
    }));
    match tokio::time::timeout(
        SETUP_TIMEOUT,
        client.batch_execute(&format!("LISTEN {CHANNEL}")),
    )
    .await
    {
        Ok(Ok(())) => {}
        Ok(Err(e)) => return Lost::before(format!("LISTEN failed: {}", describe(&e))),
        Err(_) => return Lost::before("LISTEN not answered within 10 s"),
    }
    // From now on every change committed elsewhere arrives; an entry read
    // before may predate a change that was never announced to us.
    cache.forget_all();
    cache.set_listening(true);
    state.set("ok".to_string());
    tracing::info!("receiving changes from other gateways");

    let check = async {
        loop {
            tokio::time::sleep(CHECK_EVERY).await;
            match tokio::time::timeout(CHECK_TIMEOUT, client.simple_query("SELECT 1")).await {
                Ok(Ok(_)) => {}
                Ok(Err(e)) => return describe(&e),
                Err(_) => return "the connection check was not answered within 1 s".to_string(),
            }
        }
    };
    tokio::pin!(check);
    loop {
        tokio::select! {
            reason = &mut check => return Lost::after(reason),
            message = rx.recv() => match message {
                Some(Ok(n)) if n.channel() == CHANNEL => deliver(n.payload(), node, cache),
                Some(Ok(_)) => {}
                Some(Err(reason)) => return Lost::after(reason),
                None => return Lost::after("the connection ended"),
            },
        }
    }
}

/// Evicts what a notification names, unless this backend sent it.
fn deliver(payload: &str, node: &str, cache: &HotCache) {
    match serde_json::from_str::<Event>(payload) {
        Ok(event) if event.node == node => {}
        Ok(event) => {
            let change = if event.token == "all" {
                Change::All
            } else if let Some(hash) = TokenHash::from_hex(&event.token) {
                Change::Token(hash)
            } else {
                tracing::warn!(token = %event.token, "a change notification names no token; dropping the whole cache");
                Change::All
            };
            cache.notified(change, u64::try_from(event.at).unwrap_or(0));
        }
        Err(e) => {
            // Not ours to read (another version?): forget everything rather
            // than keep what it may have changed.
            tracing::warn!(error = %e, "unreadable change notification; dropping the whole cache");
            cache.notified(Change::All, SystemClock.now_ms());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::ManualClock;
    use crate::store::{FoundEntry, Scope};

    fn cached(cache: &HotCache, seed: &str) -> TokenHash {
        let hash = TokenHash::of(seed);
        let entry = FoundEntry {
            id: 1,
            user_key: "u".into(),
            user_name: "u".into(),
            valid_until: 0,
            scope: Scope::ReadWrite,
            allowed: Default::default(),
            superseded: false,
        }
        .into_entry();
        cache.insert_unless_evicted(&hash, entry, cache.generation());
        hash
    }

    #[test]
    fn notifications_evict_unless_they_are_our_own() {
        let cache = HotCache::new(ManualClock::new(5_000), 1_000);
        let (a, b) = (cached(&cache, "a"), cached(&cache, "b"));
        let payload = |node: &str, token: &str| {
            format!(r#"{{"at" : 4000, "node" : "{node}", "token" : "{token}"}}"#)
        };
        deliver(&payload("me", &a.to_hex()), "me", &cache);
        assert!(
            cache.get(&a).is_some(),
            "our own change was evicted when made"
        );
        deliver(&payload("other", &a.to_hex()), "me", &cache);
        assert!(cache.get(&a).is_none());
        assert!(cache.get(&b).is_some());
        deliver(&payload("other", "all"), "me", &cache);
        assert!(cache.get(&b).is_none());
        let c = cached(&cache, "c");
        deliver("{not json", "me", &cache);
        assert!(
            cache.get(&c).is_none(),
            "an unreadable notification drops everything"
        );
    }
}
