//! Prometheus metrics (SPEC §8). Label values come from small fixed sets —
//! routes, status codes, decision names, error kinds — never user names,
//! paths or token ids.

use std::sync::atomic::AtomicU64;

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
pub struct KindLabels {
    pub kind: &'static str,
}

pub struct Metrics {
    registry: Registry,
    pub requests: Family<RequestLabels, Counter>,
    pub auth_decisions: Family<ResultLabels, Counter>,
    pub upstream_duration: Histogram,
    pub upstream_errors: Family<KindLabels, Counter>,
    pub tokens: Gauge,
    pub lockouts: Counter,
    pub in_flight: Gauge,
    pub ready: Gauge,
    pub last_access_pending: Gauge,
    pub last_access_flush_age: Gauge<f64, AtomicU64>,
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

impl Metrics {
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
        Metrics {
            registry,
            requests,
            auth_decisions,
            upstream_duration,
            upstream_errors,
            tokens,
            lockouts,
            in_flight,
            ready,
            last_access_pending,
            last_access_flush_age,
        }
    }

    pub fn decision(&self, result: &'static str) {
        self.auth_decisions
            .get_or_create(&ResultLabels { result })
            .inc();
    }

    pub fn request(&self, route: &'static str, status: u16) {
        self.requests
            .get_or_create(&RequestLabels { route, status })
            .inc();
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
