//! From a homeserver's public key to how to reach it.
//!
//! Reads the homeserver's record (the shape `record` publishes, which is Pubky's) and returns
//! the addresses and the PubkyTLS port from its `HTTPS` record whose target is `.`, and the
//! ICANN domain and HTTP port from the one whose target is a domain, if it has one. The relay
//! uses this to follow a homeserver it only knows by key.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use pkarr::dns::rdata::{RData, SVCParam, SVCB};
use pkarr::{Client, PublicKey, ResolvePolicy, SignedPacket};

use super::record::HTTP_PORT_KEY;

/// How to reach a homeserver.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HomeserverAddress {
    pub public_key: PublicKey,
    /// Addresses for PubkyTLS: the record's `A`/`AAAA` and the `HTTPS` record's hints.
    pub ips: Vec<IpAddr>,
    /// The PubkyTLS port, if the record has a direct (`.`) endpoint.
    pub tls_port: Option<u16>,
    /// An ICANN domain serving plain HTTP(S), if published.
    pub icann_domain: Option<String>,
    /// The HTTP port for that domain (key 65280 for `localhost`, or a `port` parameter).
    pub icann_http_port: Option<u16>,
}

impl HomeserverAddress {
    /// Where to connect for PubkyTLS.
    pub fn tls_addrs(&self) -> Vec<SocketAddr> {
        match self.tls_port {
            Some(port) => self
                .ips
                .iter()
                .map(|ip| SocketAddr::new(*ip, port))
                .collect(),
            None => Vec::new(),
        }
    }

    /// The plain-HTTP base URL of the ICANN endpoint: `http://localhost:PORT` for a local
    /// server, `https://DOMAIN[:PORT]` otherwise.
    pub fn icann_url(&self) -> Option<String> {
        let domain = self.icann_domain.as_deref()?;
        let scheme = if domain == "localhost" {
            "http"
        } else {
            "https"
        };
        Some(match self.icann_http_port {
            Some(port) => format!("{scheme}://{domain}:{port}"),
            None => format!("{scheme}://{domain}"),
        })
    }
}

/// Why a homeserver could not be located.
#[derive(Debug, thiserror::Error)]
pub enum ResolveError {
    #[error("no pkarr record for {0} on the DHT or the relays")]
    NotFound(String),
    #[error("looking up the pkarr record of {key} failed: {source}")]
    Lookup {
        key: String,
        source: pkarr::errors::ResolveError,
    },
    #[error("the pkarr record of {0} names no endpoint (no HTTPS record with a port and an address, nor an ICANN domain)")]
    NoEndpoint(String),
}

/// Resolve `key`'s record (cached while its TTL allows) and read it.
pub async fn resolve_homeserver(
    client: &Client,
    key: &PublicKey,
) -> Result<HomeserverAddress, ResolveError> {
    read_record(&lookup(client, key, ResolvePolicy::CacheFirst).await?)
}

/// The signed packet `key` published, as `policy` finds it.
pub async fn lookup(
    client: &Client,
    key: &PublicKey,
    policy: ResolvePolicy,
) -> Result<SignedPacket, ResolveError> {
    client.resolve(key, policy).await.map_err(|err| match err {
        pkarr::errors::ResolveError::NotFound => ResolveError::NotFound(key.to_z32()),
        source => ResolveError::Lookup {
            key: key.to_z32(),
            source,
        },
    })
}

