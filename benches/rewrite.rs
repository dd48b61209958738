//! The header rewrite of a forwarded request: target, hop-by-hop and
//! protected headers, `X-Forwarded-*`, `Host`, and the credential swap.
//!
//! `cargo bench --bench rewrite`
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::hint::black_box;

use criterion::{BatchSize, Criterion, Throughput, criterion_group, criterion_main};
use http::header::HeaderValue;
use http::{Method, Request};
use tokengate::auth::swap::CredentialSwap;
use tokengate::config::{Config, Secrets};
use tokengate::proxy::{Origin, Upstream};

/// What a CI client's Jira request typically carries.
fn request() -> Request<()> {
    Request::builder()
        .method(Method::GET)
        .uri(
            "/rest/api/2/search?jql=project%20%3D%20DEMO%20AND%20status%20%3D%20Open&maxResults=50",
        )
        .header("host", "jira.example.com")
        .header("user-agent", "curl/8.5.0")
        .header("accept", "application/json")
        .header("accept-encoding", "gzip, deflate, br")
        .header(
            "authorization",
            "Bearer tg_Fa7KPq7NReSFbezfAN2OYGX9D3fryr1a05v4",
        )
        .header(
            "cookie",
            "JSESSIONID=ABCDEF0123456789; atlassian.xsrf.token=B1C2",
        )
        .header("connection", "keep-alive")
        .header("x-forwarded-for", "203.0.113.7")
        .header("x-remote-user", "admin")
        .body(())
        .unwrap()
}

fn rewrite(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let _guard = rt.enter();
    let mut config = Config::default();
    config.upstream.url = "http://jira.internal:8080/jira".into();
    let upstream = Upstream::new(&config).unwrap();
    let swap = CredentialSwap::new(&config, &Secrets::default()).unwrap();
    let peer = HeaderValue::from_static("192.0.2.10");
    let origin = Origin {
        peer_ip: &peer,
        trusted_peer: false,
        scheme: "https",
    };
    let mut group = c.benchmark_group("rewrite");
    group.throughput(Throughput::Elements(1));
    group.bench_function("forwarded_request_with_token_swap", |b| {
        b.iter_batched(
            request,
            |mut req| {
                let upgrade = upstream
                    .rewrite(&mut req, &origin, swap.protected())
                    .unwrap();
                swap.apply(req.headers_mut(), "alice").unwrap();
                black_box((req, upgrade))
            },
            BatchSize::SmallInput,
        )
    });
    group.finish();
}

criterion_group!(benches, rewrite);
criterion_main!(benches);
