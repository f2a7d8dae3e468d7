//! Reading a Pubky homeserver: pages of `GET /events/?cursor=&limit=`, each event with its
//! exact id.
//!
//! A page gives the id of its last line only (`cursor: <id>`), and every event stored needs
//! its own (`hs_seq`, the homeserver's order, the dedupe of a diamond). Ids are strictly
//! increasing integers: Pubky 0.17 writes them in decimal, global to the server (private
//! events and the events of other paths take ids too, so a public page has gaps); Pubky 0.5
//! writes 13-character timestamps. So when a page of `n` lines after cursor `a` ends at id
//! `b` and `b - a == n`, its ids are exactly `a+1..=b`. Otherwise the page is halved: reading
//! its first half again (`limit = n/2`) reveals the id in the middle, and each half is settled
//! the same way, down to single lines, whose id is known. A 0.17 page with a few gaps costs a
//! few requests; 0.5 timestamps are never contiguous, so a 0.5 source is read one event per
//! request (`limit=1`) from the start. 0.5 refuses `cursor=0` (400): the first request sends
//! no cursor.
//!
//! A Hearth homeserver read this way (`pubky+http://` at a server whose `GET /` answers a key)
//! numbers its `/events/` with its firehose sequence: its events are stored with `hs_seq` in
//! Hearth's form (13 Crockford characters), as its `/firehose` would give them, so that the
//! two ways of reading it agree on each event.
//!
//! Nothing in a page says how far behind we are, except that a page short of its limit means
//! caught up (`lag` 0); a caught-up source is asked again after `Settings::poll`. A rewind
//! (the server restored to an older state) cannot be told from a quiet server here.

use super::follow::{describe, Failure, Outcome, Session, REQUEST_TIMEOUT};
use super::hearth::{check_path, KeyCheck};
use super::ingest::Incoming;
use super::source::Endpoint;
use super::tables::order;
use super::State;
use crate::ids::{self, Id};
use crate::keys::USER_KEY_LEN;
use crate::log::EventKind;

/// Lines per page (Pubky's maximum).
const PAGE: usize = 1000;
/// In one-event-per-request reading, events per batch stored.
const STEP_BATCH: usize = 100;

/// How a homeserver writes its ids.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Style {
    /// Pubky 0.17: decimal.
    Decimal,
    /// Pubky 0.5: 13 Crockford characters of a timestamp.
    Timestamp,
}

/// An id, as a number and in the source's writing.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Cursor {
    value: u64,
    style: Style,
}

impl Cursor {
    fn parse(text: &str) -> Option<Cursor> {
        if text.len() == ids::ID_LEN && text.starts_with('0') {
            let value = ids::decode(text).ok()?;
            return Some(Cursor {
                value,
                style: Style::Timestamp,
            });
        }
        // The same rule as the homeserver marks: digits, no leading zero.
        order(text)?;
        Some(Cursor {
            value: text.parse().ok()?,
            style: Style::Decimal,
        })
    }

    fn text(&self) -> String {
        match self.style {
            Style::Decimal => self.value.to_string(),
            Style::Timestamp => Id(self.value).to_string(),
        }
    }

    fn at(&self, value: u64) -> Cursor {
        Cursor {
            value,
            style: self.style,
        }
    }
}

/// One `/events/` answer.
struct Page {
    lines: Vec<String>,
    last: Option<Cursor>,
}

/// Follow a Pubky source after `cursor` until it fails.
pub(crate) async fn follow(
    session: &mut Session<'_>,
    endpoint: &Endpoint,
    hs: &str,
    hearth: bool,
    cursor: Option<String>,
) -> Outcome {
    let mut cursor = match cursor.as_deref() {
        None => None,
        Some(text) => Some(Cursor::parse(text).ok_or_else(|| {
            Failure::Fatal(format!(
                "the stored cursor {text:?} is not a Pubky id: was this source once a Hearth \
                 one? remove it with forget=true to start over"
            ))
        })?),
    };
    let mut reader = PageReader {
        session,
        endpoint,
        hs,
        hearth,
        keys: KeyCheck::default(),
    };
    loop {
        let caught_up = match cursor.clone() {
            Some(at) if at.style == Style::Decimal => reader.page(&at, &mut cursor).await?,
            _ => reader.steps(&mut cursor).await?,
        };
        reader.session.status.lock().lag = caught_up.then_some(0);
        if caught_up {
            tokio::time::sleep(reader.session.context.settings.poll).await;
        }
    }
}

