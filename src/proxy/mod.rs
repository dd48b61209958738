//! Forwarding to the upstream: the pooled client, request and response
//! rewriting, timeouts, and HTTP Upgrade tunnels. Knows nothing of tokens.

pub mod headers;
mod pool;

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::header::{self, HeaderValue};
use http::uri::{PathAndQuery, Uri};
use http::{HeaderMap, Method, Request, Response, StatusCode, Version};
use http_body_util::{BodyExt, Either, Full, Limited};
use hyper::body::{Body, Incoming};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioIo;
use rustls_pki_types::CertificateDer;
use rustls_pki_types::pem::PemObject;

use crate::body::{BodyPace, BodyStalled, StallGuard};
use crate::config::{Config, Problem, UpstreamUrl};
use crate::error::{ErrorReply, Fault, RespBody};
use crate::server::ConnHold;
use headers::ProtectedNames;
use pool::{Pool, SendError};

pub use crate::body::{ReqBody, UpstreamBody};

/// The upstream failed us, or the request cannot be forwarded; each variant
/// knows whose fault it is.
#[derive(Debug, thiserror::Error)]
pub enum ProxyError {
    #[error("cannot connect to the upstream: {0}")]
    Connect(String),
    #[error("the upstream connection failed: {0}")]
    Broken(String),
    #[error("the upstream did not answer within {0} ms")]
    Timeout(u128),
    #[error("the request target cannot be forwarded: {0}")]
    BadTarget(&'static str),
    /// The client's request body was malformed (a bad chunk) or ended early.
    #[error("the request body is malformed or ended early")]
    MalformedBody,
    /// The client's request body paused too long, arrived too slowly, or was
    /// still incomplete when the response timeout ran out.
    #[error("the client's request body was not received within {0} ms")]
    ClientStalled(u128),
}

impl ProxyError {
    pub fn fault(&self) -> Fault {
        match self {
            ProxyError::Connect(_) | ProxyError::Broken(_) | ProxyError::Timeout(_) => {
                Fault::Upstream
            }
            ProxyError::BadTarget(_) | ProxyError::MalformedBody | ProxyError::ClientStalled(_) => {
                Fault::Client
            }
        }
    }

    /// Its label in `tokengate_upstream_errors_total{kind}`.
    pub fn kind(&self) -> &'static str {
        match self {
            ProxyError::Connect(_) => "connect",
            ProxyError::Broken(_) => "broken",
            ProxyError::Timeout(_) => "timeout",
            ProxyError::BadTarget(_) => "bad_target",
            ProxyError::MalformedBody => "malformed_body",
            ProxyError::ClientStalled(_) => "client_stalled",
        }
    }
}

impl From<ProxyError> for ErrorReply {
    fn from(e: ProxyError) -> ErrorReply {
        match e {
            ProxyError::Connect(_) | ProxyError::Broken(_) => ErrorReply::upstream(
                StatusCode::BAD_GATEWAY,
                "The upstream server could not be reached or failed to answer",
            ),
            ProxyError::Timeout(_) => ErrorReply::upstream(
                StatusCode::GATEWAY_TIMEOUT,
                "The upstream server did not answer in time",
            ),
            ProxyError::BadTarget(why) => ErrorReply::client(StatusCode::BAD_REQUEST, why),
            ProxyError::MalformedBody => ErrorReply::client(
                StatusCode::BAD_REQUEST,
                "The request body is malformed or ended early",
            ),
            ProxyError::ClientStalled(_) => ErrorReply::client(
                StatusCode::REQUEST_TIMEOUT,
                "The request body was not received in time",
            ),
        }
    }
}

fn describe(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}

/// The exchange failed because the client's request body did (a malformed
/// chunk, a body cut short): hyper reports an error of the body stream it was
/// sending, caused by an error of the client connection's own body. That is
/// the client's fault (400), not the upstream's.
fn client_body_failed(e: &(dyn std::error::Error + 'static)) -> bool {
    let mut sending_body_failed = false;
    let mut cause = Some(e);
    while let Some(err) = cause {
        if let Some(h) = err.downcast_ref::<hyper::Error>() {
            if sending_body_failed {
                return true;
            }
            sending_body_failed = h.is_user();
        }
        cause = err.source();
    }
    false
}

/// How the client reached us, for `X-Forwarded-*`.
pub struct Origin<'a> {
    pub peer_ip: &'a HeaderValue,
    pub trusted_peer: bool,
    pub scheme: &'static str,
}

/// A small JSON answer of the upstream (identity look-ups).
#[derive(Debug)]
pub struct Fetched {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Bytes,
}

