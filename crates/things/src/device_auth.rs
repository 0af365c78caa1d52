//! Device authentication and topic authorization over a snapshot of the registry.
//!
//! Two schemes, chosen by the client id:
//! - **Alink signature**: client id `{id}|securemode=3,signmethod=hmacsha256,timestamp=…|`,
//!   username `{deviceName}&{productKey}`, password = hex HMAC keyed by the deviceSecret of
//!   `clientId{id}deviceName{dn}productKey{pk}[timestamp{ts}]` (parameters sorted by name).
//!   `hmacmd5` (the default), `hmacsha1` and `hmacsha256` are supported, and `sha256`: the hex
//!   SHA-256 digest of the same content with the deviceSecret appended (no HMAC).
//! - **Plain**: any client id without `|`, username `{deviceName}&{productKey}`, password =
//!   the deviceSecret.
//!
//! Comparisons run in constant time. A device may only publish and subscribe under its own
//! `/sys/{productKey}/{deviceName}/`; unknown and disabled devices are refused. A gateway also
//! has its `/ext/session/{productKey}/{deviceName}/` topics (sub-device login and logout) and
//! the `/sys/…/` topics of each sub-device logged in through it ([`DeviceAuth::login_sub`]).

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, RwLock};

use hmac::{Hmac, Mac};
use subtle::ConstantTimeEq;
use thingmq_auth::{Access, Authenticator, Authorizer, ClientInfo, Refusal};
use thingmq_broker::AccessPolicy;

use crate::alink::{DeviceTopic, SessionTopic, SignedIdentity};

/// Signature algorithms of the Alink `signmethod` parameter.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SignMethod {
    /// `hmacmd5` (Alink's default when `signmethod` is absent).
    HmacMd5,
    /// `hmacsha1`.
    HmacSha1,
    /// `hmacsha256`.
    HmacSha256,
    /// `sha256`: SHA-256 of the content followed by the secret. Alibaba lists the method
    /// without spelling it out; this is the construction of EnOS, whose device protocol is
    /// derived from Alink and documents it (`sha256(content + deviceSecret)`).
    Sha256,
}

impl SignMethod {
    /// Parses the `signmethod` value, ignoring case (SDKs write `hmacSha256`, `HmacSHA1`).
    pub fn parse(s: &str) -> Option<Self> {
        match s.to_ascii_lowercase().as_str() {
            "hmacmd5" => Some(Self::HmacMd5),
            "hmacsha1" => Some(Self::HmacSha1),
            "hmacsha256" => Some(Self::HmacSha256),
            "sha256" => Some(Self::Sha256),
            _ => None,
        }
    }
}

/// The parts of an Alink MQTT client id.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AlinkClientId {
    /// The device's own id before the first `|`.
    pub client_id: String,
    /// `signmethod`, defaulted.
    pub sign_method: SignMethod,
    /// `securemode` as sent (2 = TLS, 3 = TCP); informational.
    pub secure_mode: Option<String>,
    /// `timestamp` as sent; part of the signed content when present.
    pub timestamp: Option<String>,
}

/// Why an Alink client id could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ClientIdError {
    /// Not of the form `id|k=v,…|`.
    #[error("malformed Alink client id")]
    Malformed,
    /// A `signmethod` we do not implement.
    #[error("unsupported signmethod {0:?}")]
    UnsupportedSignMethod(String),
}

impl AlinkClientId {
    /// Parses `{id}|k=v,k=v|`; `Ok(None)` when the client id has no `|` (plain scheme).
    pub fn parse(raw: &str) -> Result<Option<Self>, ClientIdError> {
        let Some((id, rest)) = raw.split_once('|') else {
            return Ok(None);
        };
        let params = rest.strip_suffix('|').ok_or(ClientIdError::Malformed)?;
        if id.is_empty() || id.len() > 64 || params.contains('|') {
            return Err(ClientIdError::Malformed);
        }
        let mut parsed = Self {
            client_id: id.to_string(),
            sign_method: SignMethod::HmacMd5,
            secure_mode: None,
            timestamp: None,
        };
        for kv in params.split(',').filter(|s| !s.is_empty()) {
            let (k, v) = kv.split_once('=').ok_or(ClientIdError::Malformed)?;
            match k {
                "signmethod" => {
                    parsed.sign_method = SignMethod::parse(v)
                        .ok_or_else(|| ClientIdError::UnsupportedSignMethod(v.to_string()))?;
                }
                "securemode" => parsed.secure_mode = Some(v.to_string()),
                "timestamp" => parsed.timestamp = Some(v.to_string()),
                // Other parameters (gw, ext, _v, …) are not signed.
                _ => {}
            }
        }
        Ok(Some(parsed))
    }
}