struct PageReader<'s, 'a> {
    session: &'s mut Session<'a>,
    endpoint: &'s Endpoint,
    hs: &'s str,
    /// The source is a Hearth server: its decimal ids are its firehose sequence.
    hearth: bool,
    keys: KeyCheck,
}

impl PageReader<'_, '_> {
    /// Read a page of decimal ids after `at`, settle each line's id, store it. True when the
    /// page was short of its limit (caught up).
    async fn page(&mut self, at: &Cursor, cursor: &mut Option<Cursor>) -> Result<bool, Failure> {
        let page = self.fetch(Some(at), PAGE).await?;
        let Some(last) = page.last.clone() else {
            return Ok(true);
        };
        let ids = self.exact_ids(at, &page.lines, &last).await?;
        let caught_up = page.lines.len() < PAGE;
        let mut events = Vec::with_capacity(page.lines.len());
        let mut skipped = 0;
        for (line, id) in page.lines.iter().zip(ids) {
            match self.incoming(line, &at.at(id)) {
                Ok(incoming) => events.push(incoming),
                Err(reason) => {
                    skipped += 1;
                    tracing::warn!(hs = self.hs, id, "skipped an event: {reason}");
                }
            }
        }
        let follows = Some(at.text());
        self.session
            .commit(self.hs, events, skipped, follows, Some(last.text()))
            .await?;
        *cursor = Some(last);
        Ok(caught_up)
    }

    /// Read one event per request (0.5 ids, or the very first event of any source), storing
    /// them `STEP_BATCH` at a time. True once caught up.
    async fn steps(&mut self, cursor: &mut Option<Cursor>) -> Result<bool, Failure> {
        let mut events = Vec::new();
        let mut skipped = 0;
        let mut last: Option<Cursor> = None;
        let mut caught_up = false;
        while events.len() + (skipped as usize) < STEP_BATCH {
            let after = last.as_ref().or(cursor.as_ref());
            let page = self.fetch(after, 1).await?;
            let (Some(id), [line]) = (page.last, page.lines.as_slice()) else {
                caught_up = true;
                break;
            };
            match self.incoming(line, &id) {
                Ok(incoming) => events.push(incoming),
                Err(reason) => {
                    skipped += 1;
                    tracing::warn!(hs = self.hs, id = id.text(), "skipped an event: {reason}");
                }
            }
            let decimal = id.style == Style::Decimal;
            last = Some(id);
            // A decimal source is read a page at a time from here on.
            if decimal {
                break;
            }
        }
        if let Some(last) = last {
            let follows = cursor.as_ref().map(Cursor::text);
            self.session
                .commit(self.hs, events, skipped, follows, Some(last.text()))
                .await?;
            *cursor = Some(last);
        }
        Ok(caught_up)
    }

    /// The id of each line of a page after `after` ending at `last` (see the module's notes).
    async fn exact_ids(
        &mut self,
        after: &Cursor,
        lines: &[String],
        last: &Cursor,
    ) -> Result<Vec<u64>, Failure> {
        let mut ids = vec![0u64; lines.len()];
        // Stretches of lines [lo, hi) whose ids lie in (a, b], the line hi-1 having id b.
        let mut stretches = vec![(after.value, 0, lines.len(), last.value)];
        while let Some((a, lo, hi, b)) = stretches.pop() {
            let n = (hi - lo) as u64;
            let span = b.checked_sub(a).filter(|&span| span >= n).ok_or_else(|| {
                Failure::Retry(format!(
                    "{n} events between ids {a} and {b}: the source's ids are not increasing"
                ))
            })?;
            if span == n {
                for (slot, id) in ids[lo..hi].iter_mut().zip(a + 1..=b) {
                    *slot = id;
                }
                continue;
            }
            if n == 1 {
                ids[lo] = b;
                continue;
            }
            let mid = lo + (hi - lo) / 2;
            let half = self.fetch(Some(&after.at(a)), mid - lo).await?;
            let m = match half.last {
                Some(m) if half.lines == lines[lo..mid] && a < m.value && m.value < b => m.value,
                _ => {
                    return Err(Failure::Retry(
                        "the source's feed changed while it was read again".into(),
                    ))
                }
            };
            stretches.push((m, mid, hi, b));
            stretches.push((a, lo, mid, m));
        }
        Ok(ids)
    }