/// Read a homeserver's record. The lowest priority wins among several of a kind.
pub fn read_record(packet: &SignedPacket) -> Result<HomeserverAddress, ResolveError> {
    let public_key = packet.public_key();
    let mut direct: Option<&SVCB> = None;
    let mut icann: Option<&SVCB> = None;
    let mut ips = Vec::new();
    for record in packet.resource_records("@") {
        match &record.rdata {
            RData::HTTPS(https) => {
                let svcb = &https.0;
                let target = svcb.target.to_string();
                let slot = if target.is_empty() || target == "." {
                    &mut direct
                } else {
                    &mut icann
                };
                if slot.is_none_or(|best| svcb.priority < best.priority) {
                    *slot = Some(svcb);
                }
            }
            RData::A(a) => push_new(&mut ips, Ipv4Addr::from_bits(a.address).into()),
            RData::AAAA(a) => push_new(&mut ips, Ipv6Addr::from_bits(a.address).into()),
            _ => {}
        }
    }

    let mut tls_port = None;
    if let Some(svcb) = direct {
        for param in svcb.iter_params() {
            match param {
                SVCParam::Port(port) => tls_port = Some(*port),
                SVCParam::Ipv4Hint(hints) => hints
                    .iter()
                    .for_each(|ip| push_new(&mut ips, Ipv4Addr::from_bits(*ip).into())),
                SVCParam::Ipv6Hint(hints) => hints
                    .iter()
                    .for_each(|ip| push_new(&mut ips, Ipv6Addr::from_bits(*ip).into())),
                _ => {}
            }
        }
    }
    let icann_domain = icann.map(|svcb| svcb.target.to_string());
    let icann_http_port = icann.and_then(|svcb| {
        svcb.iter_params().find_map(|param| match param {
            SVCParam::Unknown(HTTP_PORT_KEY, bytes) => <[u8; 2]>::try_from(bytes.as_ref())
                .ok()
                .map(u16::from_be_bytes),
            SVCParam::Port(port) => Some(*port),
            _ => None,
        })
    });

    let reachable_directly = tls_port.is_some() && !ips.is_empty();
    if !reachable_directly && icann_domain.is_none() {
        return Err(ResolveError::NoEndpoint(public_key.to_z32()));
    }
    Ok(HomeserverAddress {
        public_key,
        ips,
        tls_port,
        icann_domain,
        icann_http_port,
    })
}

fn push_new(ips: &mut Vec<IpAddr>, ip: IpAddr) {
    if !ips.contains(&ip) {
        ips.push(ip);
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use pkarr::Keypair;

    use super::*;
    use crate::pkarr::record::ServerRecord;
    use crate::pkarr::Network;

    fn server_record(domain: Option<&str>) -> ServerRecord {
        ServerRecord {
            public_ip: Ipv4Addr::LOCALHOST.into(),
            tls_port: 4443,
            http_port: 8080,
            icann_domain: domain.map(str::to_owned),
        }
    }

    fn testnet_client(testnet: &mainline::Testnet) -> Client {
        let mut builder = Network::testnet(&testnet.bootstrap).builder().unwrap();
        builder.dht_request_timeout(Duration::from_millis(500));
        builder.build().unwrap()
    }

    #[test]
    fn reads_what_the_server_publishes() {
        let keypair = Keypair::random();
        let packet = server_record(Some("localhost")).sign(&keypair).unwrap();
        let address = read_record(&packet).unwrap();
        assert_eq!(address.public_key, keypair.public_key());
        assert_eq!(address.ips, [IpAddr::from(Ipv4Addr::LOCALHOST)]);
        assert_eq!(address.tls_port, Some(4443));
        assert_eq!(address.tls_addrs(), ["127.0.0.1:4443".parse().unwrap()]);
        assert_eq!(address.icann_domain.as_deref(), Some("localhost"));
        assert_eq!(address.icann_http_port, Some(8080));
        assert_eq!(
            address.icann_url().as_deref(),
            Some("http://localhost:8080")
        );
    }

    #[test]
    fn a_record_without_endpoints_is_an_error() {
        let keypair = Keypair::random();
        let packet = SignedPacket::builder()
            .address(
                pkarr::dns::Name::new_unchecked("."),
                Ipv4Addr::LOCALHOST.into(),
                60,
            )
            .sign(&keypair)
            .unwrap();
        assert!(matches!(
            read_record(&packet),
            Err(ResolveError::NoEndpoint(_))
        ));
    }

    #[tokio::test]
    async fn resolves_on_a_dht_testnet() {
        let testnet = mainline::Testnet::builder(3).build().unwrap();
        let keypair = Keypair::random();
        let packet = server_record(None).sign(&keypair).unwrap();
        testnet_client(&testnet).publish(&packet).await.unwrap();

        // Another client: nothing cached, the record comes from the DHT.
        let client = testnet_client(&testnet);
        let address = resolve_homeserver(&client, &keypair.public_key())
            .await
            .unwrap();
        assert_eq!(address.tls_addrs(), ["127.0.0.1:4443".parse().unwrap()]);
        assert_eq!(address.icann_domain, None);
        assert_eq!(address.icann_url(), None);

        let unknown = Keypair::random().public_key();
        assert!(matches!(
            resolve_homeserver(&client, &unknown).await,
            Err(ResolveError::NotFound(key)) if key == unknown.to_z32()
        ));
    }
}
