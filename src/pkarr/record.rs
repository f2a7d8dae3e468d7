//! The server's own pkarr record: what a client needs to reach this homeserver.
//!
//! Signed with the server key, at the apex (the key itself), every record with TTL 3600, in
//! the order Pubky's homeserver writes them:
//!
//! 1. `HTTPS 1 . port=<TLS port> ipv4hint=<IP>` (`ipv6hint` for IPv6): PubkyTLS, what native
//!    clients use;
//! 2. with an ICANN domain D, `HTTPS 10 D`: the fallback for browsers, which cannot speak
//!    PubkyTLS; when D is `localhost` it carries SvcParam key 65280 = the HTTP port, as two
//!    big-endian bytes (browsers and the JS SDK read it);
//! 3. `A <IP>` (`AAAA` for IPv6).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use pkarr::dns::rdata::{RData, SVCParam, SVCB};
use pkarr::dns::Name;
use pkarr::{Keypair, SignedPacket};

/// Every record's TTL, in seconds.
pub const TTL: u32 = 3600;
/// Priority of the PubkyTLS record (lower is preferred by DNS clients).
pub const TLS_PRIORITY: u16 = 1;
/// Priority of the ICANN-domain record.
pub const ICANN_PRIORITY: u16 = 10;
/// The private SvcParam key carrying the HTTP port of a `localhost` ICANN record.
pub const HTTP_PORT_KEY: u16 = pubky_common::constants::reserved_param_keys::HTTP_PORT;

/// What the record advertises.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerRecord {
    /// The address clients connect to (the public one, not necessarily the bound one).
    pub public_ip: IpAddr,
    /// The port of the PubkyTLS listener as seen from outside.
    pub tls_port: u16,
    /// The port of the plain HTTP listener as seen from outside (only published for
    /// `localhost`).
    pub http_port: u16,
    /// An ICANN domain serving the same routes over ordinary HTTP(S), for browsers.
    pub icann_domain: Option<String>,
}

/// A record that cannot be built.
#[derive(Debug, thiserror::Error)]
pub enum RecordError {
    #[error("icann_domain {0:?} is not a domain name (letters, digits, '-' and dots)")]
    Domain(String),
    #[error("cannot sign the server's record: {0}")]
    Sign(#[from] pkarr::errors::SignedPacketBuildError),
}

impl ServerRecord {
    /// Sign the record with the server key, timestamped now.
    pub fn sign(&self, keypair: &Keypair) -> Result<SignedPacket, RecordError> {
        let apex = root();
        let mut packet = SignedPacket::builder();

        let mut tls = SVCB::new(TLS_PRIORITY, root());
        tls.set_port(self.tls_port);
        match self.public_ip {
            IpAddr::V4(ip) => tls.set_ipv4hint(&[ip.to_bits()]),
            IpAddr::V6(ip) => tls.set_ipv6hint(&[ip.to_bits()]),
        }
        packet = packet.https(apex.clone(), tls, TTL);

        let http_port = self.http_port.to_be_bytes();
        if let Some(domain) = &self.icann_domain {
            check_domain(domain)?;
            let target = Name::new(domain).map_err(|_| RecordError::Domain(domain.clone()))?;
            let mut icann = SVCB::new(ICANN_PRIORITY, target);
            if domain == "localhost" {
                icann.set_param(SVCParam::Unknown(
                    HTTP_PORT_KEY,
                    http_port.as_slice().into(),
                ));
            }
            packet = packet.https(apex.clone(), icann, TTL);
        }

        packet = packet.address(apex, self.public_ip, TTL);
        Ok(packet.sign(keypair)?)
    }
}

/// A signed packet's records, one line each, the way `dig` prints them: name relative to the
/// key (`@` for the apex), TTL, class, type and data; SvcParams as `key=value`, unknown keys as
/// `key<N>=<hex>`.
pub fn dig(packet: &SignedPacket) -> Vec<String> {
    let apex = packet.public_key().to_z32();
    packet
        .all_resource_records()
        .map(|rr| {
            let name = rr.name.to_string();
            let name = match name.strip_suffix(apex.as_str()) {
                Some("") => "@".to_owned(),
                Some(sub) => sub.trim_end_matches('.').to_owned(),
                None => name,
            };
            let data = match &rr.rdata {
                RData::HTTPS(https) => svcb_line("HTTPS", &https.0),
                RData::SVCB(svcb) => svcb_line("SVCB", svcb),
                RData::A(a) => format!("A {}", Ipv4Addr::from_bits(a.address)),
                RData::AAAA(a) => format!("AAAA {}", Ipv6Addr::from_bits(a.address)),
                other => format!("{other:?}"),
            };
            format!("{name} {} IN {data}", rr.ttl)
        })
        .collect()
}

fn svcb_line(kind: &str, svcb: &SVCB) -> String {
    let target = match svcb.target.to_string() {
        root if root.is_empty() => ".".to_owned(),
        name => name,
    };
    let mut line = format!("{kind} {} {target}", svcb.priority);
    for param in svcb.iter_params() {
        let text = match param {
            SVCParam::Port(port) => format!("port={port}"),
            SVCParam::Ipv4Hint(ips) => format!(
                "ipv4hint={}",
                join(ips.iter().map(|ip| Ipv4Addr::from_bits(*ip)))
            ),
            SVCParam::Ipv6Hint(ips) => format!(
                "ipv6hint={}",
                join(ips.iter().map(|ip| Ipv6Addr::from_bits(*ip)))
            ),
            SVCParam::Unknown(key, value) => {
                let hex: String = value.iter().map(|b| format!("{b:02x}")).collect();
                format!("key{key}={hex}")
            }
            other => format!("key{}", other.key_code()),
        };
        line.push(' ');
        line.push_str(&text);
    }
    line
}

fn join(items: impl Iterator<Item = impl std::fmt::Display>) -> String {
    items
        .map(|item| item.to_string())
        .collect::<Vec<_>>()
        .join(",")
}

/// `.`: the apex as a record name, and "this same host" as an SVCB target.
fn root() -> Name<'static> {
    Name::new_unchecked(".")
}

