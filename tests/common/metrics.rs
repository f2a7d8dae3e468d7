//! Reading a server's `/metrics` as Prometheus does (kept apart from `common`, which the load
//! tool's tests share too, without a Prometheus parser).

use std::net::SocketAddr;

/// `GET /metrics` on a metrics listener, parsed by a Prometheus text parser.
pub async fn scrape(http: &reqwest::Client, addr: SocketAddr) -> Scrape {
    let response = http
        .get(format!("http://{addr}/metrics"))
        .send()
        .await
        .expect("scrape");
    assert_eq!(response.status(), reqwest::StatusCode::OK);
    let text = response.text().await.expect("metrics text");
    let lines = text.lines().map(|l| Ok(l.to_string()));
    let parsed = prometheus_parse::Scrape::parse(lines).expect("valid Prometheus text");
    Scrape { text, parsed }
}

pub struct Scrape {
    pub text: String,
    pub parsed: prometheus_parse::Scrape,
}

impl Scrape {
    /// The largest value of `name` among the samples with every label of `labels`.
    pub fn value(&self, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
        self.parsed
            .samples
            .iter()
            .filter(|s| s.metric == name)
            .filter(|s| labels.iter().all(|(k, v)| s.labels.get(k) == Some(v)))
            .map(|s| match s.value {
                prometheus_parse::Value::Counter(v)
                | prometheus_parse::Value::Gauge(v)
                | prometheus_parse::Value::Untyped(v) => v,
                _ => 0.0,
            })
            .reduce(f64::max)
    }
}
