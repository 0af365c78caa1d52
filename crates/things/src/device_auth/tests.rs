use thingmq_broker::AccessPolicy;

use super::*;

const PK: &str = "a1LampPK";
const DN: &str = "lamp-01";
const SECRET: &str = "5Rf6rKhMu3pDq0nM2hLx7sQwYbTzAcVe";

// Expected passwords computed independently with Python's hmac module:
//   python3 -c 'import hmac,hashlib; print(hmac.new(b"5Rf6rKhMu3pDq0nM2hLx7sQwYbTzAcVe",
//     b"clientIdlamp-0042deviceNamelamp-01productKeya1LampPKtimestamp1700000000000",
//     hashlib.md5).hexdigest())'          (and hashlib.sha1, hashlib.sha256)
const MD5_TS: &str = "03402736c0ffa46cc1b34a9c44ace5f1";
const SHA1_TS: &str = "bed679166d9ac05d9be6e912861b35f066227c92";
const SHA256_TS: &str = "a5aa9b03f3b51f4891c35adf5970fbdd0ea574695cb70097709470b966b5d825";
// signmethod=sha256, no HMAC: the content with the secret appended,
//   python3 -c 'import hashlib; print(hashlib.sha256(b"clientIdlamp-0042deviceNamelamp-01"
//     b"productKeya1LampPKtimestamp1700000000000" b"5Rf6rKhMu3pDq0nM2hLx7sQwYbTzAcVe").hexdigest())'
const PLAIN_SHA256_TS: &str = "a77f1f1af58e723fa05c4a361a358f4f26e32f67560cc12d3a97a15a8d869134";
// Without timestamp: content b"clientIdlamp-0042deviceNamelamp-01productKeya1LampPK", hashlib.md5
const MD5_NO_TS: &str = "9b7a9e472ce0eb509d9a203a1d77af71";

fn auth() -> DeviceAuth {
    let mut snap = CredentialSnapshot::new();
    snap.insert(
        (PK.into(), DN.into()),
        DeviceCredential {
            secret: SECRET.into(),
            enabled: true,
        },
    );
    snap.insert(
        (PK.into(), "lamp-02".into()),
        DeviceCredential {
            secret: "other-secret".into(),
            enabled: false,
        },
    );
    DeviceAuth::new(snap)
}

fn client(client_id: &str, username: &str) -> ClientInfo {
    ClientInfo {
        client_id: client_id.into(),
        username: Some(username.into()),
    }
}

#[test]
fn signatures_match_python_hmac() {
    let content = sign_content("lamp-0042", DN, PK, Some("1700000000000"));
    assert_eq!(
        content,
        "clientIdlamp-0042deviceNamelamp-01productKeya1LampPKtimestamp1700000000000"
    );
    assert_eq!(sign(SignMethod::HmacMd5, SECRET, &content), MD5_TS);
    assert_eq!(sign(SignMethod::HmacSha1, SECRET, &content), SHA1_TS);
    assert_eq!(sign(SignMethod::HmacSha256, SECRET, &content), SHA256_TS);
    assert_eq!(sign(SignMethod::Sha256, SECRET, &content), PLAIN_SHA256_TS);
    assert_eq!(
        sign(
            SignMethod::HmacMd5,
            SECRET,
            &sign_content("lamp-0042", DN, PK, None)
        ),
        MD5_NO_TS
    );
}

#[test]
fn alink_devices_with_each_sign_method_are_accepted() {
    let a = auth();
    let user = format!("{DN}&{PK}");
    for (method, password) in [
        ("hmacmd5", MD5_TS),
        ("hmacsha1", SHA1_TS),
        ("hmacsha256", SHA256_TS),
        ("sha256", PLAIN_SHA256_TS),
    ] {
        let id = format!("lamp-0042|securemode=3,signmethod={method},timestamp=1700000000000|");
        assert_eq!(
            a.authenticate(&client(&id, &user), Some(password.as_bytes())),
            Ok(()),
            "{method}"
        );
        // hex is compared case-insensitively
        let upper = password.to_ascii_uppercase();
        assert_eq!(
            a.authenticate(&client(&id, &user), Some(upper.as_bytes())),
            Ok(()),
            "{method}"
        );
    }
    // signmethod defaults to hmacmd5, and without timestamp it is not signed
    assert_eq!(
        a.authenticate(
            &client("lamp-0042|securemode=2|", &user),
            Some(MD5_NO_TS.as_bytes())
        ),
        Ok(())
    );
}