/// A plain DNS host name: labels of letters, digits and inner hyphens, at most 253 bytes.
pub fn check_domain(domain: &str) -> Result<(), RecordError> {
    let label_ok = |label: &str| {
        (1..=63).contains(&label.len())
            && label
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-')
            && !label.starts_with('-')
            && !label.ends_with('-')
    };
    if domain.len() > 253 || !domain.split('.').all(label_ok) {
        return Err(RecordError::Domain(domain.to_owned()));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::net::Ipv4Addr;

    use super::*;

    fn record(ip: IpAddr, domain: Option<&str>) -> ServerRecord {
        ServerRecord {
            public_ip: ip,
            tls_port: 6288,
            http_port: 6287,
            icann_domain: domain.map(str::to_owned),
        }
    }

    #[test]
    fn ipv4_record_without_domain() {
        let keypair = Keypair::random();
        let packet = record([203, 0, 113, 7].into(), None)
            .sign(&keypair)
            .unwrap();
        assert_eq!(packet.public_key(), keypair.public_key());
        assert_eq!(
            dig(&packet),
            [
                "@ 3600 IN HTTPS 1 . port=6288 ipv4hint=203.0.113.7",
                "@ 3600 IN A 203.0.113.7"
            ]
        );
    }

    #[test]
    fn localhost_domain_carries_the_http_port() {
        let packet = record(Ipv4Addr::LOCALHOST.into(), Some("localhost"))
            .sign(&Keypair::random())
            .unwrap();
        assert_eq!(
            dig(&packet),
            [
                "@ 3600 IN HTTPS 1 . port=6288 ipv4hint=127.0.0.1",
                // 6287 = 0x188f
                "@ 3600 IN HTTPS 10 localhost key65280=188f",
                "@ 3600 IN A 127.0.0.1"
            ]
        );
    }

    #[test]
    fn other_domains_carry_no_port() {
        let packet = record(
            "2001:db8::1".parse().unwrap(),
            Some("homeserver.example.org"),
        )
        .sign(&Keypair::random())
        .unwrap();
        assert_eq!(
            dig(&packet),
            [
                "@ 3600 IN HTTPS 1 . port=6288 ipv6hint=2001:db8::1",
                "@ 3600 IN HTTPS 10 homeserver.example.org",
                "@ 3600 IN AAAA 2001:db8::1"
            ]
        );
    }

    #[test]
    fn bad_domains_are_refused() {
        for domain in ["", "-a.org", "a..org", "a b.org", "exa_mple.org"] {
            assert!(check_domain(domain).is_err(), "{domain:?}");
            assert!(record(Ipv4Addr::LOCALHOST.into(), Some(domain))
                .sign(&Keypair::random())
                .is_err());
        }
        assert!(check_domain("homeserver.pubky.app").is_ok());
    }
}
