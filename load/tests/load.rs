//! The load tool against a real server: it signs up, writes, and refuses what it must refuse.
//! Small counts only, and no assertion on any timing: these check that the scenarios work and
//! what landed in the store (events, users, bytes); the figures are for `BENCHMARKS.md`.

#[path = "../../tests/common/mod.rs"]
mod common;

use clap::Parser;
use common::{TestServer, ADMIN_PASSWORD};
use hearth_load::{run, LoadArgs, LoadError};

#[derive(Parser)]
struct Cli {
    #[command(flatten)]
    load: LoadArgs,
}

fn args(line: &str) -> LoadArgs {
    match Cli::try_parse_from(std::iter::once("hearth-load").chain(line.split_whitespace())) {
        Ok(cli) => cli.load,
        Err(err) => panic!("{line}: {err}"),
    }
}

fn own_pid() -> u32 {
    std::process::id()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn put_signs_up_and_writes() {
    let server = TestServer::start().await;
    let line = format!(
        "--url {} --pid {} put --users 3 --writers 4 --files 40 --size 100",
        server.server.url(),
        own_pid()
    );
    run(args(&line)).await.expect("put runs");
    assert_landed(&server, 3, 40, 100);
}

/// What a `put` run must have left in the store: `files` PUT events of `size` bytes, each a
/// different path, spread over `users` signed-up users.
fn assert_landed(server: &TestServer, users: usize, files: usize, size: u64) {
    let events = server.events();
    assert_eq!(events.len(), files, "one event per file written");
    let mut paths = std::collections::BTreeSet::new();
    let mut writers = std::collections::BTreeSet::new();
    for event in &events {
        assert_eq!(event.kind, hearth::log::EventKind::Put);
        assert_eq!(event.size, Some(size));
        assert!(
            paths.insert(event.key.clone()),
            "{} written twice",
            event.key
        );
        writers.insert(event.user().to_string());
    }
    assert_eq!(writers.len(), users, "every user wrote");
    for user in &writers {
        let account = server
            .server
            .files()
            .user(user)
            .unwrap()
            .expect("signed up");
        let theirs = events.iter().filter(|e| e.user() == user).count() as u64;
        assert_eq!(account.used_bytes, theirs * size);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn token_mode_needs_minted_tokens() {
    let server = TestServer::start_token_mode().await;
    let url = server.server.url();
    let refused = run(args(&format!("--url {url} put --users 1 --files 1"))).await;
    assert!(
        matches!(refused, Err(LoadError::Http(_))),
        "signup without a token: {refused:?}"
    );
    assert!(server.events().is_empty(), "the refused run wrote nothing");
    let line = format!(
        "--url {url} --admin-url {} --admin-password {ADMIN_PASSWORD} put --users 2 --writers 2 --files 10",
        server.admin_url()
    );
    run(args(&line)).await.expect("put with minted tokens");
    assert_landed(&server, 2, 10, 256);
}

#[tokio::test]
async fn refuses_targets_that_are_not_loopback() {
    for url in [
        "http://192.0.2.1:6287",
        "http://example.com",
        "https://127.0.0.1",
    ] {
        let result = run(args(&format!("--url {url} put --files 1"))).await;
        assert!(
            matches!(result, Err(LoadError::Usage(_))),
            "{url}: {result:?}"
        );
    }
    let admin = run(args(
        "--url http://127.0.0.1:1 --admin-url http://192.0.2.1:6288 put --files 1",
    ))
    .await;
    assert!(matches!(admin, Err(LoadError::Usage(_))), "{admin:?}");
}

#[tokio::test]
async fn refuses_unbounded_runs() {
    for line in [
        "put --files 0",
        "put --max-seconds 0",
        "live --rate 0",
        "live --seconds 100000",
        "idle --connections 0",
        "slow --events 0",
    ] {
        let result = run(args(&format!("--url http://127.0.0.1:1 {line}"))).await;
        assert!(
            matches!(result, Err(LoadError::Usage(_))),
            "{line}: {result:?}"
        );
    }
}