#[test]
fn wrong_signatures_are_refused() {
    let a = auth();
    let user = format!("{DN}&{PK}");
    let id = "lamp-0042|securemode=3,signmethod=hmacsha1,timestamp=1700000000000|";
    // the sha1 password under the md5 method, a changed timestamp, a changed client id
    let cases = [
        (
            "lamp-0042|securemode=3,signmethod=hmacmd5,timestamp=1700000000000|",
            SHA1_TS,
        ),
        (
            "lamp-0042|securemode=3,signmethod=hmacsha1,timestamp=1700000000001|",
            SHA1_TS,
        ),
        (
            "lamp-0043|securemode=3,signmethod=hmacsha1,timestamp=1700000000000|",
            SHA1_TS,
        ),
        (id, SECRET),
        (id, ""),
        // the HMAC-SHA256 password under plain sha256
        (
            "lamp-0042|securemode=3,signmethod=sha256,timestamp=1700000000000|",
            SHA256_TS,
        ),
        ("lamp-0042|securemode=3,signmethod=hmacsha1", SHA1_TS),
    ];
    for (id, pw) in cases {
        assert_eq!(
            a.authenticate(&client(id, &user), Some(pw.as_bytes())),
            Err(Refusal::BadCredentials),
            "{id} {pw}"
        );
    }
    assert_eq!(
        a.authenticate(&client(id, &user), None),
        Err(Refusal::BadCredentials)
    );
    // the right signature for another device name
    assert_eq!(
        a.authenticate(
            &client(id, &format!("lamp-09&{PK}")),
            Some(SHA1_TS.as_bytes())
        ),
        Err(Refusal::BadCredentials)
    );
}

#[test]
fn plain_devices_log_in_with_their_secret() {
    let a = auth();
    let user = format!("{DN}&{PK}");
    assert_eq!(
        a.authenticate(&client("anything", &user), Some(SECRET.as_bytes())),
        Ok(())
    );
    assert_eq!(
        a.authenticate(
            &client("anything", &user),
            Some(b"5Rf6rKhMu3pDq0nM2hLx7sQwYbTzAcVf")
        ),
        Err(Refusal::BadCredentials)
    );
    assert_eq!(
        a.authenticate(&client("anything", "lamp-01"), Some(SECRET.as_bytes())),
        Err(Refusal::BadCredentials)
    );
    let anon = ClientInfo {
        client_id: "x".into(),
        username: None,
    };
    assert_eq!(
        a.authenticate(&anon, Some(SECRET.as_bytes())),
        Err(Refusal::BadCredentials)
    );
}

#[test]
fn disabled_and_unknown_devices_are_refused() {
    let a = auth();
    assert_eq!(
        a.authenticate(
            &client("c", &format!("lamp-02&{PK}")),
            Some(b"other-secret")
        ),
        Err(Refusal::NotAuthorized)
    );
    assert_eq!(
        a.authenticate(&client("c", &format!("lamp-02&{PK}")), Some(b"guess")),
        Err(Refusal::BadCredentials)
    );
    assert_eq!(
        a.authenticate(&client("c", "ghost&a1LampPK"), Some(b"x")),
        Err(Refusal::BadCredentials)
    );
}

#[test]
fn replacing_the_snapshot_disables_a_device_at_once() {
    let a = auth();
    let c = client("c", &format!("{DN}&{PK}"));
    let topic = format!("/sys/{PK}/{DN}/thing/event/property/post");
    assert!(a.authorize_topic(&c, &topic, Access::Write));
    let mut snap = CredentialSnapshot::new();
    snap.insert(
        (PK.into(), DN.into()),
        DeviceCredential {
            secret: SECRET.into(),
            enabled: false,
        },
    );
    a.replace(snap);
    assert!(!a.authorize_topic(&c, &topic, Access::Write));
    assert_eq!(
        a.authenticate(&c, Some(SECRET.as_bytes())),
        Err(Refusal::NotAuthorized)
    );
}