/// The content an Alink password signs: parameters sorted by name, each as name + value.
pub fn sign_content(
    client_id: &str,
    device_name: &str,
    product_key: &str,
    timestamp: Option<&str>,
) -> String {
    let mut s = format!("clientId{client_id}deviceName{device_name}productKey{product_key}");
    if let Some(ts) = timestamp {
        s.push_str("timestamp");
        s.push_str(ts);
    }
    s
}

/// Lower-case hex signature of `content` with `secret`: an HMAC keyed by the secret, or for
/// [`SignMethod::Sha256`] the digest of `content` followed by the secret.
pub fn sign(method: SignMethod, secret: &str, content: &str) -> String {
    fn run<M: Mac + hmac::digest::KeyInit>(secret: &str, content: &str) -> Vec<u8> {
        let mut mac = <M as hmac::digest::KeyInit>::new_from_slice(secret.as_bytes())
            .expect("HMAC takes keys of any length");
        mac.update(content.as_bytes());
        mac.finalize().into_bytes().to_vec()
    }
    let bytes = match method {
        SignMethod::HmacMd5 => run::<Hmac<md5::Md5>>(secret, content),
        SignMethod::HmacSha1 => run::<Hmac<sha1::Sha1>>(secret, content),
        SignMethod::HmacSha256 => run::<Hmac<sha2::Sha256>>(secret, content),
        SignMethod::Sha256 => {
            use sha2::Digest;
            let mut d = sha2::Sha256::new();
            d.update(content.as_bytes());
            d.update(secret.as_bytes());
            d.finalize().to_vec()
        }
    };
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// `deviceName&productKey` → (productKey, deviceName).
pub fn parse_username(username: &str) -> Option<(&str, &str)> {
    let (dn, pk) = username.split_once('&')?;
    (!dn.is_empty() && !pk.is_empty() && !pk.contains('&')).then_some((pk, dn))
}

/// What authentication needs to know about one device.
#[derive(Clone, PartialEq, Eq)]
pub struct DeviceCredential {
    /// The deviceSecret.
    pub secret: String,
    /// Disabled devices are refused.
    pub enabled: bool,
}

impl std::fmt::Debug for DeviceCredential {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DeviceCredential")
            .field("enabled", &self.enabled)
            .finish_non_exhaustive()
    }
}

/// An immutable view of the registry's credentials, keyed by (productKey, deviceName).
pub type CredentialSnapshot = HashMap<(String, String), DeviceCredential>;

/// [`Authenticator`] and [`Authorizer`] for devices. The registry replaces the snapshot when
/// devices change ([`DeviceAuth::replace`]); checks read it without blocking each other.
#[derive(Debug, Default)]
pub struct DeviceAuth {
    snapshot: RwLock<Arc<CredentialSnapshot>>,
    /// Sub-devices online through each gateway: the gateway may use their topics.
    sessions: RwLock<HashMap<DeviceKey, HashSet<DeviceKey>>>,
}

/// (productKey, deviceName).
pub type DeviceKey = (String, String);

/// Why a sub-device's signature was not accepted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SubDeviceAuthError {
    /// No such device.
    #[error("device not found")]
    NotFound,
    /// The signature does not match (or its method is unknown).
    #[error("signature check failed")]
    BadSignature,
    /// The signature matches but the device is disabled.
    #[error("device disabled")]
    Disabled,
}