/// The upstream and a keep-alive pool of connections to it.
pub struct Upstream {
    pool: Pool,
    url: UpstreamUrl,
    host: HeaderValue,
    preserve_host: bool,
    response_timeout: Duration,
    /// How a client's request body must keep arriving.
    body_pace: BodyPace,
}

/// Why an upstream client cannot be set up from a configuration.
#[derive(Debug, thiserror::Error)]
pub enum ClientSetupError {
    #[error("[upstream] ca_file {path:?}: {source}")]
    CaFile {
        path: String,
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    #[error("TLS set-up failed: {0}")]
    Tls(rustls::Error),
    #[error(transparent)]
    Url(#[from] Problem),
}

/// The TLS client configuration for HTTPS upstreams: the system's roots, or
/// `upstream.ca_file`. Loading the roots is start-up work: done once.
pub fn client_tls(config: &Config) -> Result<rustls::ClientConfig, ClientSetupError> {
    let u = &config.upstream;
    let mut roots = rustls::RootCertStore::empty();
    if u.ca_file.is_empty() {
        let found = rustls_native_certs::load_native_certs();
        for cert in found.certs {
            let _ = roots.add(cert);
        }
    } else {
        let ca_file = |e: Box<dyn std::error::Error + Send + Sync>| ClientSetupError::CaFile {
            path: u.ca_file.clone(),
            source: e,
        };
        let certs = CertificateDer::pem_file_iter(&u.ca_file).map_err(|e| ca_file(e.into()))?;
        for cert in certs {
            let cert = cert.map_err(|e| ca_file(e.into()))?;
            roots.add(cert).map_err(|e| ca_file(e.into()))?;
        }
    }
    Ok(rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .map_err(ClientSetupError::Tls)?
    .with_root_certificates(roots)
    .with_no_client_auth())
}

const MAX_FETCH_BYTES: usize = 1024 * 1024;

impl Upstream {
    pub fn new(config: &Config) -> Result<Arc<Upstream>, ClientSetupError> {
        Upstream::with_tls(config, client_tls(config)?)
    }

    /// An upstream client with a TLS configuration built once by
    /// [`client_tls`] (each worker has its own pool, all share the roots).
    pub fn with_tls(
        config: &Config,
        tls: rustls::ClientConfig,
    ) -> Result<Arc<Upstream>, ClientSetupError> {
        let url = config.upstream_url()?;
        let u = &config.upstream;
        let mut http = HttpConnector::new();
        http.enforce_http(false);
        http.set_nodelay(true);
        http.set_connect_timeout(Some(Duration::from_millis(u.connect_timeout_ms)));
        http.set_keepalive(Some(Duration::from_secs(60)));
        let connector = hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config(tls)
            .https_or_http()
            .enable_http1()
            .wrap_connector(http);
        let bad_url = |e: &dyn std::fmt::Display| Problem::at("upstream", "url", e.to_string());
        let target = Uri::builder()
            .scheme(url.scheme.clone())
            .authority(url.authority.clone())
            .path_and_query("/")
            .build()
            .map_err(|e| bad_url(&e))?;
        // No more idle upstream connections than client connections served.
        let pool = Pool::new(connector, target, config.server.max_connections);
        let host = HeaderValue::from_str(url.authority.as_str()).map_err(|e| bad_url(&e))?;
        Ok(Arc::new(Upstream {
            pool,
            url,
            host,
            preserve_host: u.preserve_host,
            response_timeout: Duration::from_millis(u.response_timeout_ms),
            body_pace: BodyPace {
                gap: Duration::from_millis(config.server.header_read_timeout_ms),
                min_rate: config.server.min_body_bytes_per_second,
            },
        }))
    }

    /// The upstream request target (origin-form: the connection goes to
    /// the upstream) for a client's path and query, byte for byte: no
    /// normalisation, `%2F`, `..` and `;` are the upstream's to judge.
    fn uri_for(&self, pq: &PathAndQuery) -> Result<Uri, ProxyError> {
        if self.url.path_prefix.is_empty() {
            return Ok(Uri::from(pq.clone()));
        }
        let mut joined = String::with_capacity(self.url.path_prefix.len() + pq.as_str().len());
        joined.push_str(&self.url.path_prefix);
        joined.push_str(pq.as_str());
        PathAndQuery::from_maybe_shared(Bytes::from(joined))
            .map(Uri::from)
            .map_err(|_| ProxyError::BadTarget("the request path is not valid"))
    }

    /// Rewrites a client request for the upstream: target URI, `Host`,
    /// hop-by-hop headers, protected identity headers, `X-Forwarded-*`.
    /// Returns the `Upgrade` protocol when the client asked for one.
    pub fn rewrite<B>(
        &self,
        req: &mut Request<B>,
        origin: &Origin<'_>,
        protected: &ProtectedNames,
    ) -> Result<Option<HeaderValue>, ProxyError> {
        if req.method() == Method::CONNECT {
            // Refused before routing already; kept so this never forwards one.
            return Err(ProxyError::BadTarget("CONNECT is not supported"));
        }
        let pq = match req.uri().path_and_query() {
            Some(pq) if pq.as_str().starts_with('/') => pq.clone(),
            _ => {
                return Err(ProxyError::BadTarget(
                    "only origin-form request targets are forwarded",
                ));
            }
        };
        let client_host = req.headers().get(header::HOST).cloned().or_else(|| {
            req.uri()
                .authority()
                .and_then(|a| HeaderValue::from_str(a.as_str()).ok())
        });
        // An origin-form target without a prefix to add stays as it is.
        if !(self.url.path_prefix.is_empty()
            && req.uri().scheme().is_none()
            && req.uri().authority().is_none())
        {
            *req.uri_mut() = self.uri_for(&pq)?;
        }
        if req.version() == Version::HTTP_2 {
            // HTTP/2 may split cookies over several fields; HTTP/1.1 wants one.
            headers::join_cookies(req.headers_mut());
        }
        let upgrade = headers::strip_hop_by_hop(req.headers_mut());
        // Upgrade exists in HTTP/1.1 only, and only WebSocket is tunnelled:
        // any other protocol (`h2c`, say) is taken off the request, so the
        // upstream never switches to something tokengate cannot see into.
        let upgrade = upgrade.filter(|p| {
            req.version() == Version::HTTP_11
                && p.as_bytes().trim_ascii().eq_ignore_ascii_case(b"websocket")
        });
        // The upstream connection is HTTP/1.1 whatever the client spoke.
        *req.version_mut() = Version::HTTP_11;
        let h = req.headers_mut();
        protected.strip(h);
        headers::set_forwarded(
            h,
            origin.peer_ip,
            origin.trusted_peer,
            origin.scheme,
            client_host.clone(),
        );
        let host = match (self.preserve_host, client_host) {
            (true, Some(client)) => client,
            _ => self.host.clone(),
        };
        h.insert(header::HOST, host);
        if let Some(protocol) = &upgrade {
            headers::set_upgrade(h, protocol.clone());
        }
        Ok(upgrade)
    }

    async fn send(&self, req: Request<ReqBody>) -> Result<Response<UpstreamBody>, ProxyError> {
        self.send_within(req, self.response_timeout).await
    }

    /// Sends a request; no response head within `limit` is a timeout.
    async fn send_within(
        &self,
        req: Request<ReqBody>,
        limit: Duration,
    ) -> Result<Response<UpstreamBody>, ProxyError> {
        match tokio::time::timeout(limit, self.pool.send(req)).await {
            Err(_) => Err(ProxyError::Timeout(limit.as_millis())),
            Ok(answer) => self.classify(answer),
        }
    }

    /// The upstream's answer, or whose fault it is that there is none.
    fn classify(
        &self,
        answer: Result<Response<UpstreamBody>, SendError>,
    ) -> Result<Response<UpstreamBody>, ProxyError> {
        answer.map_err(|e| self.fault(&e))
    }

    fn fault(&self, e: &SendError) -> ProxyError {
        let (e, connect): (&(dyn std::error::Error + 'static), bool) = match e {
            SendError::Connect(e) => (&**e, true),
            SendError::Request(e) => (e, false),
        };
        if BodyStalled::is_cause_of(e) {
            ProxyError::ClientStalled(self.body_pace.gap.as_millis())
        } else if client_body_failed(e) {
            ProxyError::MalformedBody
        } else if connect {
            ProxyError::Connect(describe(e))
        } else {
            ProxyError::Broken(describe(e))
        }
    }

    /// Forwards a rewritten request; the bodies stream both ways. A `101`
    /// answer to an upgrade request turns the two connections into a tunnel.
    pub async fn forward(
        &self,
        mut req: Request<Incoming>,
        upgrade: Option<HeaderValue>,
        hold: &ConnHold,
    ) -> Result<Response<RespBody>, ProxyError> {
        let client_side = upgrade.is_some().then(|| hyper::upgrade::on(&mut req));
        let (parts, body) = req.into_parts();
        // A request without a body (most) needs no guard: nothing of it can stall or move.
        let (body, progress) = if body.is_end_stream() {
            (Either::Right(Full::new(Bytes::new())), None)
        } else {
            let body = StallGuard::new(body, self.body_pace);
            let progress = body.progress();
            (Either::Left(body), Some(progress))
        };
        let request = self.pool.send(Request::from_parts(parts, body));
        tokio::pin!(request);
        // `response_timeout_ms` runs from the body's last movement, as
        // nginx's proxy send and read timeouts do: an upload that keeps
        // moving is never cut however long it takes (a client that pauses is
        // cut by the body guard), an upstream that stops reading it or does
        // not answer after it is.
        let limit = self.response_timeout;
        let mut deadline = tokio::time::Instant::now() + limit;
        let mut resp = loop {
            tokio::select! {
                biased;
                answer = &mut request => break self.classify(answer)?,
                () = tokio::time::sleep_until(deadline) => {
                    let Some(progress) = &progress else {
                        return Err(ProxyError::Timeout(limit.as_millis()));
                    };
                    let next = tokio::time::Instant::from_std(progress.last()) + limit;
                    if next <= tokio::time::Instant::now() {
                        return Err(ProxyError::Timeout(limit.as_millis()));
                    }
                    deadline = next;
                }
            }
        };
        if resp.status() == StatusCode::SWITCHING_PROTOCOLS {
            let Some(client_side) = client_side else {
                return Err(ProxyError::Broken(
                    "101 Switching Protocols without an upgrade request".into(),
                ));
            };
            let upstream_side = hyper::upgrade::on(&mut resp);
            let protocol = resp.headers().get(header::UPGRADE).cloned();
            // Holds the upstream connection until the upgrade takes it over.
            let (mut parts, connection) = resp.into_parts();
            // Part of the client's connection: it keeps the connection's slot
            // and gets the shutdown grace, after which it is dropped.
            hold.spawn(async move {
                let upgraded = tokio::join!(client_side, upstream_side);
                drop(connection);
                let (Ok(client), Ok(upstream)) = upgraded else {
                    tracing::debug!("upgrade did not complete");
                    return;
                };
                let mut client = TokioIo::new(client);
                let mut upstream = TokioIo::new(upstream);
                if let Err(e) = tokio::io::copy_bidirectional(&mut client, &mut upstream).await {
                    tracing::debug!(error = %e, "tunnel closed with an error");
                }
            });
            headers::strip_hop_by_hop(&mut parts.headers);
            if let Some(protocol) = protocol {
                headers::set_upgrade(&mut parts.headers, protocol);
            }
            return Ok(Response::from_parts(
                parts,
                Either::Right(Full::new(Bytes::new())),
            ));
        }
        headers::strip_hop_by_hop(resp.headers_mut());
        if upgrade.is_some() {
            // The upgrade was refused. Bytes the client sent after its request
            // were meant for the new protocol, or hide a second request behind
            // the upgrade: ending the connection after this answer means they
            // are never read as HTTP.
            resp.headers_mut()
                .insert(header::CONNECTION, HeaderValue::from_static("close"));
        }
        Ok(resp.map(Either::Left))
    }

    /// Is the upstream reachable? Any HTTP answer to `GET /status` (the
    /// load-balancer endpoint of Jira and Confluence) counts.
    pub async fn probe(&self) -> Result<StatusCode, ProxyError> {
        let mut req = Request::new(Either::Right(Full::new(Bytes::new())));
        *req.uri_mut() = self.uri_for(&PathAndQuery::from_static("/status"))?;
        req.headers_mut().insert(header::HOST, self.host.clone());
        let limit = self.response_timeout.min(Duration::from_secs(5));
        Ok(self.send_within(req, limit).await?.status())
    }

    /// A small GET of tokengate's own to the upstream (identity checks).
    pub async fn fetch(
        &self,
        path_and_query: &str,
        headers: HeaderMap,
    ) -> Result<Fetched, ProxyError> {
        let pq = PathAndQuery::try_from(path_and_query)
            .map_err(|_| ProxyError::BadTarget("bad look-up path"))?;
        let mut req = Request::new(Either::Right(Full::new(Bytes::new())));
        *req.uri_mut() = self.uri_for(&pq)?;
        *req.headers_mut() = headers;
        req.headers_mut().insert(header::HOST, self.host.clone());
        req.headers_mut()
            .insert(header::ACCEPT, HeaderValue::from_static("application/json"));
        let resp = self.send(req).await?;
        let (parts, body) = resp.into_parts();
        let body = Limited::new(body, MAX_FETCH_BYTES)
            .collect()
            .await
            .map_err(|e| ProxyError::Broken(format!("reading a look-up answer: {e}")))?
            .to_bytes();
        Ok(Fetched {
            status: parts.status,
            headers: parts.headers,
            body,
        })
    }
}
