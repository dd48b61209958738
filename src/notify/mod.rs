//! Notices to token owners (`[notify]`): a token's expiry coming closer
//! (at each of `expiry_days`), and a token created for their account; by
//! webhook and by mail.
//!
//! A background task does all of it, never a request: a creation is queued
//! by the management API and the answer does not wait ([`Queue`]); every
//! `check_interval_seconds` the tokens that expire within the largest of
//! `expiry_days` are read, and each whose most imminent threshold has come
//! is due. Before a notice goes out it is claimed in the store
//! ([`crate::store::Store::claim_notice`]) — atomically, for every gateway on
//! the store — and marked sent once the receiver took it, so that each
//! (token, notice, channel) goes out once across restarts and nodes. A
//! receiver that fails lets the claim go and is tried again later (30 s,
//! doubling, at most an hour apart). A gateway that dies while sending holds
//! its claim for a lease of 10 minutes; then another may send it.
//!
//! A threshold that had passed before the token was made is not noticed (a
//! token made for 5 days hears of the 3-day and 1-day thresholds, not of the
//! 14-day one), and only the most imminent threshold that has come is sent:
//! a gateway that was down for a week does not send three notices at once.

mod send;
pub mod text;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

pub use send::{ChannelSetupError, Mail, Webhook, WebhookBody, X_TOKENGATE_SIGNATURE, signature};

use crate::config::{Config, Secrets};
use crate::state::Gateway;
use crate::store::{Filter, Store, TokenRecord};

const DAY_MS: u64 = 86_400_000;
/// How long a claim holds while its notice is being sent.
const LEASE_MS: u64 = 10 * 60 * 1000;
/// Retries: the first after 30 s, doubling, at most an hour apart, 12 in all.
const FIRST_RETRY_MS: u64 = 30_000;
const MAX_RETRY_MS: u64 = 3_600_000;
const MAX_ATTEMPTS: u32 = 12;
/// How often the task looks at its queue and the clock.
const TICK: Duration = Duration::from_millis(250);
/// Creations waiting for the task; beyond this they are dropped (and counted).
const QUEUE: usize = 10_000;
/// Tokens read per page while looking for coming expiries.
const PAGE: u64 = 500;

/// `[notify]` as the task uses it, rebuilt by a reload.
pub struct Settings {
    /// Ascending, without repeats.
    expiry_days: Vec<u32>,
    on_create: bool,
    check_interval_ms: u64,
    webhook: Option<Webhook>,
    mail: Option<Mail>,
    addresses: text::Addresses,
}

impl Settings {
    pub fn new(config: &Config, secrets: &Secrets) -> Result<Settings, ChannelSetupError> {
        let n = &config.notify;
        let mut expiry_days = n.expiry_days.clone();
        expiry_days.sort_unstable();
        expiry_days.dedup();
        let webhook = (!n.webhook_url.is_empty())
            .then(|| Webhook::new(config, secrets.webhook_secret.clone()))
            .transpose()?;
        let mail = secrets
            .smtp_url
            .as_ref()
            .map(|url| Mail::new(config, url))
            .transpose()?;
        let public_url = Some(config.server.public_url.trim_end_matches('/').to_string())
            .filter(|u| !u.is_empty());
        Ok(Settings {
            expiry_days,
            on_create: n.on_create,
            check_interval_ms: n.check_interval_seconds.max(1).saturating_mul(1000),
            webhook,
            mail,
            addresses: text::Addresses {
                // The pages' address needs the public URL: a mail has no request to take it from.
                page_url: public_url
                    .as_ref()
                    .zip(config.ui.root())
                    .map(|(base, root)| format!("{base}{root}/")),
                public_url,
            },
        })
    }

    fn channels(&self) -> Vec<Channel> {
        let mut out = Vec::new();
        if self.webhook.is_some() {
            out.push(Channel::Webhook);
        }
        if self.mail.is_some() {
            out.push(Channel::Mail);
        }
        out
    }
}

/// Where the management API leaves created tokens for the task.
#[derive(Clone)]
pub struct Queue(mpsc::Sender<u64>);

/// The task's end of the [`Queue`].
pub struct Receiver(mpsc::Receiver<u64>);

impl Queue {
    pub fn new() -> (Queue, Receiver) {
        let (tx, rx) = mpsc::channel(QUEUE);
        (Queue(tx), Receiver(rx))
    }

