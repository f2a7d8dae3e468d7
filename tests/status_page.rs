//! The admin status page in a real browser: headless Chromium, driven over the DevTools
//! protocol on a pipe (`--remote-debugging-pipe`: JSON messages ending in NUL on descriptors
//! 3 and 4, so no port and no websocket). The page must load without a console error or an
//! uncaught exception, log in through its form, show the admin's counts, and show a PUT made
//! while it is open, live from the public firehose.
//!
//! Needs Debian's `chromium` (`.ci/run` installs it). Without it the test says so loudly and
//! passes, so that a machine that truly cannot install it still runs the rest.

mod common;

use std::io::{BufRead, BufReader, Write};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use common::{TestServer, ADMIN_PASSWORD};
use serde_json::{json, Value};

/// How long the browser may take to do what the test waits for (not a speed assertion: a
/// deadline so that a broken page fails instead of hanging).
const PATIENCE: Duration = Duration::from_secs(60);

fn find_chromium() -> Option<String> {
    if let Ok(path) = std::env::var("HEARTH_CHROMIUM") {
        return Some(path);
    }
    ["chromium", "chromium-browser", "google-chrome"]
        .into_iter()
        .find(|name| {
            Command::new(name)
                .arg("--version")
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status()
                .is_ok_and(|s| s.success())
        })
        .map(str::to_string)
}

/// The browser to test with; without one, say loudly that the page goes untested.
fn chromium_or_skip() -> Option<String> {
    let found = find_chromium();
    if found.is_none() {
        eprintln!(
            "\n\n*** SKIPPED: no chromium on this machine; the status page was NOT tested in a \
             browser. Install Debian's chromium (apt-get install -y chromium), as .ci/run does. ***\n"
        );
    }
    found
}

/// A browser on a DevTools pipe: commands out, answers and events in.
struct Browser {
    child: Child,
    input: ChildStdin,
    messages: mpsc::Receiver<Value>,
    next_id: u64,
    session: Option<String>,
    /// Console errors, exceptions and error log entries seen so far.
    errors: Vec<String>,
    _profile: tempfile::TempDir,
}

impl Browser {
    fn launch(binary: &str) -> Browser {
        let profile = tempfile::tempdir().expect("profile dir");
        // The shell hands our pipes to Chromium as descriptors 3 (its input) and 4 (its
        // output), which is where --remote-debugging-pipe talks.
        let mut child = Command::new("sh")
            .arg("-c")
            .arg("exec \"$0\" \"$@\" 3<&0 4>&1 0</dev/null 1>/dev/null")
            .arg(binary)
            .args([
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                "--no-first-run",
                "--no-default-browser-check",
                "--remote-debugging-pipe",
            ])
            .arg(format!("--user-data-dir={}", profile.path().display()))
            .arg("about:blank")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("chromium starts");
        let input = child.stdin.take().expect("pipe in");
        let output = child.stdout.take().expect("pipe out");
        let (send, messages) = mpsc::channel();
        std::thread::spawn(move || {
            let mut reader = BufReader::new(output);
            let mut buffer = Vec::new();
            while reader.read_until(0, &mut buffer).is_ok_and(|n| n > 0) {
                buffer.pop_if(|b| *b == 0);
                if let Ok(message) = serde_json::from_slice::<Value>(&buffer) {
                    if send.send(message).is_err() {
                        return;
                    }
                }
                buffer.clear();
            }
        });
        Browser {
            child,
            input,
            messages,
            next_id: 1,
            session: None,
            errors: Vec::new(),
            _profile: profile,
        }
    }

