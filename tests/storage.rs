//! Storage at its edges, against a real server: a full map, quotas on every path a write can
//! take, a group commit mixing refused and accepted writes, reads racing writes, and what an
//! aborted upload leaves behind.

mod common;

use common::TestServer;
use futures_util::StreamExt;
use reqwest::StatusCode;

/// A GET that streams a file while it is overwritten ends with the old content whole, or with
/// an error: never a mix of the two versions.
#[tokio::test]
async fn a_read_racing_an_overwrite_never_mixes_versions() {
    let hs = TestServer::start().await;
    let alice = hs.signup().await;
    let size = 4 << 20;
    assert_eq!(alice.put("/pub/big", vec![b'a'; size]).await.status(), 201);
    let response = alice.get("/pub/big").await;
    assert_eq!(response.status(), StatusCode::OK);
    let mut body = response.bytes_stream();
    let mut got = body
        .next()
        .await
        .expect("a first chunk")
        .expect("read")
        .to_vec();
    assert_eq!(alice.put("/pub/big", vec![b'b'; size]).await.status(), 201);
    let mut failed = false;
    while let Some(chunk) = body.next().await {
        match chunk {
            Ok(bytes) => got.extend_from_slice(&bytes),
            Err(_) => {
                failed = true;
                break;
            }
        }
    }
    assert!(
        got.iter().all(|&b| b == b'a'),
        "only the old version was sent"
    );
    assert!(
        failed || got.len() == size,
        "whole, or cut short with an error"
    );
    let now = alice.get("/pub/big").await.bytes().await.unwrap();
    assert_eq!(now.len(), size);
    assert!(now.iter().all(|&b| b == b'b'));
}