#[test]
fn devices_may_only_use_their_own_topics() {
    let a = auth();
    let c = client("c", &format!("{DN}&{PK}"));
    for access in [Access::Read, Access::Write] {
        assert!(a.authorize_topic(
            &c,
            &format!("/sys/{PK}/{DN}/thing/event/property/post"),
            access
        ));
        assert!(a.authorize_topic(&c, &format!("/sys/{PK}/{DN}/rrpc/request/1"), access));
        assert!(!a.authorize_topic(
            &c,
            &format!("/sys/{PK}/lamp-02/thing/event/property/post"),
            access
        ));
        assert!(!a.authorize_topic(&c, &format!("/sys/{PK}/{DN}"), access));
        assert!(!a.authorize_topic(
            &c,
            &format!("/sys/{PK}/{DN}x/thing/event/property/post"),
            access
        ));
        assert!(!a.authorize_topic(&c, "/sys/other/lamp-01/thing/event/property/post", access));
        assert!(!a.authorize_topic(&c, "$SYS/broker/uptime", access));
    }
    assert!(a.authorize_subscribe(&c, &format!("/sys/{PK}/{DN}/thing/service/#")));
    assert!(a.authorize_subscribe(&c, &format!("/sys/{PK}/{DN}/thing/service/+")));
    assert!(!a.authorize_subscribe(&c, &format!("/sys/{PK}/+/thing/service/#")));
    assert!(!a.authorize_subscribe(&c, "/sys/#"));
    assert!(!a.authorize_subscribe(&c, "#"));
    // unknown or disabled devices get nothing
    let ghost = client("c", "ghost&a1LampPK");
    assert!(!a.authorize_topic(
        &ghost,
        "/sys/a1LampPK/ghost/thing/event/property/post",
        Access::Write
    ));
    let disabled = client("c", &format!("lamp-02&{PK}"));
    assert!(!a.authorize_topic(
        &disabled,
        &format!("/sys/{PK}/lamp-02/thing/event/property/post"),
        Access::Write
    ));
}

#[test]
fn client_id_parsing() {
    let p = AlinkClientId::parse("sn123|securemode=2,signmethod=hmacsha256,timestamp=42,ext=1|")
        .unwrap()
        .unwrap();
    assert_eq!(p.client_id, "sn123");
    assert_eq!(p.sign_method, SignMethod::HmacSha256);
    assert_eq!(p.secure_mode.as_deref(), Some("2"));
    assert_eq!(p.timestamp.as_deref(), Some("42"));
    assert_eq!(AlinkClientId::parse("plain").unwrap(), None);
    assert_eq!(
        AlinkClientId::parse("x|securemode=3|")
            .unwrap()
            .unwrap()
            .sign_method,
        SignMethod::HmacMd5
    );
    assert_eq!(
        AlinkClientId::parse("x|a=1").unwrap_err(),
        ClientIdError::Malformed
    );
    assert_eq!(
        AlinkClientId::parse("|a=1|").unwrap_err(),
        ClientIdError::Malformed
    );
    assert_eq!(
        AlinkClientId::parse("x|junk|").unwrap_err(),
        ClientIdError::Malformed
    );
    assert_eq!(
        AlinkClientId::parse("x|signmethod=sha256|")
            .unwrap()
            .unwrap()
            .sign_method,
        SignMethod::Sha256
    );
    assert_eq!(
        AlinkClientId::parse("x|signmethod=hmacsha512|").unwrap_err(),
        ClientIdError::UnsupportedSignMethod("hmacsha512".into())
    );
    assert_eq!(
        parse_username("lamp-01&a1LampPK"),
        Some(("a1LampPK", "lamp-01"))
    );
    assert_eq!(parse_username("lamp-01"), None);
    assert_eq!(parse_username("&pk"), None);
}

#[test]
fn the_broker_policy_follows_the_snapshot() {
    let a = Arc::new(auth());
    let c = client("c", &format!("{DN}&{PK}"));
    assert!(a.claims(&c));
    assert!(!a.claims(&ClientInfo {
        client_id: "app".into(),
        username: Some("alice".into())
    }));
    assert!(!a.claims(&ClientInfo {
        client_id: "app".into(),
        username: None
    }));
    assert!(
        a.claims(&client("c", "ghost&nowhere")),
        "unknown devices are still ours to refuse"
    );
    assert!(a.policy(&client("c", "ghost&nowhere")).is_none());

    let policy = a.policy(&c).unwrap();
    let own = format!("/sys/{PK}/{DN}/thing/event/property/post");
    assert!(policy.can_publish(&own));
    assert!(policy.can_receive(&format!("/sys/{PK}/{DN}/thing/service/property/set")));
    assert!(policy.can_subscribe(&format!("/sys/{PK}/{DN}/thing/service/#")));
    assert!(!policy.can_publish(&format!("/sys/{PK}/lamp-02/thing/event/property/post")));
    assert!(!policy.can_subscribe("#"));
    assert!(!policy.can_receive("public/news"));

    a.replace(CredentialSnapshot::new());
    assert!(!policy.can_publish(&own), "a deleted device is cut off");
}

