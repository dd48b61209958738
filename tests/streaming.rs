//! Bodies stream through the gateway; 50 MB each way leave memory flat.
//!
//! How we know: this test binary holds this one test only, so the process
//! is the client, the upstream and the gateway and nothing else. The peak
//! resident set (VmHWM) is reset before the transfers and read after them;
//! had any of the three held a 50 MB body, the peak would have grown by at
//! least 50 MB. Every party here streams in 64 KiB chunks.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::*;
use futures_util::StreamExt;
use reqwest::Method;

const SIZE: u64 = 50 * 1024 * 1024;
/// Generous allowance for buffers, pools and allocator slack; far below SIZE.
const MAX_GROWTH_KB: u64 = 20 * 1024;

fn status_kb(field: &str) -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    status
        .lines()
        .find(|l| l.starts_with(field))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fifty_megabytes_each_way_with_flat_memory() {
    let upstream = EchoUpstream::start().await;
    let dir = tempfile::tempdir().unwrap();
    let gw = start(test_config(&upstream.url(), dir.path())).await;
    let client = gw.anonymous();
    // Warm up connections and allocator pools, then measure from here.
    let resp = client.fetch("/download/1048576").await;
    assert_eq!(resp.bytes().await.unwrap().len(), 1_048_576);
    let before = status_kb("VmRSS:");
    std::fs::write("/proc/self/clear_refs", "5").expect("reset the peak RSS (Linux)");

    // Upload: the client generates the body as it sends it.
    let body = reqwest::Body::wrap_stream(bytes_of(SIZE, b'u'));
    let resp = client
        .request(Method::PUT, "/rest/api/2/attachment")
        .header("content-length", SIZE.to_string())
        .body(body)
        .answer()
        .await;
    assert_eq!(resp.status(), 200);
    assert_eq!(
        upstream.last().body_len,
        SIZE,
        "the upstream received every byte"
    );

    // Download: counted chunk by chunk.
    let resp = client.fetch(&format!("/download/{SIZE}")).await;
    assert_eq!(resp.status(), 200);
    let mut received = 0u64;
    let mut chunks = resp.bytes_stream();
    while let Some(chunk) = chunks.next().await {
        received += chunk.unwrap().len() as u64;
    }
    assert_eq!(received, SIZE, "the client received every byte");

    let peak = status_kb("VmHWM:");
    let growth = peak.saturating_sub(before);
    println!(
        "RSS before {before} kB, peak during 2 x 50 MB transfers {peak} kB, growth {growth} kB"
    );
    assert!(
        growth < MAX_GROWTH_KB,
        "peak RSS grew by {growth} kB while moving {} kB: a body was buffered",
        SIZE / 1024
    );
    gw.stop().await;
}