    async fn fetch(&mut self, after: Option<&Cursor>, limit: usize) -> Result<Page, Failure> {
        // Ids are digits and letters: nothing to escape.
        let path = match after {
            Some(after) => format!("/events/?cursor={}&limit={limit}", after.text()),
            None => format!("/events/?limit={limit}"),
        };
        let request = self
            .session
            .client
            .get(self.endpoint.url(&path))
            .timeout(REQUEST_TIMEOUT);
        let failed = |err: reqwest::Error| {
            Failure::Retry(format!(
                "GET {}/events/: {}",
                self.endpoint.base,
                describe(&err)
            ))
        };
        let response = request.send().await.map_err(failed)?;
        let status = response.status();
        let body = response.text().await.map_err(failed)?;
        if !status.is_success() {
            return Err(Failure::Retry(format!(
                "GET {}/events/ answered {status}: {}",
                self.endpoint.base,
                body.trim()
            )));
        }
        self.session.set_state(State::Following);
        let page = parse_page(&body).map_err(Failure::Retry)?;
        if page.lines.len() > limit {
            return Err(Failure::Retry(format!(
                "asked for {limit} events, the source sent {}",
                page.lines.len()
            )));
        }
        Ok(page)
    }

    /// A line (`PUT pubky://<z32><path>`) with its id, checked.
    fn incoming(&mut self, line: &str, id: &Cursor) -> Result<Incoming, String> {
        let (kind, rest) = match line.split_once(' ') {
            Some(("PUT", rest)) => (EventKind::Put, rest),
            Some(("DEL", rest)) => (EventKind::Del, rest),
            _ => return Err(format!("{line:?} is not a PUT or DEL line")),
        };
        let key = rest
            .strip_prefix("pubky://")
            .filter(|key| key.len() > USER_KEY_LEN && key.is_char_boundary(USER_KEY_LEN))
            .ok_or_else(|| format!("{rest:?} is not pubky://<user><path>"))?;
        self.keys.check(&key[..USER_KEY_LEN])?;
        check_path(&key[USER_KEY_LEN..])?;
        let hs_seq = match (self.hearth, id.style) {
            (true, Style::Decimal) => Id(id.value).to_string(),
            _ => id.text(),
        };
        let order = order(&hs_seq).ok_or_else(|| format!("{hs_seq:?} is not an event id"))?;
        Ok(Incoming {
            kind,
            key: key.to_string(),
            ts_ms: None,
            hash: None,
            size: None,
            hs: None,
            hs_seq,
            order,
        })
    }
}

/// Lines, then `cursor: <id>` when there is at least one line; an empty body is no events.
fn parse_page(body: &str) -> Result<Page, String> {
    if body.trim().is_empty() {
        return Ok(Page {
            lines: Vec::new(),
            last: None,
        });
    }
    let mut lines: Vec<String> = body
        .split('\n')
        .map(|line| line.strip_suffix('\r').unwrap_or(line).to_string())
        .collect();
    while lines.last().is_some_and(String::is_empty) {
        lines.pop();
    }
    let last = lines
        .pop()
        .and_then(|line| line.strip_prefix("cursor: ").map(str::to_string))
        .ok_or("a page of events without its final `cursor:` line")?;
    let last =
        Cursor::parse(last.trim()).ok_or_else(|| format!("cursor {last:?} is not a Pubky id"))?;
    if lines.is_empty() {
        return Err("a `cursor:` line without events".into());
    }
    Ok(Page {
        lines,
        last: Some(last),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cursors_in_both_styles() {
        let dec = Cursor::parse("42").unwrap();
        assert_eq!(
            (dec.value, dec.style, dec.text()),
            (42, Style::Decimal, "42".into())
        );
        assert_eq!(dec.at(43).text(), "43");
        let ts = Cursor::parse("0033F9K3ZJ1E0").unwrap();
        assert_eq!(ts.style, Style::Timestamp);
        assert_eq!(ts.text(), "0033F9K3ZJ1E0");
        for bad in ["", "042", "x", "0033f9k3zj1e0", "-1"] {
            assert_eq!(Cursor::parse(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn pages() {
        let page = parse_page("PUT pubky://a/pub/x\nDEL pubky://a/pub/y\ncursor: 17").unwrap();
        assert_eq!(
            page.lines,
            vec!["PUT pubky://a/pub/x", "DEL pubky://a/pub/y"]
        );
        assert_eq!(page.last.map(|c| c.value), Some(17));
        assert!(parse_page("").unwrap().lines.is_empty());
        assert!(parse_page("PUT pubky://a/pub/x").is_err());
        assert!(parse_page("cursor: 5").is_err());
        assert!(parse_page("PUT x\ncursor: nope").is_err());
    }
}
