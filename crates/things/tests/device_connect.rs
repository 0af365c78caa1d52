//! Devices connecting to a real broker (started on 127.0.0.1:0) through `DeviceAuth`, with
//! rumqttc as the device and the Alink signatures computed at run time by Python's `hmac`
//! module, independently of our code. The broker wiring is a test-local `AccessHook` adapter:
//! the same few lines the server will use.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use rumqttc::{
    AsyncClient, ConnectReturnCode, ConnectionError, Event, MqttOptions, Packet, QoS,
    SubscribeReasonCode,
};
use thingmq_auth::{Authenticator, ClientInfo, Refusal};
use thingmq_broker::AccessPolicy;
use thingmq_server::access::AccessHook;
use thingmq_server::{Config, Server};
use thingmq_things::registry::{Device, NodeType, Product};
use thingmq_things::store::Store;
use thingmq_things::tsl::ThingModel;
use thingmq_things::validate::ValidationMode;
use thingmq_things::DeviceAuth;

const WAIT: Duration = Duration::from_secs(10);
const PK: &str = "a1Lamp";

async fn within<T>(what: &str, fut: impl Future<Output = T>) -> T {
    match tokio::time::timeout(WAIT, fut).await {
        Ok(v) => v,
        Err(_) => panic!("timed out after {WAIT:?} waiting for {what}"),
    }
}

/// The adapter the server wiring needs: device clients are the registry's, others pass on.
#[derive(Debug)]
struct DeviceHook(Arc<DeviceAuth>);

impl AccessHook for DeviceHook {
    fn authenticate(
        &self,
        client: &ClientInfo,
        password: Option<&[u8]>,
    ) -> Option<Result<(), Refusal>> {
        self.0
            .claims(client)
            .then(|| self.0.authenticate(client, password))
    }

    fn policy(&self, client: &ClientInfo) -> Option<Arc<dyn AccessPolicy>> {
        self.0
            .policy(client)
            .map(|p| Arc::new(p) as Arc<dyn AccessPolicy>)
    }
}

/// The password hex computed by Python, not by us: HMAC for `hmac*`, and for `sha256` the
/// digest of the content with the secret appended.
fn python_hmac(method: &str, secret: &str, content: &str) -> String {
    let out = std::process::Command::new("python3")
        .args([
            "-c",
            "import hmac, hashlib, sys\n\
             s, c, m = sys.argv[1].encode(), sys.argv[2].encode(), sys.argv[3]\n\
             print(hashlib.sha256(c + s).hexdigest() if m == 'sha256' else \
             hmac.new(s, c, getattr(hashlib, m[4:])).hexdigest())",
            secret,
            content,
            method,
        ])
        .output()
        .expect("python3 must be installed for this test");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap().trim().to_string()
}

