//! A local Mainline DHT for development: a few DHT nodes on 127.0.0.1, the first on a known
//! port that servers and clients bootstrap from (`--pkarr-bootstrap 127.0.0.1:6881`). Nothing
//! of it talks to the public DHT.

use std::net::{Ipv4Addr, SocketAddr};

use mainline::{async_dht::AsyncDht, Dht};

/// The port the SDK's testnet mode bootstraps from (`localhost:6881`).
pub const DEFAULT_PORT: u16 = pubky_common::constants::testnet_ports::BOOTSTRAP;

/// A running local DHT; dropping it stops every node.
pub struct Testnet {
    nodes: Vec<AsyncDht>,
    bootstrap: SocketAddr,
}

impl Testnet {
    /// Start `nodes` DHT nodes on 127.0.0.1, the first on `port` (0: any free port), the others
    /// bootstrapping from it.
    pub async fn start(port: u16, nodes: usize) -> std::io::Result<Testnet> {
        let first = Dht::builder()
            .server_mode()
            .no_bootstrap()
            .bind_address(Ipv4Addr::LOCALHOST)
            .port(port)
            .build()?
            .as_async();
        let bootstrap = SocketAddr::from(first.info().await.local_addr());
        let mut all = vec![first];
        for _ in 1..nodes.max(1) {
            let node = Dht::builder()
                .server_mode()
                .bootstrap(&[bootstrap])
                .bind_address(Ipv4Addr::LOCALHOST)
                .port(0)
                .build()?;
            all.push(node.as_async());
        }
        Ok(Testnet {
            nodes: all,
            bootstrap,
        })
    }

    /// Where servers and clients bootstrap from.
    pub fn bootstrap(&self) -> SocketAddr {
        self.bootstrap
    }

    pub fn len(&self) -> usize {
        self.nodes.len()
    }

    pub fn is_empty(&self) -> bool {
        self.nodes.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pkarr::record::ServerRecord;
    use crate::pkarr::Network;

    #[tokio::test]
    async fn records_published_on_it_resolve() {
        let testnet = Testnet::start(0, 3).await.unwrap();
        assert_eq!(testnet.len(), 3);
        let network = Network::testnet(&[testnet.bootstrap().to_string()]);
        let keypair = pkarr::Keypair::random();
        let record = ServerRecord {
            public_ip: Ipv4Addr::LOCALHOST.into(),
            tls_port: 1,
            http_port: 2,
            icann_domain: None,
        };
        let packet = record.sign(&keypair).unwrap();
        network.client().unwrap().publish(&packet).await.unwrap();
        let found = network
            .client()
            .unwrap()
            .resolve(&keypair.public_key(), pkarr::ResolvePolicy::NetworkOnly)
            .await
            .unwrap();
        assert_eq!(found.as_bytes(), packet.as_bytes());
    }
}
