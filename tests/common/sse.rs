//! SSE on the client side for the tests: messages parsed as a client sees them, a stream
//! over reqwest, and a seeded generator for the tests that pick random moments.
#![allow(dead_code)]

use std::time::Duration;

use futures_util::StreamExt;
use hearth::ids as id;

/// Long enough for anything that works; only a hang reaches it.
pub const GUARD: Duration = Duration::from_secs(60);

/// One SSE message as a client sees it.
#[derive(Debug, Default, Clone)]
pub struct Message {
    pub id: Option<String>,
    pub event: Option<String>,
    pub data: Vec<String>,
    pub retry: Option<String>,
    pub comment: bool,
}

impl Message {
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.data.join("\n")).expect("data is JSON")
    }

    pub fn seq(&self) -> u64 {
        id::decode(self.id.as_deref().expect("an id line")).expect("a valid id")
    }
}

/// Parse SSE messages out of a growing buffer.
pub fn take_message(buf: &mut Vec<u8>) -> Option<Message> {
    let end = buf.windows(2).position(|w| w == b"\n\n")?;
    let block: Vec<u8> = buf.drain(..end + 2).collect();
    let text = String::from_utf8(block).expect("SSE is UTF-8");
    let mut message = Message::default();
    for line in text.trim_end_matches('\n').split('\n') {
        if line.starts_with(':') {
            message.comment = true;
            continue;
        }
        let (field, value) = line.split_once(": ").unwrap_or((line, ""));
        match field {
            "id" => message.id = Some(value.to_string()),
            "event" => message.event = Some(value.to_string()),
            "data" => message.data.push(value.to_string()),
            "retry" => message.retry = Some(value.to_string()),
            other => panic!("unexpected SSE field {other:?} in {text:?}"),
        }
    }
    Some(message)
}

/// An SSE stream over reqwest.
pub struct Sse {
    body: std::pin::Pin<Box<dyn futures_util::Stream<Item = reqwest::Result<bytes::Bytes>> + Send>>,
    buf: Vec<u8>,
}

impl Sse {
    pub fn new(response: reqwest::Response) -> Sse {
        Sse {
            body: Box::pin(response.bytes_stream()),
            buf: Vec::new(),
        }
    }

    /// The next message (comments and `retry:` included); None once the server closed.
    pub async fn next_any(&mut self) -> Option<Message> {
        tokio::time::timeout(GUARD, self.next_unguarded())
            .await
            .unwrap_or_else(|_| panic!("no SSE message within {GUARD:?}"))
    }

    pub async fn next_unguarded(&mut self) -> Option<Message> {
        loop {
            if let Some(message) = take_message(&mut self.buf) {
                return Some(message);
            }
            match self.body.next().await {
                None => {
                    assert!(self.buf.is_empty(), "stream ended mid-message");
                    return None;
                }
                Some(chunk) => self.buf.extend_from_slice(&chunk.expect("stream chunk")),
            }
        }
    }

    /// The next event, skipping comments and `retry:`; keep-alives do not reset the guard.
    pub async fn next_event(&mut self) -> Option<Message> {
        let next = async {
            loop {
                let message = self.next_unguarded().await?;
                if message.event.is_some() {
                    return Some(message);
                }
            }
        };
        tokio::time::timeout(GUARD, next)
            .await
            .unwrap_or_else(|_| panic!("no SSE event within {GUARD:?}"))
    }

    /// The next event, or None once the stream ended or broke (a server that was killed):
    /// for clients that expect to reconnect. No guard: the caller bounds the wait.
    pub async fn next_event_or_end(&mut self) -> Option<Message> {
        loop {
            if let Some(message) = take_message(&mut self.buf) {
                if message.event.is_some() {
                    return Some(message);
                }
                continue;
            }
            match self.body.next().await {
                Some(Ok(chunk)) => self.buf.extend_from_slice(&chunk),
                None | Some(Err(_)) => return None,
            }
        }
    }

    /// Every event until the server closes the stream.
    pub async fn all_events(&mut self) -> Vec<Message> {
        let mut events = Vec::new();
        while let Some(message) = self.next_event().await {
            events.push(message);
        }
        events
    }
}

/// A small deterministic generator; the seed is printed so a failure can be replayed.
pub struct Rng(pub u64);

impl Rng {
    pub fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    pub fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

pub fn seed() -> u64 {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(1);
    nanos | 1
}