impl DeviceAuth {
    /// Over this snapshot.
    pub fn new(snapshot: CredentialSnapshot) -> Self {
        Self {
            snapshot: RwLock::new(Arc::new(snapshot)),
            sessions: RwLock::default(),
        }
    }

    /// Checks the signature a gateway presents for a sub-device (`thing/topo/add`,
    /// `combine/login`, `combine/batch_login`): the signature of
    /// `clientId…deviceName…productKey…[timestamp…]` with the sub-device's secret, as for an
    /// MQTT password.
    pub fn check_signed(&self, id: &SignedIdentity) -> Result<(), SubDeviceAuthError> {
        let snap = self.current();
        let cred = snap
            .get(&(id.product_key.clone(), id.device_name.clone()))
            .ok_or(SubDeviceAuthError::NotFound)?;
        let method = SignMethod::parse(&id.sign_method).ok_or(SubDeviceAuthError::BadSignature)?;
        let content = sign_content(
            &id.client_id,
            &id.device_name,
            &id.product_key,
            id.timestamp.as_deref(),
        );
        let expected = sign(method, &cred.secret, &content);
        if !ct_eq(&id.sign.to_ascii_lowercase(), &expected) {
            return Err(SubDeviceAuthError::BadSignature);
        }
        if !cred.enabled {
            return Err(SubDeviceAuthError::Disabled);
        }
        Ok(())
    }

    /// A sub-device went online through `gateway`: the gateway may now use its topics.
    pub fn login_sub(&self, gateway: &DeviceKey, sub: DeviceKey) {
        self.sessions_mut()
            .entry(gateway.clone())
            .or_default()
            .insert(sub);
    }

    /// A sub-device went offline; `true` when it was online through `gateway`.
    pub fn logout_sub(&self, gateway: &DeviceKey, sub: &DeviceKey) -> bool {
        let mut sessions = self.sessions_mut();
        let Some(subs) = sessions.get_mut(gateway) else {
            return false;
        };
        let was = subs.remove(sub);
        if subs.is_empty() {
            sessions.remove(gateway);
        }
        was
    }

    /// The gateway went offline: every sub-device online through it goes too (returned).
    pub fn logout_all(&self, gateway: &DeviceKey) -> Vec<DeviceKey> {
        self.sessions_mut()
            .remove(gateway)
            .map(|s| s.into_iter().collect())
            .unwrap_or_default()
    }

    fn sessions_mut(
        &self,
    ) -> std::sync::RwLockWriteGuard<'_, HashMap<DeviceKey, HashSet<DeviceKey>>> {
        self.sessions.write().unwrap_or_else(|e| e.into_inner())
    }

    /// Whether `topic` (or a filter) lies under a sub-device that is online through `gateway`
    /// and enabled. The product key and device name must be literal segments.
    fn sub_device_topic(
        &self,
        snap: &CredentialSnapshot,
        gateway: &DeviceKey,
        topic: &str,
    ) -> bool {
        let Some(rest) = topic.strip_prefix("/sys/") else {
            return false;
        };
        let mut segs = rest.splitn(3, '/');
        let (Some(pk), Some(dn), Some(_)) = (segs.next(), segs.next(), segs.next()) else {
            return false;
        };
        if [pk, dn]
            .iter()
            .any(|s| s.is_empty() || s.contains(['+', '#']))
        {
            return false;
        }
        let sub = (pk.to_string(), dn.to_string());
        let online = self
            .sessions
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(gateway)
            .is_some_and(|subs| subs.contains(&sub));
        online && snap.get(&sub).is_some_and(|c| c.enabled)
    }

    /// Installs a new snapshot; connected clients are checked against it from now on.
    pub fn replace(&self, snapshot: CredentialSnapshot) {
        *self.snapshot.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(snapshot);
    }

    fn current(&self) -> Arc<CredentialSnapshot> {
        self.snapshot
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// The enabled device a client is, if any.
    fn device<'a>(
        &self,
        snap: &'a CredentialSnapshot,
        client: &ClientInfo,
    ) -> Option<(String, String, &'a DeviceCredential)> {
        let (pk, dn) = parse_username(client.username.as_deref()?)?;
        let cred = snap.get(&(pk.to_string(), dn.to_string()))?;
        Some((pk.to_string(), dn.to_string(), cred))
    }
}

