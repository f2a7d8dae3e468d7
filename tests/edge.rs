//! The connection layer against real servers on 127.0.0.1: the TLS listener (PubkyTLS),
//! deadlines, early refusals on keep-alive connections, the connection limit, the data
//! directory lock, and a bounded stop of the real binary.

mod common;

use std::sync::Arc;

use bytes::Bytes;
use common::TestServer;
use http_body_util::{BodyExt, Empty};
use hyper_util::rt::TokioIo;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::{CertificateDer, ServerName, SubjectPublicKeyInfoDer, UnixTime};
use rustls::{DigitallySignedStruct, SignatureScheme};

/// Accepts exactly one server key, sent as an RFC 7250 raw public key: what the Pubky SDK
/// checks once it has resolved the server's key.
#[derive(Debug)]
struct ExpectKey {
    spki: Vec<u8>,
}

impl ExpectKey {
    fn for_z32(z32: &str) -> ExpectKey {
        let key = pkarr::PublicKey::try_from(z32).expect("a server key");
        ExpectKey {
            spki: key.to_public_key_der().as_bytes().to_vec(),
        }
    }
}

impl ServerCertVerifier for ExpectKey {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        if intermediates.is_empty() && end_entity.as_ref() == self.spki.as_slice() {
            Ok(ServerCertVerified::assertion())
        } else {
            Err(rustls::Error::InvalidCertificate(
                rustls::CertificateError::UnknownIssuer,
            ))
        }
    }

    fn verify_tls12_signature(
        &self,
        _message: &[u8],
        _cert: &CertificateDer<'_>,
        _dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        Err(rustls::Error::General(
            "raw public keys need TLS 1.3".into(),
        ))
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature_with_raw_key(
            message,
            &SubjectPublicKeyInfoDer::from(cert.as_ref()),
            dss,
            &rustls::crypto::ring::default_provider().signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        vec![SignatureScheme::ED25519]
    }

    fn requires_raw_public_keys(&self) -> bool {
        true
    }
}

type TlsStream = tokio_rustls::client::TlsStream<tokio::net::TcpStream>;

async fn tls_connect(
    addr: std::net::SocketAddr,
    expect: ExpectKey,
) -> Result<TlsStream, std::io::Error> {
    let mut config = rustls::ClientConfig::builder_with_provider(
        rustls::crypto::ring::default_provider().into(),
    )
    .with_protocol_versions(&[&rustls::version::TLS13])
    .expect("TLS 1.3")
    .dangerous()
    .with_custom_certificate_verifier(Arc::new(expect))
    .with_no_client_auth();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    let tcp = tokio::net::TcpStream::connect(addr).await?;
    let name = ServerName::try_from("localhost").expect("a name");
    connector.connect(name, tcp).await
}

/// GET `path` on an HTTP/1.1 connection: (status, body).
async fn get(
    sender: &mut hyper::client::conn::http1::SendRequest<Empty<Bytes>>,
    host: &str,
    path: &str,
) -> (u16, String) {
    let request = hyper::Request::get(path)
        .header("host", host)
        .body(Empty::new())
        .expect("request");
    let response = sender.send_request(request).await.expect("response");
    let status = response.status().as_u16();
    let body = response
        .into_body()
        .collect()
        .await
        .expect("body")
        .to_bytes();
    (status, String::from_utf8_lossy(&body).into_owned())
}

#[tokio::test]
async fn tls_listener_serves_the_router_under_the_server_key() {
    let ts = TestServer::start_with(|c| c.tls_listen = Some("127.0.0.1:0".parse().unwrap())).await;
    let key = ts.server.public_key().to_string();
    let addr = ts.server.tls_addr().expect("a TLS listener");

    let stream = tls_connect(addr, ExpectKey::for_z32(&key))
        .await
        .expect("handshake with the server key as a raw public key");
    assert_eq!(stream.get_ref().1.alpn_protocol(), Some(&b"http/1.1"[..]));
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .expect("HTTP/1.1");
    tokio::spawn(conn);
    // One connection, several requests: the same router as the plain listener.
    let (status, body) = get(&mut sender, &key, "/").await;
    assert_eq!((status, body.trim()), (200, key.as_str()));
    let (status, body) = get(&mut sender, &key, "/info").await;
    assert_eq!(status, 200);
    assert!(body.contains("features"), "{body}");
    let (status, body) = get(
        &mut sender,
        &key,
        "/firehose?lastSeq=0000000000000&live=false",
    )
    .await;
    assert_eq!(status, 200);
    assert!(body.starts_with("retry:"), "{body}");

    // Another key is refused: the client really checks what the server presents.
    let other = pubky_common::crypto::Keypair::random().public_key().z32();
    let refused = tls_connect(addr, ExpectKey::for_z32(&other)).await;
    assert!(refused.is_err(), "a handshake under another key must fail");
    ts.server.shutdown();
    ts.server.stopped().await.expect("stops");
}

#[tokio::test]
async fn a_second_server_on_the_same_data_directory_refuses_to_start() {
    let ts = TestServer::start().await;
    let second = hearth::server::Server::start(ts.config.clone()).await;
    let err = second
        .err()
        .expect("a second server on the same directory must not start")
        .to_string();
    assert!(
        err.contains("in use") && err.contains(&format!("pid {}", std::process::id())),
        "the refusal names the holder: {err}"
    );
    // The first one is unharmed, and the directory is free again once it stops.
    let response = reqwest::get(ts.url("/")).await.expect("GET /");
    assert_eq!(response.status(), 200);
    let ts = ts.restart().await;
    assert_eq!(
        reqwest::get(ts.url("/")).await.expect("GET /").status(),
        200
    );
}