fn signed(dn: &str, sign: &str, method: &str) -> SignedIdentity {
    SignedIdentity {
        product_key: PK.into(),
        device_name: dn.into(),
        client_id: "lamp-0042".into(),
        timestamp: Some("1700000000000".into()),
        sign_method: method.into(),
        sign: sign.into(),
    }
}

#[test]
fn a_gateway_proves_a_sub_device_with_its_signature() {
    let a = auth();
    // The same content as an MQTT password (values from Python's hmac above).
    assert_eq!(a.check_signed(&signed(DN, MD5_TS, "hmacmd5")), Ok(()));
    assert_eq!(
        a.check_signed(&signed(DN, &SHA256_TS.to_uppercase(), "hmacSha256")),
        Ok(())
    );
    assert_eq!(
        a.check_signed(&signed(DN, SHA1_TS, "hmacmd5")),
        Err(SubDeviceAuthError::BadSignature)
    );
    assert_eq!(
        a.check_signed(&signed(DN, MD5_TS, "sha256")),
        Err(SubDeviceAuthError::BadSignature)
    );
    assert_eq!(
        a.check_signed(&signed(DN, &PLAIN_SHA256_TS.to_uppercase(), "Sha256")),
        Ok(())
    );
    assert_eq!(
        a.check_signed(&signed(DN, PLAIN_SHA256_TS, "hmacsha512")),
        Err(SubDeviceAuthError::BadSignature)
    );
    assert_eq!(
        a.check_signed(&signed("nobody", MD5_TS, "hmacmd5")),
        Err(SubDeviceAuthError::NotFound)
    );
    let disabled = sign(
        SignMethod::HmacMd5,
        "other-secret",
        &sign_content("lamp-0042", "lamp-02", PK, Some("1700000000000")),
    );
    assert_eq!(
        a.check_signed(&signed("lamp-02", &disabled, "hmacmd5")),
        Err(SubDeviceAuthError::Disabled)
    );
}

#[test]
fn a_gateway_uses_its_session_topics_and_its_logged_in_sub_devices_topics() {
    let mut snap = CredentialSnapshot::new();
    for (pk, dn, enabled) in [
        ("gw", "g1", true),
        (PK, "s1", true),
        (PK, "s2", true),
        (PK, "off", false),
    ] {
        snap.insert(
            (pk.into(), dn.into()),
            DeviceCredential {
                secret: "x".into(),
                enabled,
            },
        );
    }
    let a = DeviceAuth::new(snap);
    let gw = client("g1", "g1&gw");
    let gw_key = ("gw".to_string(), "g1".to_string());
    let sub_topic = format!("/sys/{PK}/s1/thing/event/property/post");
    assert!(a.authorize_topic(&gw, "/ext/session/gw/g1/combine/login", Access::Write));
    assert!(!a.authorize_topic(&gw, "/ext/session/gw/g2/combine/login", Access::Write));
    assert!(!a.authorize_topic(&gw, &sub_topic, Access::Write));

    a.login_sub(&gw_key, (PK.into(), "s1".into()));
    a.login_sub(&gw_key, (PK.into(), "off".into()));
    assert!(a.authorize_topic(&gw, &sub_topic, Access::Write));
    assert!(a.authorize_subscribe(&gw, &format!("/sys/{PK}/s1/thing/service/#")));
    // Only literal sub-device names, only logged-in and enabled sub-devices.
    assert!(!a.authorize_subscribe(&gw, &format!("/sys/{PK}/+/thing/service/#")));
    assert!(!a.authorize_subscribe(&gw, "/sys/#"));
    assert!(!a.authorize_topic(
        &gw,
        &format!("/sys/{PK}/s2/thing/event/property/post"),
        Access::Write
    ));
    assert!(!a.authorize_topic(
        &gw,
        &format!("/sys/{PK}/off/thing/event/property/post"),
        Access::Write
    ));
    // The sub-device's session belongs to this gateway alone.
    let other = client("g2", "s2&a1LampPK");
    assert!(!a.authorize_topic(&other, &sub_topic, Access::Write));

    assert!(a.logout_sub(&gw_key, &(PK.into(), "s1".into())));
    assert!(!a.logout_sub(&gw_key, &(PK.into(), "s1".into())));
    assert!(!a.authorize_topic(&gw, &sub_topic, Access::Read));
    a.login_sub(&gw_key, (PK.into(), "s1".into()));
    let mut gone = a.logout_all(&gw_key);
    gone.sort();
    assert_eq!(
        gone,
        [
            (PK.to_string(), "off".to_string()),
            (PK.to_string(), "s1".to_string())
        ]
    );
    assert!(!a.authorize_topic(&gw, &sub_topic, Access::Read));
}
