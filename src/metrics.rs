//! Prometheus metrics. Label values come from small fixed sets —
//! routes, status codes, decision names, error kinds — never user names,
//! paths or token ids.

use std::sync::atomic::AtomicU64;
use std::sync::{Arc, OnceLock};

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RequestLabels {
    /// `proxy` (forwarded or refused on the public listener) or `api` (management API).
    pub route: &'static str,
    pub status: u16,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ResultLabels {
    pub result: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct WorkerLabels {
    pub worker: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct KindLabels {
    pub kind: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OpLabels {
    pub op: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct CauseLabels {
    pub cause: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct NoticeLabels {
    /// `webhook` or `mail`.
    pub channel: &'static str,
    /// `created` or `expiry`.
    pub event: &'static str,
    /// `sent`, `failed` (to be tried again), `skipped` (the owner has no
    /// mail address) or `dropped` (its retries ran out).
    pub outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct WithinLabels {
    /// `7d` or `30d`.
    pub within: &'static str,
}

/// What the token store counts: failed calls by operation, cache entries
/// invalidated by cause, and how long another gateway's change took to
/// arrive here.
pub struct StoreMetrics {
    pub errors: Family<OpLabels, Counter>,
    pub invalidations: Family<CauseLabels, Counter>,
    pub notify_lag: Histogram,
}

impl StoreMetrics {
    fn register(registry: &mut Registry) -> StoreMetrics {
        let errors = Family::<OpLabels, Counter>::default();
        registry.register(
            "tokengate_store_errors",
            "Token store calls that failed, by operation",
            errors.clone(),
        );
        let invalidations = Family::<CauseLabels, Counter>::default();
        for cause in ["notify", "reconnect", "stale"] {
            let _ = invalidations.get_or_create(&CauseLabels { cause });
        }
        registry.register(
            "tokengate_cache_invalidations",
            "Cached tokens dropped: changed on another gateway (notify), notifications lost (reconnect), too old while they were lost (stale)",
            invalidations.clone(),
        );
        let notify_lag = Histogram::new([
            0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
        ]);
        registry.register(
            "tokengate_notify_lag_seconds",
            "From a change's commit on one gateway to its eviction on this one",
            notify_lag.clone(),
        );
        StoreMetrics {
            errors,
            invalidations,
            notify_lag,
        }
    }

    pub fn error(&self, op: &'static str) {
        self.errors.get_or_create(&OpLabels { op }).inc();
    }

    pub fn invalidation(&self, cause: &'static str, n: u64) {
        self.invalidations
            .get_or_create(&CauseLabels { cause })
            .inc_by(n);
    }
}

/// The values of `tokengate_auth_decisions_total{result}`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    Ok,
    Invalid,
    Expired,
    WrongUser,
    Locked,
    Throttled,
    ReadOnly,
    PasswordPassthrough,
    PasswordRefused,
    Anonymous,
    OtherScheme,
    OtherSchemeRefused,
    StoreUnavailable,
    IpNotAllowed,
}

impl Decision {
    pub const ALL: [Decision; 14] = [
        Decision::Ok,
        Decision::Invalid,
        Decision::Expired,
        Decision::WrongUser,
        Decision::Locked,
        Decision::Throttled,
        Decision::ReadOnly,
        Decision::PasswordPassthrough,
        Decision::PasswordRefused,
        Decision::Anonymous,
        Decision::OtherScheme,
        Decision::OtherSchemeRefused,
        Decision::StoreUnavailable,
        Decision::IpNotAllowed,
    ];

    pub fn label(self) -> &'static str {
        match self {
            Decision::Ok => "ok",
            Decision::Invalid => "invalid",
            Decision::Expired => "expired",
            Decision::WrongUser => "wrong_user",
            Decision::Locked => "locked",
            Decision::Throttled => "throttled",
            Decision::ReadOnly => "read_only",
            Decision::PasswordPassthrough => "password_passthrough",
            Decision::PasswordRefused => "password_refused",
            Decision::Anonymous => "anonymous",
            Decision::OtherScheme => "other_scheme",
            Decision::OtherSchemeRefused => "other_scheme_refused",
            Decision::StoreUnavailable => "store_unavailable",
            Decision::IpNotAllowed => "ip_not_allowed",
        }
    }
}

/// Routes of `tokengate_requests_total{route}`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Route {
    Proxy,
    Api,
    /// tokengate's own pages under `ui.path`.
    Pages,
}

impl Route {
    fn label(self) -> &'static str {
        match self {
            Route::Proxy => "proxy",
            Route::Api => "api",
            Route::Pages => "pages",
        }
    }
}

const STATUSES: usize = 600;

pub struct Metrics {
    registry: Registry,
    pub requests: Family<RequestLabels, Counter>,
    pub auth_decisions: Family<ResultLabels, Counter>,
    /// The counters of each route and status, looked up once: counting a
    /// request costs no hashing and no lock.
    request_counters: [Vec<OnceLock<Counter>>; 3],
    decision_counters: Vec<Counter>,
    pub upstream_duration: Histogram,
    pub upstream_errors: Family<KindLabels, Counter>,
    pub tokens: Gauge,
    pub lockouts: Counter,
    in_flight: Gauge,
    /// Connections open on the public listener, by worker: how evenly the
    /// kernel spreads them (`SO_REUSEPORT`).
    pub open_connections: Family<WorkerLabels, Gauge>,
    pub ready: Gauge,
    pub last_access_pending: Gauge,
    pub last_access_flush_age: Gauge<f64, AtomicU64>,
    pub store: Arc<StoreMetrics>,
    pub notifications: Family<NoticeLabels, Counter>,
    pub tokens_expiring: Family<WithinLabels, Gauge>,
}

/// One request in flight: counted in `tokengate_in_flight_requests` until
/// it is dropped, however the request ends (a client that disconnects
/// mid-request drops the handler's future, and with it this guard).
pub struct InFlight<'a>(&'a Gauge);

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.0.dec();
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

impl Metrics {
    /// Counts a request in flight until the guard is dropped.
    pub fn in_flight(&self) -> InFlight<'_> {
        self.in_flight.inc();
        InFlight(&self.in_flight)
    }

    pub fn new() -> Metrics {
        let mut registry = Registry::default();
        let requests = Family::<RequestLabels, Counter>::default();
        registry.register(
            "tokengate_requests",
            "Requests answered, by route and status code",
            requests.clone(),
        );
        let auth_decisions = Family::<ResultLabels, Counter>::default();
        registry.register(
            "tokengate_auth_decisions",
            "Authentication decisions on requests, by result",
            auth_decisions.clone(),
        );
        let upstream_duration = Histogram::new([
            0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
        ]);
        registry.register(
            "tokengate_upstream_duration_seconds",
            "Time from sending a request upstream to its response head",
            upstream_duration.clone(),
        );
        let upstream_errors = Family::<KindLabels, Counter>::default();
        registry.register(
            "tokengate_upstream_errors",
            "Failed upstream exchanges, by kind (connect, broken, timeout, credentials_rejected)",
            upstream_errors.clone(),
        );
        let tokens = Gauge::default();
        registry.register("tokengate_tokens", "Tokens in the store", tokens.clone());
        let lockouts = Counter::default();
        registry.register(
            "tokengate_lockouts",
            "Users locked out after failed attempts",
            lockouts.clone(),
        );
        let in_flight = Gauge::default();
        registry.register(
            "tokengate_in_flight_requests",
            "Requests being answered now",
            in_flight.clone(),
        );
        let open_connections = Family::<WorkerLabels, Gauge>::default();
        registry.register(
            "tokengate_open_connections",
            "Connections open on the public listener, by worker",
            open_connections.clone(),
        );
        let ready = Gauge::default();
        registry.register(
            "tokengate_ready",
            "1 when the store is open and the upstream reachable, else 0",
            ready.clone(),
        );
        let last_access_pending = Gauge::default();
        registry.register(
            "tokengate_last_access_pending",
            "Tokens whose lastAccessed is not yet written to the store",
            last_access_pending.clone(),
        );
        let last_access_flush_age = Gauge::<f64, AtomicU64>::default();
        registry.register(
            "tokengate_last_access_flush_age_seconds",
            "Seconds since lastAccessed was last written to the store",
            last_access_flush_age.clone(),
        );
        let store = Arc::new(StoreMetrics::register(&mut registry));
        let notifications = Family::<NoticeLabels, Counter>::default();
        registry.register(
            "tokengate_notifications",
            "Expiry and creation notices to token owners, by channel (webhook, mail), event (created, expiry) and outcome (sent, failed, skipped, dropped)",
            notifications.clone(),
        );
        let tokens_expiring = Family::<WithinLabels, Gauge>::default();
        for within in ["7d", "30d"] {
            let _ = tokens_expiring.get_or_create(&WithinLabels { within });
        }
        registry.register(
            "tokengate_tokens_expiring",
            "Tokens that expire within 7 or 30 days (not yet expired), as of the last expiry check",
            tokens_expiring.clone(),
        );
        let decision_counters = Decision::ALL
            .iter()
            .map(|d| {
                auth_decisions
                    .get_or_create(&ResultLabels { result: d.label() })
                    .clone()
            })
            .collect();
        Metrics {
            registry,
            request_counters: [
                (0..STATUSES).map(|_| OnceLock::new()).collect(),
                (0..STATUSES).map(|_| OnceLock::new()).collect(),
                (0..STATUSES).map(|_| OnceLock::new()).collect(),
            ],
            decision_counters,
            requests,
            auth_decisions,
            upstream_duration,
            upstream_errors,
            tokens,
            lockouts,
            in_flight,
            open_connections,
            ready,
            last_access_pending,
            last_access_flush_age,
            store,
            notifications,
            tokens_expiring,
        }
    }

    pub fn notice(&self, channel: &'static str, event: &'static str, outcome: &'static str) {
        self.notifications
            .get_or_create(&NoticeLabels {
                channel,
                event,
                outcome,
            })
            .inc();
    }

    pub fn decision(&self, decision: Decision) {
        // Built for every variant in `new`, in the order of `Decision::ALL`.
        if let Some(c) = self.decision_counters.get(decision as usize) {
            c.inc();
        }
    }

    pub fn request(&self, route: Route, status: u16) {
        let labels = || RequestLabels {
            route: route.label(),
            status,
        };
        match self.request_counters[route as usize].get(usize::from(status)) {
            Some(slot) => slot
                .get_or_init(|| self.requests.get_or_create(&labels()).clone())
                .inc(),
            None => self.requests.get_or_create(&labels()).inc(),
        };
    }

    pub fn upstream_error(&self, kind: &'static str) {
        self.upstream_errors
            .get_or_create(&KindLabels { kind })
            .inc();
    }

    /// The Prometheus text exposition.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decisions_index_their_counters() {
        for (i, d) in Decision::ALL.iter().enumerate() {
            assert_eq!(*d as usize, i, "{d:?}");
        }
        let m = Metrics::new();
        m.decision(Decision::WrongUser);
        m.request(Route::Api, 201);
        m.request(Route::Api, 201);
        let text = m.encode();
        assert!(
            text.contains("tokengate_auth_decisions_total{result=\"wrong_user\"} 1"),
            "{text}"
        );
        assert!(
            text.contains("tokengate_auth_decisions_total{result=\"ok\"} 0"),
            "{text}"
        );
        assert!(
            text.contains("tokengate_requests_total{route=\"api\",status=\"201\"} 2"),
            "{text}"
        );
    }
}
