//! TLS and mutual-TLS listeners, against rumqttc 0.24 (rustls) and mosquitto_pub/sub
//! (OpenSSL). Certificates are made at test time with rcgen: a CA, a server certificate for
//! localhost and 127.0.0.1, client certificates from that CA (valid and expired) and one from
//! another CA.
//!
//! Every server runs on its test's runtime and port 0; passing tests shut it down, and a
//! failing test's runtime drop closes it.

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, KeyPair,
    KeyUsagePurpose,
};
use rumqttc::{
    AsyncClient, ConnectReturnCode, Event, EventLoop, MqttOptions, Packet, QoS, TlsConfiguration,
    Transport,
};
use std::future::Future;
use std::path::{Path, PathBuf};
use std::time::Duration;
use thingmq_server::{Config, Server, ServerHandle};

const WAIT: Duration = Duration::from_secs(10);

async fn within<T>(what: &str, fut: impl Future<Output = T>) -> T {
    match tokio::time::timeout(WAIT, fut).await {
        Ok(v) => v,
        Err(_) => panic!("timed out after {WAIT:?} waiting for {what}"),
    }
}

struct Ca {
    cert: rcgen::Certificate,
    key: KeyPair,
}

fn ca(name: &str) -> Ca {
    let mut p = CertificateParams::new(Vec::<String>::new()).unwrap();
    p.distinguished_name.push(DnType::CommonName, name);
    p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    p.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    let key = KeyPair::generate().unwrap();
    let cert = p.self_signed(&key).unwrap();
    Ca { cert, key }
}

/// A certificate and its key, both PEM.
struct Leaf {
    cert: String,
    key: String,
}

fn leaf(ca: &Ca, cn: &str, sans: &[&str], usage: ExtendedKeyUsagePurpose, expired: bool) -> Leaf {
    let sans: Vec<String> = sans.iter().map(|s| s.to_string()).collect();
    let mut p = CertificateParams::new(sans).unwrap();
    p.distinguished_name.push(DnType::CommonName, cn);
    p.extended_key_usages = vec![usage];
    if expired {
        p.not_before = rcgen::date_time_ymd(2020, 1, 1);
        p.not_after = rcgen::date_time_ymd(2021, 1, 1);
    }
    let key = KeyPair::generate().unwrap();
    let cert = p.signed_by(&key, &ca.cert, &ca.key).unwrap();
    Leaf {
        cert: cert.pem(),
        key: key.serialize_pem(),
    }
}

/// Every certificate a test needs, written to a temporary directory.
struct Pki {
    dir: tempfile::TempDir,
    ca_pem: String,
    client: Leaf,
    expired: Leaf,
    stranger: Leaf,
}