    /// Send a command (to the page's session once attached) and wait for its answer.
    fn call(&mut self, method: &str, params: Value) -> Value {
        let id = self.next_id;
        self.next_id += 1;
        let mut message = json!({ "id": id, "method": method, "params": params });
        if let Some(session) = &self.session {
            message["sessionId"] = json!(session);
        }
        let mut bytes = serde_json::to_vec(&message).expect("json");
        bytes.push(0);
        self.input.write_all(&bytes).expect("write to chromium");
        self.input.flush().expect("flush");
        let deadline = Instant::now() + PATIENCE;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let message = self
                .messages
                .recv_timeout(left)
                .unwrap_or_else(|_| panic!("no answer to {method}"));
            if message["id"] == json!(id) {
                if let Some(error) = message.get("error") {
                    panic!("{method} failed: {error}");
                }
                return message["result"].clone();
            }
            self.note(&message);
        }
    }

    /// Keep what counts as an error on the page.
    fn note(&mut self, message: &Value) {
        let params = &message["params"];
        match message["method"].as_str() {
            Some("Runtime.consoleAPICalled")
                if matches!(params["type"].as_str(), Some("error" | "assert")) =>
            {
                self.errors.push(format!("console: {}", params["args"]));
            }
            Some("Runtime.exceptionThrown") => {
                self.errors
                    .push(format!("exception: {}", params["exceptionDetails"]));
            }
            Some("Log.entryAdded") if params["entry"]["level"] == json!("error") => {
                self.errors.push(format!("log: {}", params["entry"]));
            }
            _ => {}
        }
    }

    /// Take in whatever events arrived.
    fn drain(&mut self) {
        while let Ok(message) = self.messages.try_recv() {
            self.note(&message);
        }
    }

    /// Nothing went wrong on the page: no console error, exception or error log entry.
    fn assert_clean(mut self) {
        self.drain();
        assert!(
            self.errors.is_empty(),
            "the page logged errors: {:#?}",
            self.errors
        );
    }

    /// Evaluate `expression` in the page; its value.
    fn eval(&mut self, expression: &str) -> Value {
        let result = self.call(
            "Runtime.evaluate",
            json!({ "expression": expression, "returnByValue": true, "awaitPromise": true }),
        );
        result["result"]["value"].clone()
    }

    /// Wait until `expression` is true in the page.
    fn wait_for(&mut self, expression: &str, what: &str) {
        let deadline = Instant::now() + PATIENCE;
        loop {
            if self.eval(expression) == json!(true) {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "the page never showed {what}; errors so far: {:?}",
                self.errors
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// A browser on the admin listener at `admin`, logged in through the page's own form,
    /// its firehose view live.
    fn logged_in(chromium: &str, admin: &str) -> Browser {
        let mut browser = Browser::launch(chromium);
        let target = browser.call("Target.createTarget", json!({ "url": "about:blank" }));
        let attached = browser.call(
            "Target.attachToTarget",
            json!({ "targetId": target["targetId"], "flatten": true }),
        );
        browser.session = attached["sessionId"].as_str().map(str::to_string);
        for domain in ["Runtime.enable", "Log.enable", "Page.enable"] {
            browser.call(domain, json!({}));
        }
        browser.call("Page.navigate", json!({ "url": format!("{admin}/") }));
        browser.wait_for(
            "document.readyState === 'complete' && !!document.getElementById('key')",
            "a loaded page",
        );
        // Log in through the page's own form.
        browser.wait_for("!document.getElementById('login').hidden", "its login form");
        browser.eval(&format!(
            "document.getElementById('password').value = {}; \
             document.getElementById('login').submit(); true",
            json!(ADMIN_PASSWORD)
        ));
        browser.wait_for(
            "document.readyState === 'complete' && !!document.getElementById('logout') \
             && !document.getElementById('logout').hidden",
            "the logged-in page",
        );
        browser.wait_for(
            "document.getElementById('stream-state').textContent === 'live'",
            "a live firehose",
        );
        browser
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_status_page_shows_the_server_and_a_live_put_without_console_errors() {
    let Some(chromium) = chromium_or_skip() else {
        return;
    };
    let server = TestServer::start_token_mode().await;
    let token = server.mint_signup_token().await;
    let admin = server.admin_url();
    let key = server.server.public_key().to_string();

    let mut browser = tokio::task::spawn_blocking(move || Browser::logged_in(&chromium, &admin))
        .await
        .expect("browser task");

    // A user signs up and writes while the page is open.
    let user = server.signup_with_token(&token).await;
    let path = "/pub/status-page/hello-from-the-test.json";
    assert_eq!(user.put(path, "{\"hi\":1}").await.status(), 201);

    let browser = tokio::task::spawn_blocking(move || {
        browser.wait_for(
            &format!(
                "document.getElementById('events-list').textContent.includes({})",
                json!(path)
            ),
            "the PUT in its live view",
        );
        browser.wait_for(
            "document.getElementById('users').textContent === '1 (0)'",
            "the admin's user count",
        );
        let shown_key = browser.eval("document.getElementById('key').textContent");
        assert_eq!(shown_key, json!(key), "the page shows the server's key");
        let row = browser
            .eval("document.getElementById('events-list').firstChild.children[1].textContent");
        assert_eq!(row, json!("PUT"));
        browser
    })
    .await
    .expect("browser task");
    browser.assert_clean();
}

/// On a relay the page shows its sources (state, lag, counts) instead of users and tokens,
/// and a PUT on the homeserver it follows arrives live through the relay's firehose.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_relays_status_page_shows_its_sources_and_the_merged_firehose() {
    let Some(chromium) = chromium_or_skip() else {
        return;
    };
    let homeserver = TestServer::start().await;
    let dir = tempfile::tempdir().expect("temp dir");
    let mut config = hearth::config::Config::ephemeral(dir.path());
    config.admin_listen = Some("127.0.0.1:0".parse().expect("address"));
    config.admin_password = Some(ADMIN_PASSWORD.into());
    let source = homeserver.server.url();
    config.sources = vec![source.parse().expect("a source")];
    let relay = hearth::server::Server::start_relay(config)
        .await
        .expect("relay starts");
    let admin = format!("http://{}", relay.admin_addr().expect("admin listener"));

    let mut browser = tokio::task::spawn_blocking(move || Browser::logged_in(&chromium, &admin))
        .await
        .expect("browser task");
    let user = homeserver.signup().await;
    let path = "/pub/status-page/through-the-relay.json";
    assert_eq!(user.put(path, "{}").await.status(), 201);

    let browser = tokio::task::spawn_blocking(move || {
        browser.wait_for(
            &format!(
                "document.getElementById('events-list').textContent.includes({})",
                json!(path)
            ),
            "the PUT, through the relay, in its live view",
        );
        browser.wait_for(
            &format!(
                "[...document.querySelectorAll('#sources tr')].some((row) => \
                 row.children[0].textContent === {} && \
                 row.querySelector('.state').textContent === 'following')",
                json!(source)
            ),
            "the source, following",
        );
        browser.wait_for(
            "document.getElementById('following').textContent === '1 (1)' \
             && document.getElementById('title').textContent === 'Hearth relay' \
             && document.getElementById('users').closest('.card').hidden",
            "the relay's cards, not a homeserver's",
        );
        browser
    })
    .await
    .expect("browser task");
    browser.assert_clean();
    relay.shutdown();
    relay.stopped().await.expect("relay stops");
}