impl DeviceAuth {
    /// Whether a client presents itself as a device (username `deviceName&productKey`).
    /// Such clients are this module's to accept or refuse — known or not — so a server's
    /// access hook answers for them and leaves every other client to its password file / ACL.
    pub fn claims(&self, client: &ClientInfo) -> bool {
        client
            .username
            .as_deref()
            .and_then(parse_username)
            .is_some()
    }

    /// The broker-side policy for a device client: its own `/sys/{pk}/{dn}/` topics while it
    /// stays enabled. `None` for clients that are not known devices.
    pub fn policy(self: &Arc<Self>, client: &ClientInfo) -> Option<DevicePolicy> {
        let (pk, dn) = parse_username(client.username.as_deref()?)?;
        self.current()
            .contains_key(&(pk.to_string(), dn.to_string()))
            .then(|| DevicePolicy {
                auth: self.clone(),
                client: client.clone(),
            })
    }
}

/// [`AccessPolicy`] of one connected device. It reads the current snapshot on every check, so
/// disabling or deleting the device cuts it off at its next publish, subscribe or delivery.
#[derive(Debug)]
pub struct DevicePolicy {
    auth: Arc<DeviceAuth>,
    client: ClientInfo,
}

impl AccessPolicy for DevicePolicy {
    fn can_publish(&self, topic: &str) -> bool {
        self.auth
            .authorize_topic(&self.client, topic, Access::Write)
    }

    fn can_subscribe(&self, filter: &str) -> bool {
        self.auth.authorize_subscribe(&self.client, filter)
    }

    fn can_receive(&self, topic: &str) -> bool {
        self.auth.authorize_topic(&self.client, topic, Access::Read)
    }
}

fn ct_eq(a: &str, b: &str) -> bool {
    a.as_bytes().ct_eq(b.as_bytes()).into()
}

impl Authenticator for DeviceAuth {
    fn authenticate(&self, client: &ClientInfo, password: Option<&[u8]>) -> Result<(), Refusal> {
        let snap = self.current();
        let (pk, dn, cred) = self.device(&snap, client).ok_or(Refusal::BadCredentials)?;
        let password = password
            .and_then(|p| std::str::from_utf8(p).ok())
            .ok_or(Refusal::BadCredentials)?;
        let ok = match AlinkClientId::parse(&client.client_id) {
            Ok(None) => ct_eq(password, &cred.secret),
            Ok(Some(alink)) => {
                let content = sign_content(&alink.client_id, &dn, &pk, alink.timestamp.as_deref());
                let expected = sign(alink.sign_method, &cred.secret, &content);
                ct_eq(&password.to_ascii_lowercase(), &expected)
            }
            Err(_) => false,
        };
        match (ok, cred.enabled) {
            (false, _) => Err(Refusal::BadCredentials),
            // Checked after the signature so a disabled device's existence is not revealed to
            // someone who does not hold its secret.
            (true, false) => Err(Refusal::NotAuthorized),
            (true, true) => Ok(()),
        }
    }
}

impl Authorizer for DeviceAuth {
    fn authorize_topic(&self, client: &ClientInfo, topic: &str, _access: Access) -> bool {
        let snap = self.current();
        match self.device(&snap, client) {
            Some((pk, dn, cred)) => {
                cred.enabled
                    && (topic.starts_with(&DeviceTopic::device_prefix(&pk, &dn))
                        || topic.starts_with(&SessionTopic::prefix(&pk, &dn))
                        || self.sub_device_topic(&snap, &(pk, dn), topic))
            }
            None => false,
        }
    }

    fn authorize_subscribe(&self, client: &ClientInfo, filter: &str) -> bool {
        // The prefix is literal, so `/sys/+/…` or `/sys/#` never match another device's topics.
        self.authorize_topic(client, filter, Access::Read)
    }
}

#[cfg(test)]
mod tests;
