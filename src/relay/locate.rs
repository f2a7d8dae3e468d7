//! A source named only by its key: where it is, found again on every (re)connect.
//!
//! Its pkarr record (section 8's shape, read by `pkarr::resolve`) says how to reach it: its
//! ICANN endpoint when it has one (`HTTPS 10 localhost` with the HTTP port is
//! `http://localhost:PORT`, another domain `https://domain`), else PubkyTLS to the record's
//! address and TLS port, through a TLS client that accepts exactly that key. Then what it
//! speaks: Hearth answers `GET /firehose?live=false&limit=1` with an event stream, Pubky does
//! not (its `/events/` are paged; 0.17 answers any path it does not route with 400 "Missing
//! request tenant", so a 400 is settled by its `GET /`, which says "Pubky Homeserver"). A
//! record that cannot be found or read is a retry, never the end of the source: a
//! homeserver's record may appear or move at any time.

use std::sync::{Mutex, PoisonError};

use reqwest::header::CONTENT_TYPE;

use super::follow::{describe, Failure, REQUEST_TIMEOUT};
use super::source::{Endpoint, Protocol};
use super::Context;
use crate::pkarr::{resolve, tls, Network, PublicKey, ResolvePolicy};

/// The relay's pkarr client, made on the first source that needs it (it runs a DHT node: a
/// relay that follows URLs only never joins the DHT).
pub(crate) struct Resolver {
    network: Network,
    client: Mutex<Option<crate::pkarr::Client>>,
}

impl Resolver {
    pub(crate) fn new(network: Network) -> Resolver {
        Resolver {
            network,
            client: Mutex::new(None),
        }
    }

    fn client(&self) -> Result<crate::pkarr::Client, Failure> {
        let mut slot = self.client.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(client) = slot.as_ref() {
            return Ok(client.clone());
        }
        let client = self
            .network
            .client()
            .map_err(|err| Failure::Retry(err.to_string()))?;
        *slot = Some(client.clone());
        Ok(client)
    }
}

/// Where a source named by key is, and the HTTP client that reaches it there.
pub(crate) struct Located {
    pub endpoint: Endpoint,
    pub client: reqwest::Client,
}

/// Resolve `key`'s record and find out what its server speaks. `again`: the source failed
/// before, so the record is asked of the network, not taken from the cache (it may have
/// moved).
pub(crate) async fn locate(context: &Context, key: &str, again: bool) -> Result<Located, Failure> {
    let public_key = PublicKey::try_from(key)
        .map_err(|err| Failure::Fatal(format!("{key} is not an Ed25519 public key: {err}")))?;
    let pkarr = context.resolver.client()?;
    let policy = if again {
        ResolvePolicy::NetworkOnly
    } else {
        ResolvePolicy::CacheFirst
    };
    let address = resolve::lookup(&pkarr, &public_key, policy)
        .await
        .and_then(|packet| resolve::read_record(&packet))
        .map_err(|err| Failure::Retry(format!("{err}; looked up again after a pause")))?;
    let (base, client) = match address.icann_url() {
        Some(url) => (url, context.client.clone()),
        None => {
            // `read_record` refuses a record with neither endpoint.
            let addrs = address.tls_addrs();
            let port = address.tls_port.unwrap_or_default();
            let config = tls::client_config(&public_key)
                .map_err(|err| Failure::Retry(format!("PubkyTLS client: {err}")))?;
            let client = super::client_builder()
                .tls_backend_preconfigured(config)
                .resolve_to_addrs(key, &addrs)
                .build()
                .map_err(|err| Failure::Retry(format!("PubkyTLS client: {}", describe(&err))))?;
            (format!("https://{key}:{port}"), client)
        }
    };
    let protocol = protocol(&client, &base).await?;
    Ok(Located {
        endpoint: Endpoint { protocol, base },
        client,
    })
}

/// Hearth or Pubky: whether `/firehose` answers an event stream. A Pubky homeserver has no
/// such route: 404, or (0.17) 400 with a `GET /` that names Pubky. Any other refusal (a busy
/// or rate-limited Hearth, say) says nothing yet and is retried.
async fn protocol(client: &reqwest::Client, base: &str) -> Result<Protocol, Failure> {
    let response = client
        .get(format!("{base}/firehose?live=false&limit=1"))
        .timeout(REQUEST_TIMEOUT)
        .send()
        .await
        .map_err(|err| Failure::Retry(format!("GET {base}/firehose: {}", describe(&err))))?;
    let status = response.status();
    let stream = response
        .headers()
        .get(CONTENT_TYPE)
        .and_then(|value| value.to_str().ok())
        .is_some_and(|value| value.starts_with("text/event-stream"));
    match status {
        status if status.is_success() && stream => Ok(Protocol::Hearth),
        status if status.is_success() => Ok(Protocol::Pubky),
        reqwest::StatusCode::NOT_FOUND | reqwest::StatusCode::METHOD_NOT_ALLOWED => {
            Ok(Protocol::Pubky)
        }
        reqwest::StatusCode::BAD_REQUEST if says_pubky(client, base).await => Ok(Protocol::Pubky),
        status => Err(Failure::Retry(format!(
            "GET {base}/firehose answered {status}: cannot tell Hearth from Pubky yet"
        ))),
    }
}

/// Whether the server's `GET /` introduces a Pubky homeserver (0.5 and 0.17 say "Pubky
/// Homeserver"; Hearth answers with its key).
async fn says_pubky(client: &reqwest::Client, base: &str) -> bool {
    let Ok(response) = client
        .get(format!("{base}/"))
        .timeout(REQUEST_TIMEOUT)
        .send()
        .await
    else {
        return false;
    };
    if !response.status().is_success() {
        return false;
    }
    response
        .text()
        .await
        .is_ok_and(|body| body.trim_start().starts_with("Pubky Homeserver"))
}