    /// A token was created: its owner hears of it (if `[notify]` says so),
    /// soon, without the caller waiting.
    pub fn created(&self, token: &TokenRecord) {
        if self.0.try_send(token.id).is_err() {
            tracing::warn!(
                token_id = token.id,
                "the notice queue is full; no creation notice for this token"
            );
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Event {
    Created,
    /// The threshold of this many days.
    Expiry(u32),
}

impl Event {
    fn label(self) -> &'static str {
        match self {
            Event::Created => "created",
            Event::Expiry(_) => "expiry",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Channel {
    Webhook,
    Mail,
}

impl Channel {
    fn label(self) -> &'static str {
        match self {
            Channel::Webhook => "webhook",
            Channel::Mail => "mail",
        }
    }
}

/// The name a notice is claimed by: `created/mail`, `expiry-14d/webhook`.
fn notice_name(event: Event, channel: Channel) -> String {
    match event {
        Event::Created => format!("created/{}", channel.label()),
        Event::Expiry(days) => format!("expiry-{days}d/{}", channel.label()),
    }
}

type Key = (u64, Event, Channel);

#[derive(Debug, Clone, Copy)]
struct Job {
    token: u64,
    event: Event,
    channel: Channel,
    attempts: u32,
    due_ms: u64,
}

impl Job {
    fn key(&self) -> Key {
        (self.token, self.event, self.channel)
    }
}

/// What happened to one attempt.
enum Outcome {
    Sent,
    /// Nothing to send to (the owner has no mail address): not tried again.
    Skipped(&'static str),
    Failed(String),
}

/// The notifier task's state.
struct Notifier {
    gw: Arc<Gateway>,
    jobs: Vec<Job>,
    /// Queued, or known to be sent (by this gateway or another): not queued
    /// again by a check. Expiry entries are forgotten once their token
    /// expired.
    known: HashMap<Key, u64>,
    next_check_ms: u64,
}

/// Runs until `shutdown`: sends queued creation notices, checks for coming
/// expiries every `check_interval_seconds`, retries what failed, and keeps
/// `tokengate_tokens_expiring` up to date.
pub async fn run(gw: Arc<Gateway>, mut queue: Receiver, shutdown: CancellationToken) {
    let mut n = Notifier {
        gw,
        jobs: Vec::new(),
        known: HashMap::new(),
        next_check_ms: 0,
    };
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            created = queue.0.recv() => match created {
                Some(id) => n.created(id),
                None => return,
            },
            _ = tokio::time::sleep(TICK) => {}
        }
        // A notice being sent when the gateway stops keeps its claim until
        // the lease runs out.
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = n.work() => {}
        }
    }
}

impl Notifier {
    fn settings(&self) -> Arc<Settings> {
        self.gw.live.load().notify.clone()
    }

    fn created(&mut self, id: u64) {
        let settings = self.settings();
        if !settings.on_create {
            return;
        }
        let now = self.gw.clock.now_ms();
        for channel in settings.channels() {
            self.queue(id, Event::Created, channel, now, u64::MAX);
        }
    }

    fn queue(&mut self, token: u64, event: Event, channel: Channel, now: u64, forget_after: u64) {
        if self.known.contains_key(&(token, event, channel)) {
            return;
        }
        self.known.insert((token, event, channel), forget_after);
        self.jobs.push(Job {
            token,
            event,
            channel,
            attempts: 0,
            due_ms: now,
        });
    }

    async fn work(&mut self) {
        let Some(store) = self.gw.store.current() else {
            return;
        };
        let settings = self.settings();
        let now = self.gw.clock.now_ms();
        if now >= self.next_check_ms {
            self.next_check_ms = now.saturating_add(settings.check_interval_ms);
            if let Err(e) = self.check(&store, &settings, now).await {
                tracing::warn!(error = %e, "checking tokens for coming expiry failed; trying again at the next check");
            }
        }
        let (due, later): (Vec<Job>, Vec<Job>) = self.jobs.drain(..).partition(|j| j.due_ms <= now);
        self.jobs = later;
        for job in due {
            self.attempt(&store, &settings, job).await;
        }
    }

    /// Queues the expiry notices that are due, forgets those of expired
    /// tokens, and counts the tokens that expire soon.
    async fn check(
        &mut self,
        store: &Store,
        settings: &Settings,
        now: u64,
    ) -> Result<(), crate::store::StoreError> {
        self.known.retain(|_, forget_after| *forget_after > now);
        let expiring = |days: u64| Filter {
            not_valid_after: Some(now.saturating_add(days * DAY_MS)),
            ..Filter::default()
        };
        let gone = store.filter(expiring(0), 0, 0).await?.total;
        for (within, days) in [("7d", 7), ("30d", 30)] {
            let total = store.filter(expiring(days), 0, 0).await?.total;
            self.gw
                .metrics
                .tokens_expiring
                .get_or_create(&crate::metrics::WithinLabels { within })
                .set(i64::try_from(total.saturating_sub(gone)).unwrap_or(i64::MAX));
        }
        let channels = settings.channels();
        let Some(&widest) = settings.expiry_days.last() else {
            return Ok(());
        };
        if channels.is_empty() {
            return Ok(());
        }
        let filter = expiring(u64::from(widest));
        let mut offset = 0;
        loop {
            let page = store.filter(filter.clone(), offset, PAGE).await?;
            let read = page.items.len() as u64;
            for r in &page.items {
                if let Some(days) = due_threshold(r, &settings.expiry_days, now) {
                    for &channel in &channels {
                        self.queue(r.id, Event::Expiry(days), channel, now, r.valid_until);
                    }
                }
            }
            offset += read;
            if read < PAGE || offset >= page.total {
                return Ok(());
            }
        }
    }

    async fn attempt(&mut self, store: &Store, settings: &Settings, mut job: Job) {
        let now = self.gw.clock.now_ms();
        let retry = |job: &mut Job, jobs: &mut Vec<Job>| {
            job.attempts += 1;
            let wait = FIRST_RETRY_MS
                .saturating_mul(1 << (job.attempts - 1).min(20))
                .min(MAX_RETRY_MS);
            job.due_ms = now.saturating_add(wait);
            jobs.push(*job);
        };
        let record = match store.get(job.token).await {
            Ok(Some(r)) => r,
            Ok(None) => {
                // Deleted: nothing to tell.
                self.known.remove(&job.key());
                return;
            }
            Err(e) => {
                tracing::warn!(error = %e, token_id = job.token, "a notice waits for the token store");
                retry(&mut job, &mut self.jobs);
                return;
            }
        };
        if matches!(job.event, Event::Expiry(_)) && record.is_expired(now) {
            self.known.remove(&job.key());
            return;
        }
        let (event, channel) = (job.event.label(), job.channel.label());
        let name = notice_name(job.event, job.channel);
        match store
            .claim_notice(job.token, &name, now, now.saturating_add(LEASE_MS))
            .await
        {
            // Sent already, or another gateway is sending it.
            Ok(false) => {
                if job.event == Event::Created {
                    self.known.remove(&job.key());
                }
                return;
            }
            Ok(true) => {}
            Err(e) => {
                tracing::warn!(error = %e, token_id = job.token, notice = %name, "a notice cannot be claimed; trying again later");
                retry(&mut job, &mut self.jobs);
                return;
            }
        }
        let outcome = self.send(settings, &record, job, now).await;
        let sent = !matches!(outcome, Outcome::Failed(_));
        if sent && job.event == Event::Created {
            // A check never queues a creation notice again.
            self.known.remove(&job.key());
        }
        if let Err(e) = store.finish_notice(job.token, &name, sent).await {
            // The lease runs out and the notice is claimable again.
            tracing::warn!(error = %e, token_id = job.token, notice = %name, "the outcome of a notice was not recorded");
        }
        match outcome {
            Outcome::Sent => {
                self.gw.metrics.notice(channel, event, "sent");
                tracing::info!(token_id = job.token, user_key = %record.user_key, notice = %name, "notice sent");
            }
            Outcome::Skipped(why) => {
                self.gw.metrics.notice(channel, event, "skipped");
                tracing::info!(token_id = job.token, user_key = %record.user_key, notice = %name, why, "notice not sent");
            }
            Outcome::Failed(e) => {
                self.gw.metrics.notice(channel, event, "failed");
                if job.attempts + 1 >= MAX_ATTEMPTS {
                    self.gw.metrics.notice(channel, event, "dropped");
                    self.known.remove(&job.key());
                    tracing::error!(error = %e, token_id = job.token, notice = %name, attempts = job.attempts + 1, "a notice could not be delivered; giving up");
                } else {
                    tracing::warn!(error = %e, token_id = job.token, notice = %name, attempt = job.attempts + 1, "a notice could not be delivered; trying again later");
                    retry(&mut job, &mut self.jobs);
                }
            }
        }
    }

    async fn send(&self, settings: &Settings, r: &TokenRecord, job: Job, now: u64) -> Outcome {
        let (subject, text) = match job.event {
            Event::Created => text::created(r, &settings.addresses),
            Event::Expiry(days) => text::expiry(r, days, now, &settings.addresses),
        };
        match job.channel {
            Channel::Webhook => {
                let Some(webhook) = &settings.webhook else {
                    return Outcome::Skipped("the webhook is no longer configured");
                };
                let body = WebhookBody {
                    event: match job.event {
                        Event::Created => "token_created",
                        Event::Expiry(_) => "token_expiring",
                    },
                    user_key: &r.user_key,
                    user_name: &r.user_name,
                    token_id: r.id,
                    description: &r.description,
                    valid_until: r.valid_until,
                    text: &text,
                };
                match webhook.send(&body).await {
                    Ok(()) => Outcome::Sent,
                    Err(e) => Outcome::Failed(e),
                }
            }
            Channel::Mail => {
                let Some(mail) = &settings.mail else {
                    return Outcome::Skipped("mail is no longer configured");
                };
                let identity = &self.gw.live.load().identity;
                let to = match identity.email_for_key(&r.user_key).await {
                    Ok(Some(to)) => to,
                    Ok(None) => return Outcome::Skipped("the upstream tells no mail address"),
                    Err(e) => {
                        return Outcome::Failed(format!("looking up the owner's address: {e}"));
                    }
                };
                match mail.send(&to, &subject, &text).await {
                    Ok(()) => Outcome::Sent,
                    Err(e) => Outcome::Failed(e),
                }
            }
        }
    }
}

/// The threshold (days) whose notice is due for `r` at `now`: the most
/// imminent one that has come, unless it came before the token was made.
fn due_threshold(r: &TokenRecord, ascending_days: &[u32], now: u64) -> Option<u32> {
    if r.valid_until == 0 || r.valid_until <= now {
        return None;
    }
    let days = *ascending_days
        .iter()
        .find(|&&d| now >= r.valid_until.saturating_sub(u64::from(d) * DAY_MS))?;
    let comes_at = r.valid_until.saturating_sub(u64::from(days) * DAY_MS);
    (comes_at >= r.created).then_some(days)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::{AllowedIps, Scope};
    use crate::token::TokenHash;

    fn token(created: u64, valid_until: u64) -> TokenRecord {
        TokenRecord {
            id: 1,
            hash: TokenHash::of("x"),
            description: "d".into(),
            user_key: "U".into(),
            user_name: "u".into(),
            created_by: "U".into(),
            created,
            valid_until,
            last_accessed: 0,
            scope: Scope::ReadWrite,
            allowed_ips: AllowedIps::default(),
            last_accessed_from: None,
            previous: None,
        }
    }

    #[test]
    fn the_most_imminent_threshold_that_came_after_the_token_was_made() {
        let days = [1, 3, 14];
        let end = 100 * DAY_MS;
        let r = token(0, end);
        assert_eq!(due_threshold(&r, &days, end - 15 * DAY_MS), None);
        assert_eq!(due_threshold(&r, &days, end - 14 * DAY_MS), Some(14));
        assert_eq!(due_threshold(&r, &days, end - 2 * DAY_MS), Some(3));
        assert_eq!(due_threshold(&r, &days, end - 1), Some(1));
        assert_eq!(due_threshold(&r, &days, end), None, "expired");
        let short = token(end - 5 * DAY_MS, end);
        assert_eq!(due_threshold(&short, &days, end - 5 * DAY_MS), None);
        assert_eq!(due_threshold(&short, &days, end - 3 * DAY_MS), Some(3));
        assert_eq!(due_threshold(&token(0, 0), &days, 5), None, "never expires");
    }

    #[test]
    fn notices_have_stable_names() {
        assert_eq!(notice_name(Event::Created, Channel::Mail), "created/mail");
        assert_eq!(
            notice_name(Event::Expiry(14), Channel::Webhook),
            "expiry-14d/webhook"
        );
    }
}