struct Mqtt {
    client: AsyncClient,
    incoming: tokio::sync::mpsc::UnboundedReceiver<Packet>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Mqtt {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Connects with rumqttc (MQTT 3.1.1); `Err` carries the CONNACK refusal.
async fn connect(
    addr: SocketAddr,
    id: &str,
    user: Option<&str>,
    password: &str,
) -> Result<Mqtt, ConnectReturnCode> {
    let mut o = MqttOptions::new(id, addr.ip().to_string(), addr.port());
    o.set_keep_alive(Duration::from_secs(30));
    if let Some(u) = user {
        o.set_credentials(u, password);
    }
    let (client, mut eventloop) = AsyncClient::new(o, 100);
    let first = within("CONNACK", async {
        loop {
            match eventloop.poll().await {
                Ok(Event::Incoming(Packet::ConnAck(_))) => return Ok(()),
                Ok(_) => {}
                Err(ConnectionError::ConnectionRefused(code)) => return Err(code),
                Err(e) => panic!("connection failed: {e}"),
            }
        }
    })
    .await;
    first?;
    let (tx, incoming) = tokio::sync::mpsc::unbounded_channel();
    let task = tokio::spawn(async move {
        while let Ok(event) = eventloop.poll().await {
            if let Event::Incoming(p) = event {
                if tx.send(p).is_err() {
                    break;
                }
            }
        }
    });
    Ok(Mqtt {
        client,
        incoming,
        task,
    })
}

impl Mqtt {
    async fn next(&mut self, what: &str, mut pick: impl FnMut(&Packet) -> bool) -> Packet {
        within(what, async {
            loop {
                match self.incoming.recv().await {
                    Some(p) if pick(&p) => return p,
                    Some(_) => {}
                    None => panic!("connection ended while waiting for {what}"),
                }
            }
        })
        .await
    }

    async fn subscribe(&mut self, filter: &str) -> SubscribeReasonCode {
        self.client
            .subscribe(filter, QoS::AtLeastOnce)
            .await
            .unwrap();
        let Packet::SubAck(ack) = self
            .next("SUBACK", |p| matches!(p, Packet::SubAck(_)))
            .await
        else {
            unreachable!()
        };
        ack.return_codes[0]
    }

    /// Publishes at QoS 1 and waits for the PUBACK, so later messages are ordered after it.
    async fn publish(&mut self, topic: &str, payload: &str) {
        self.client
            .publish(topic, QoS::AtLeastOnce, false, payload.as_bytes().to_vec())
            .await
            .unwrap();
        self.next("PUBACK", |p| matches!(p, Packet::PubAck(_)))
            .await;
    }

    async fn next_publish(&mut self) -> (String, String) {
        let Packet::Publish(p) = self
            .next("PUBLISH", |p| matches!(p, Packet::Publish(_)))
            .await
        else {
            unreachable!()
        };
        (p.topic, String::from_utf8(p.payload.to_vec()).unwrap())
    }
}

fn topic(dn: &str, rest: &str) -> String {
    format!("/sys/{PK}/{dn}/{rest}")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn devices_connect_with_alink_signatures_and_are_confined_to_their_topics() {
    // The registry, in SQLite, feeds the authenticator.
    let dir = tempfile::tempdir().unwrap();
    let store = Store::connect(&format!(
        "sqlite://{}/things.db?mode=rwc",
        dir.path().display()
    ))
    .await
    .unwrap();
    store
        .put_product(&Product {
            product_key: PK.into(),
            name: "lamp".into(),
            node_type: NodeType::Direct,
            validation: ValidationMode::Strict,
            model: ThingModel::from_json(r#"{"properties":[]}"#).unwrap(),
            dynamic_register: false,
            created_ms: 0,
        })
        .await
        .unwrap();
    let lamp1 = Device::new(PK, "lamp-01", 0);
    let lamp2 = Device::new(PK, "lamp-02", 0);
    store.insert_device(&lamp1).await.unwrap();
    store.insert_device(&lamp2).await.unwrap();
    let auth = Arc::new(DeviceAuth::new(store.credentials().await.unwrap()));

    // Anonymous clients (the observer below) are allowed; device clients are the hook's.
    let config = Config::from_toml(
        "[[listeners]]\nbind = \"127.0.0.1:0\"\n[auth]\nallow_anonymous = true\n[sys]\ninterval_secs = 0\n",
    )
    .unwrap();
    let server = within("server start", Server::start(config)).await.unwrap();
    let addr = server.local_addrs()[0];
    server.add_access_hook(Arc::new(DeviceHook(auth.clone())));

    let mut observer = connect(addr, "observer", None, "").await.unwrap();
    assert!(matches!(
        observer.subscribe("/sys/#").await,
        SubscribeReasonCode::Success(_)
    ));

    let user1 = format!("lamp-01&{PK}");
    let ts = "1700000000123";
    for method in ["hmacmd5", "hmacsha1", "hmacsha256", "sha256"] {
        let id = format!("sn-{method}");
        let content = format!("clientId{id}deviceNamelamp-01productKey{PK}timestamp{ts}");
        let password = python_hmac(method, &lamp1.device_secret, &content);
        let client_id = format!("{id}|securemode=3,signmethod={method},timestamp={ts}|");
        let mut dev = connect(addr, &client_id, Some(&user1), &password)
            .await
            .unwrap_or_else(|code| panic!("{method}: refused with {code:?}"));

        // its own topics: yes; another device's: no
        assert!(matches!(
            dev.subscribe(&topic("lamp-01", "thing/service/#")).await,
            SubscribeReasonCode::Success(_)
        ));
        assert_eq!(
            dev.subscribe(&topic("lamp-02", "thing/service/#")).await,
            SubscribeReasonCode::Failure
        );
        assert_eq!(
            dev.subscribe("/sys/+/+/thing/service/#").await,
            SubscribeReasonCode::Failure
        );
        dev.publish(&topic("lamp-02", "thing/event/property/post"), "forged")
            .await;
        dev.publish(&topic("lamp-01", "thing/event/property/post"), method)
            .await;
        let (t, payload) = observer.next_publish().await;
        assert_eq!(
            (t.as_str(), payload.as_str()),
            (
                topic("lamp-01", "thing/event/property/post").as_str(),
                method
            ),
            "the forged report was dropped"
        );
    }

    // The wrong signature, a signature for another device, and unsupported methods.
    let content = format!("clientIdsn-xdeviceNamelamp-01productKey{PK}");
    let good = python_hmac("hmacsha1", &lamp1.device_secret, &content);
    let bad = python_hmac("hmacsha1", &lamp2.device_secret, &content);
    let id = "sn-x|securemode=3,signmethod=hmacsha1|";
    assert_eq!(
        connect(addr, id, Some(&user1), &bad).await.err(),
        Some(ConnectReturnCode::BadUserNamePassword)
    );
    assert_eq!(
        connect(addr, id, Some(&format!("lamp-02&{PK}")), &good)
            .await
            .err(),
        Some(ConnectReturnCode::BadUserNamePassword)
    );
    // An HMAC password under plain sha256, and a method nobody defines.
    assert_eq!(
        connect(addr, "sn-x|signmethod=sha256|", Some(&user1), &good)
            .await
            .err(),
        Some(ConnectReturnCode::BadUserNamePassword)
    );
    let sha256_other = python_hmac("sha256", &lamp2.device_secret, &content);
    assert_eq!(
        connect(addr, "sn-x|signmethod=sha256|", Some(&user1), &sha256_other)
            .await
            .err(),
        Some(ConnectReturnCode::BadUserNamePassword)
    );
    assert_eq!(
        connect(addr, "sn-x|signmethod=hmacsha512|", Some(&user1), &good)
            .await
            .err(),
        Some(ConnectReturnCode::BadUserNamePassword)
    );
    assert!(
        connect(addr, id, Some(&user1), &good.to_uppercase())
            .await
            .is_ok(),
        "hex compares case-insensitively"
    );

    // Plain scheme: the secret as password.
    let mut plain = connect(
        addr,
        "plain-2",
        Some(&format!("lamp-02&{PK}")),
        &lamp2.device_secret,
    )
    .await
    .unwrap();
    plain
        .publish(&topic("lamp-02", "thing/event/property/post"), "plain")
        .await;
    assert_eq!(observer.next_publish().await.1, "plain");
    assert_eq!(
        connect(addr, "ghost", Some(&format!("ghost&{PK}")), "x")
            .await
            .err(),
        Some(ConnectReturnCode::BadUserNamePassword)
    );

    // Disabling lamp-02 in the registry: new connections are refused and the connected one is
    // cut off at its next publish.
    let mut disabled = store.device(PK, "lamp-02").await.unwrap().unwrap();
    disabled.enabled = false;
    store.put_device(&disabled).await.unwrap();
    auth.replace(store.credentials().await.unwrap());
    server.access_changed();
    assert_eq!(
        connect(
            addr,
            "plain-3",
            Some(&format!("lamp-02&{PK}")),
            &lamp2.device_secret
        )
        .await
        .err(),
        Some(ConnectReturnCode::NotAuthorized)
    );
    plain
        .publish(
            &topic("lamp-02", "thing/event/property/post"),
            "after-disable",
        )
        .await;
    let mut dev = connect(addr, "plain-1", Some(&user1), &lamp1.device_secret)
        .await
        .unwrap();
    dev.publish(
        &topic("lamp-01", "thing/event/property/post"),
        "still-enabled",
    )
    .await;
    assert_eq!(
        observer.next_publish().await.1,
        "still-enabled",
        "the disabled device's publish was dropped"
    );

    drop((dev, plain, observer));
    within("shutdown", server.shutdown()).await;
}