impl Pki {
    fn new() -> Pki {
        let dir = tempfile::tempdir().unwrap();
        let ca = ca("thingmq test CA");
        let other = ca_other();
        let server = leaf(
            &ca,
            "thingmq test server",
            &["localhost", "127.0.0.1"],
            ExtendedKeyUsagePurpose::ServerAuth,
            false,
        );
        let client_usage = || ExtendedKeyUsagePurpose::ClientAuth;
        let client = leaf(&ca, "device-42", &[], client_usage(), false);
        let expired = leaf(&ca, "device-old", &[], client_usage(), true);
        let stranger = leaf(&other, "device-42", &[], client_usage(), false);
        let pki = Pki {
            ca_pem: ca.cert.pem(),
            dir,
            client,
            expired,
            stranger,
        };
        pki.write("ca.pem", &pki.ca_pem);
        pki.write("server.pem", &server.cert);
        pki.write("server.key", &server.key);
        pki.write("client.pem", &pki.client.cert);
        pki.write("client.key", &pki.client.key);
        pki
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    fn write(&self, name: &str, text: &str) {
        std::fs::write(self.path(name), text).unwrap();
    }

    /// A `[[listeners]]` table for a TLS listener on port 0, with `extra` keys.
    fn listener(&self, extra: &str) -> String {
        format!(
            "[[listeners]]\nbind = \"127.0.0.1:0\"\nprotocol = \"tls\"\ncert_file = {:?}\nkey_file = {:?}\n{extra}\n[sys]\ninterval_secs = 0\n",
            self.path("server.pem"),
            self.path("server.key"),
        )
    }

    fn mtls_listener(&self, extra: &str) -> String {
        self.listener(&format!(
            "client_ca_file = {:?}\n{extra}",
            self.path("ca.pem")
        ))
    }
}

fn ca_other() -> Ca {
    ca("some other CA")
}

async fn start(toml: &str) -> (ServerHandle, u16) {
    let config = Config::from_toml(toml).expect("test config is valid");
    let handle = within("server start", Server::start(config))
        .await
        .expect("server starts");
    let port = handle.local_addrs()[0].port();
    (handle, port)
}

fn options(id: &str, port: u16, ca: &str, client: Option<&Leaf>) -> MqttOptions {
    let mut o = MqttOptions::new(id, "localhost", port);
    o.set_keep_alive(Duration::from_secs(30));
    o.set_transport(Transport::tls_with_config(TlsConfiguration::Simple {
        ca: ca.as_bytes().to_vec(),
        alpn: None,
        client_auth: client.map(|l| (l.cert.clone().into_bytes(), l.key.clone().into_bytes())),
    }));
    o
}

/// Connects and returns the client once CONNACK (success) arrived, or the error.
async fn connect(o: MqttOptions) -> Result<(AsyncClient, EventLoop), String> {
    let (client, mut eventloop) = AsyncClient::new(o, 10);
    match within("CONNACK or an error", eventloop.poll()).await {
        Ok(Event::Incoming(Packet::ConnAck(ack))) if ack.code == ConnectReturnCode::Success => {
            Ok((client, eventloop))
        }
        other => Err(format!("{other:?}")),
    }
}

/// Subscribes to `topic`, publishes to it and waits for the message to come back.
async fn round_trip(client: &AsyncClient, eventloop: &mut EventLoop, topic: &str) {
    client.subscribe(topic, QoS::AtLeastOnce).await.unwrap();
    loop {
        if let Event::Incoming(Packet::SubAck(_)) =
            within("SUBACK", eventloop.poll()).await.unwrap()
        {
            break;
        }
    }
    client
        .publish(topic, QoS::AtLeastOnce, false, b"over tls".to_vec())
        .await
        .unwrap();
    loop {
        if let Event::Incoming(Packet::Publish(p)) =
            within("the PUBLISH back", eventloop.poll()).await.unwrap()
        {
            assert_eq!(p.topic, topic);
            assert_eq!(&p.payload[..], b"over tls");
            break;
        }
    }
}

#[tokio::test]
async fn client_publishes_and_subscribes_over_tls() {
    let pki = Pki::new();
    let (server, port) = start(&pki.listener("")).await;
    let (client, mut eventloop) = connect(options("tls-1", port, &pki.ca_pem, None))
        .await
        .expect("TLS client connects");
    round_trip(&client, &mut eventloop, "tls/echo").await;
    server.shutdown().await;
}

#[tokio::test]
async fn a_burst_larger_than_the_socket_buffers_arrives_whole_over_tls() {
    let pki = Pki::new();
    let (server, port) = start(&pki.listener("")).await;
    let (client, mut eventloop) = connect(options("tls-burst", port, &pki.ca_pem, None))
        .await
        .expect("TLS client connects");
    client.subscribe("burst", QoS::AtMostOnce).await.unwrap();
    loop {
        if let Event::Incoming(Packet::SubAck(_)) =
            within("SUBACK", eventloop.poll()).await.unwrap()
        {
            break;
        }
    }
    // 4 MB through one TLS connection: writes are partial and the last bytes of the burst
    // must still be flushed out of the TLS buffers.
    const COUNT: usize = 512;
    let payload = vec![7u8; 8 * 1024];
    let publisher = client.clone();
    let sending = tokio::spawn(async move {
        for _ in 0..COUNT {
            publisher
                .publish("burst", QoS::AtMostOnce, false, payload.clone())
                .await
                .unwrap();
        }
    });
    let mut received = 0;
    while received < COUNT {
        if let Event::Incoming(Packet::Publish(p)) =
            within("the burst", eventloop.poll()).await.unwrap()
        {
            assert_eq!(p.payload.len(), 8 * 1024);
            received += 1;
        }
    }
    sending.await.unwrap();
    server.shutdown().await;
}

#[tokio::test]
async fn client_that_does_not_trust_the_server_certificate_fails() {
    let pki = Pki::new();
    let (server, port) = start(&pki.listener("")).await;
    let other_ca = ca_other().cert.pem();
    assert!(connect(options("tls-2", port, &other_ca, None))
        .await
        .is_err());
    server.shutdown().await;
}

#[tokio::test]
async fn mutual_tls_accepts_only_valid_certificates_from_the_client_ca() {
    let pki = Pki::new();
    let (server, port) = start(&pki.mtls_listener("")).await;
    let (client, mut eventloop) = connect(options("mtls-ok", port, &pki.ca_pem, Some(&pki.client)))
        .await
        .expect("client with a certificate from the CA connects");
    round_trip(&client, &mut eventloop, "mtls/echo").await;

    let no_cert = connect(options("mtls-none", port, &pki.ca_pem, None)).await;
    assert!(
        no_cert.is_err(),
        "a client without a certificate is refused"
    );
    let stranger = connect(options(
        "mtls-stranger",
        port,
        &pki.ca_pem,
        Some(&pki.stranger),
    ))
    .await;
    assert!(
        stranger.is_err(),
        "a certificate from another CA is refused"
    );
    let expired = connect(options(
        "mtls-expired",
        port,
        &pki.ca_pem,
        Some(&pki.expired),
    ))
    .await;
    assert!(expired.is_err(), "an expired certificate is refused");
    // Each refusal is counted (the server may finish its side just after the client).
    within("three handshake failures counted", async {
        while server
            .metrics()
            .handshake_failures
            .load(std::sync::atomic::Ordering::Relaxed)
            < 3
        {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await;
    server.shutdown().await;
}

#[tokio::test]
async fn optional_client_certificate_lets_clients_without_one_in() {
    let pki = Pki::new();
    let (server, port) = start(&pki.mtls_listener("require_client_cert = false")).await;
    connect(options("opt-none", port, &pki.ca_pem, None))
        .await
        .expect("no certificate is fine");
    connect(options("opt-ok", port, &pki.ca_pem, Some(&pki.client)))
        .await
        .expect("a valid certificate is fine");
    let stranger = connect(options(
        "opt-stranger",
        port,
        &pki.ca_pem,
        Some(&pki.stranger),
    ))
    .await;
    assert!(stranger.is_err(), "an invalid certificate is still refused");
    server.shutdown().await;
}

#[tokio::test]
async fn identity_as_username_listener_accepts_a_client_certificate() {
    let pki = Pki::new();
    let (server, port) = start(&pki.mtls_listener("use_identity_as_username = true")).await;
    let (client, mut eventloop) = connect(options("cn-user", port, &pki.ca_pem, Some(&pki.client)))
        .await
        .expect("client with a certificate connects");
    round_trip(&client, &mut eventloop, "cn/echo").await;
    server.shutdown().await;
}

#[tokio::test]
async fn certificate_common_name_is_the_username_the_acl_applies_to() {
    let pki = Pki::new();
    pki.write(
        "acl",
        "user device-42\ntopic readwrite devices/device-42/#\n\nuser intruder\ntopic readwrite #\n",
    );
    let toml = format!(
        "{}\n[auth]\nacl_file = {:?}\n",
        pki.mtls_listener("use_identity_as_username = true"),
        pki.path("acl")
    );
    let (server, port) = start(&toml).await;
    // The username in CONNECT is not the one that counts: the certificate's CN is.
    let mut o = options("cn-acl", port, &pki.ca_pem, Some(&pki.client));
    o.set_credentials("intruder", "whatever");
    let (client, mut eventloop) = connect(o)
        .await
        .expect("client with a certificate connects");
    round_trip(&client, &mut eventloop, "devices/device-42/telemetry").await;
    client
        .subscribe("devices/other/telemetry", QoS::AtMostOnce)
        .await
        .unwrap();
    loop {
        if let Event::Incoming(Packet::SubAck(ack)) =
            within("SUBACK", eventloop.poll()).await.unwrap()
        {
            assert_eq!(
                ack.return_codes,
                vec![rumqttc::SubscribeReasonCode::Failure],
                "device-42 may not read another device's topics"
            );
            break;
        }
    }
    server.shutdown().await;
}

#[tokio::test]
async fn silent_client_is_dropped_by_the_connect_timeout_during_the_tls_handshake() {
    let pki = Pki::new();
    let toml = pki
        .listener("")
        .replace("[sys]", "[limits]\nconnect_timeout_ms = 200\n[sys]");
    let (server, port) = start(&toml).await;
    let mut socket = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .unwrap();
    let mut buf = [0u8; 16];
    // No ClientHello from us: the server closes once the connect timeout is over.
    let n = within(
        "the server to close",
        tokio::io::AsyncReadExt::read(&mut socket, &mut buf),
    )
    .await;
    assert!(matches!(n, Ok(0) | Err(_)), "{n:?}");
    server.shutdown().await;
}

/// Connects with a plain TLS client trusting `ca_pem` and returns the subject CN of the
/// certificate the server presented.
async fn presented_common_name(port: u16, ca_pem: &str) -> String {
    tls_handshake_after(port, ca_pem, b"")
        .await
        .expect("handshake with the CA's certificate")
}

/// Writes `prefix` (e.g. a PROXY header), then runs a TLS handshake trusting `ca_pem`;
/// returns the server certificate's subject CN, or the handshake error.
async fn tls_handshake_after(port: u16, ca_pem: &str, prefix: &[u8]) -> std::io::Result<String> {
    use rustls_pki_types::pem::PemObject;
    use tokio_rustls::rustls::{self, pki_types::ServerName, RootCertStore};
    let mut roots = RootCertStore::empty();
    roots
        .add(rustls_pki_types::CertificateDer::from_pem_slice(ca_pem.as_bytes()).unwrap())
        .unwrap();
    let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    let connector = tokio_rustls::TlsConnector::from(std::sync::Arc::new(config));
    let mut tcp = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .unwrap();
    tokio::io::AsyncWriteExt::write_all(&mut tcp, prefix)
        .await
        .unwrap();
    let tls = within(
        "TLS handshake",
        connector.connect(ServerName::try_from("localhost").unwrap(), tcp),
    )
    .await?;
    let cert = tls.get_ref().1.peer_certificates().unwrap()[0].clone();
    let (_, cert) = x509_parser::parse_x509_certificate(cert.as_ref()).unwrap();
    let cn = cert.subject().iter_common_name().next().unwrap();
    Ok(cn.as_str().unwrap().to_owned())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn proxy_protocol_header_is_read_before_the_tls_handshake() {
    let pki = Pki::new();
    let (server, port) = start(&pki.listener("proxy_protocol = true")).await;
    let header = b"PROXY TCP4 203.0.113.7 127.0.0.1 51234 8883\r\n";
    let cn = tls_handshake_after(port, &pki.ca_pem, header)
        .await
        .expect("TLS works behind the header");
    assert_eq!(cn, "thingmq test server");
    // Without the header the ClientHello is not a PROXY header: closed, no handshake.
    assert!(tls_handshake_after(port, &pki.ca_pem, b"").await.is_err());
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn certificates_reload_without_dropping_connections_and_a_broken_file_keeps_the_old_ones() {
    let pki = Pki::new();
    let ca = ca("reload CA");
    let ca_pem = ca.cert.pem();
    let server_cert = |cn: &str| {
        leaf(
            &ca,
            cn,
            &["localhost"],
            ExtendedKeyUsagePurpose::ServerAuth,
            false,
        )
    };
    let one = server_cert("server one");
    pki.write("server.pem", &one.cert);
    pki.write("server.key", &one.key);
    let (server, port) = start(&pki.listener("")).await;
    assert_eq!(presented_common_name(port, &ca_pem).await, "server one");
    let (client, mut eventloop) = connect(options("long-lived", port, &ca_pem, None))
        .await
        .expect("connects");
    round_trip(&client, &mut eventloop, "reload/before").await;

    let two = server_cert("server two");
    pki.write("server.pem", &two.cert);
    pki.write("server.key", &two.key);
    server.reload_certificates().expect("new files load");
    assert_eq!(presented_common_name(port, &ca_pem).await, "server two");
    // The connection made before the reload is still up and served.
    round_trip(&client, &mut eventloop, "reload/after").await;

    // A broken file: the error names the listener and the file; the certificates in force
    // stay.
    pki.write("server.pem", "-----BEGIN CERTIFICATE-----\ngarbage\n");
    let errors = server.reload_certificates().unwrap_err();
    assert_eq!(errors.len(), 1);
    assert!(
        errors[0].contains("listeners[0]") && errors[0].contains("server.pem"),
        "{errors:?}"
    );
    assert_eq!(presented_common_name(port, &ca_pem).await, "server two");
    round_trip(&client, &mut eventloop, "reload/broken").await;
    server.shutdown().await;
}

fn config_error(toml: &str) -> String {
    Config::from_toml(toml).unwrap_err().to_string()
}

#[test]
fn tls_config_errors_name_the_key_and_the_file() {
    let pki = Pki::new();
    let err = config_error("[[listeners]]\nbind = \"127.0.0.1:0\"\nprotocol = \"tls\"\n");
    assert!(err.contains("listeners[0].cert_file"), "{err}");

    let missing = pki.path("nope.pem");
    let toml = pki.listener("").replace(
        &format!("{:?}", pki.path("server.pem")),
        &format!("{missing:?}"),
    );
    let err = config_error(&toml);
    assert!(err.contains("listeners[0].cert_file"), "{err}");
    assert!(err.contains("nope.pem"), "{err}");

    pki.write("garbage.key", "not a key\n");
    let toml = pki.listener("").replace(
        &format!("{:?}", pki.path("server.key")),
        &format!("{:?}", pki.path("garbage.key")),
    );
    let err = config_error(&toml);
    assert!(err.contains("listeners[0].key_file"), "{err}");
    assert!(err.contains("garbage.key"), "{err}");

    // The client's key does not go with the server's certificate.
    let toml = pki.listener("").replace(
        &format!("{:?}", pki.path("server.key")),
        &format!("{:?}", pki.path("client.key")),
    );
    assert!(config_error(&toml).contains("listeners[0].key_file"));

    pki.write("empty.pem", "");
    let err = config_error(&pki.listener(&format!("client_ca_file = {:?}", pki.path("empty.pem"))));
    assert!(err.contains("listeners[0].client_ca_file"), "{err}");

    let err = config_error(&pki.listener("use_identity_as_username = true"));
    assert!(err.contains("use_identity_as_username"), "{err}");
    let err = config_error("[[listeners]]\nbind = \"127.0.0.1:0\"\ncert_file = \"x\"\n");
    assert!(err.contains("only for tls and wss"), "{err}");
}

fn mosquitto_clients_present() -> bool {
    ["mosquitto_pub", "mosquitto_sub"]
        .iter()
        .all(|b| std::process::Command::new(b).arg("--help").output().is_ok())
}

fn run(program: &str, args: &[&str], dir: &Path) -> std::process::Output {
    std::process::Command::new(program)
        .args(args)
        .current_dir(dir)
        .output()
        .unwrap_or_else(|e| panic!("cannot run {program}: {e}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mosquitto_clients_pub_and_sub_over_mutual_tls() {
    if !mosquitto_clients_present() {
        eprintln!("skipped: mosquitto_pub/mosquitto_sub not installed");
        return;
    }
    let pki = Pki::new();
    let (server, port) = start(&pki.mtls_listener("")).await;
    let dir = pki.dir.path().to_owned();
    let port = port.to_string();
    let out = within(
        "mosquitto_pub and mosquitto_sub",
        tokio::task::spawn_blocking(move || {
            let tls = [
                "-h",
                "localhost",
                "-p",
                &port,
                "--cafile",
                "ca.pem",
                "--cert",
                "client.pem",
                "--key",
                "client.key",
            ];
            // Retained, so the subscriber started after it gets it.
            let publish = run(
                "mosquitto_pub",
                &[
                    &tls[..],
                    &["-t", "mosq/tls", "-m", "hello tls", "-r", "-q", "1"],
                ]
                .concat(),
                &dir,
            );
            assert!(publish.status.success(), "mosquitto_pub: {publish:?}");
            let sub = run(
                "mosquitto_sub",
                &[&tls[..], &["-t", "mosq/tls", "-C", "1", "-W", "10"]].concat(),
                &dir,
            );
            // Without a certificate the server refuses the handshake.
            let refused = run(
                "mosquitto_pub",
                &[&tls[..6], &["-t", "mosq/tls", "-m", "x"]].concat(),
                &dir,
            );
            (sub, refused)
        }),
    )
    .await
    .unwrap();
    let (sub, refused) = out;
    assert!(sub.status.success(), "mosquitto_sub: {sub:?}");
    assert_eq!(String::from_utf8_lossy(&sub.stdout).trim(), "hello tls");
    assert!(
        !refused.status.success(),
        "mosquitto_pub without a cert: {refused:?}"
    );
    server.shutdown().await;
}
