//! Products and devices.

use std::collections::BTreeMap;

use rand::RngCore;

use crate::tsl::ThingModel;
use crate::validate::ValidationMode;

/// How a product's devices reach the platform.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NodeType {
    /// Connects itself.
    Direct,
    /// Connects itself and reports for sub-devices.
    Gateway,
    /// Reaches the platform through a gateway.
    SubDevice,
}

impl NodeType {
    /// The name used in storage.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Direct => "direct",
            Self::Gateway => "gateway",
            Self::SubDevice => "sub-device",
        }
    }

    /// Parses [`Self::as_str`]'s output.
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "direct" => Some(Self::Direct),
            "gateway" => Some(Self::Gateway),
            "sub-device" => Some(Self::SubDevice),
            _ => None,
        }
    }
}

/// A kind of device: identity, thing model and how strictly its data is checked.
#[derive(Debug, Clone, PartialEq)]
pub struct Product {
    /// Unique key, the `{productKey}` of topics.
    pub product_key: String,
    /// Human name.
    pub name: String,
    /// Direct, gateway or sub-device.
    pub node_type: NodeType,
    /// How reports are checked against `model`.
    pub validation: ValidationMode,
    /// The thing model.
    pub model: ThingModel,
    /// Gateways may register devices of this product with `thing/sub/register` (Alibaba's
    /// "dynamic registration" switch); off by default, so only the registry creates devices.
    pub dynamic_register: bool,
    /// Creation time, UTC ms.
    pub created_ms: i64,
}

/// One device of a product.
#[derive(Clone, PartialEq)]
pub struct Device {
    /// Its product.
    pub product_key: String,
    /// Unique within the product, the `{deviceName}` of topics.
    pub device_name: String,
    /// The shared secret the device signs CONNECT with.
    pub device_secret: String,
    /// A disabled device is refused at CONNECT and by the ACL.
    pub enabled: bool,
    /// Free-form labels.
    pub tags: BTreeMap<String, String>,
    /// Creation time, UTC ms.
    pub created_ms: i64,
    /// Last CONNECT accepted, UTC ms.
    pub last_online_ms: Option<i64>,
    /// Peer address of the last connection.
    pub last_ip: Option<String>,
    /// For a sub-device: the gateway (productKey, deviceName) allowed to report for it in
    /// `thing/event/property/pack/post`.
    pub gateway: Option<(String, String)>,
}

/// The secret stays out of logs.
impl std::fmt::Debug for Device {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Device")
            .field("product_key", &self.product_key)
            .field("device_name", &self.device_name)
            .field("device_secret", &"<redacted>")
            .field("enabled", &self.enabled)
            .field("tags", &self.tags)
            .field("created_ms", &self.created_ms)
            .field("last_online_ms", &self.last_online_ms)
            .field("last_ip", &self.last_ip)
            .field("gateway", &self.gateway)
            .finish()
    }
}

impl Device {
    /// A new enabled device with a fresh secret.
    pub fn new(product_key: &str, device_name: &str, now_ms: i64) -> Self {
        Self {
            product_key: product_key.to_string(),
            device_name: device_name.to_string(),
            device_secret: generate_secret(),
            enabled: true,
            tags: BTreeMap::new(),
            created_ms: now_ms,
            last_online_ms: None,
            last_ip: None,
            gateway: None,
        }
    }
}

/// A device secret: 32 hex digits (128 bits) from the operating system's CSPRNG, the same
/// length as Alibaba's.
pub fn generate_secret() -> String {
    let mut bytes = [0u8; 16];
    rand::rngs::OsRng.fill_bytes(&mut bytes);
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Product keys and device names: 1–64 characters of letters, digits and `-_.@:`, so they are
/// safe as topic segments and in the `deviceName&productKey` username.
pub fn valid_name(s: &str) -> bool {
    (1..=64).contains(&s.len())
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | '@' | ':'))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_are_32_hex_digits_and_differ() {
        let a = generate_secret();
        let b = generate_secret();
        assert_eq!(a.len(), 32);
        assert!(a.chars().all(|c| c.is_ascii_hexdigit()));
        assert_ne!(a, b);
    }

    #[test]
    fn names_that_would_break_topics_or_usernames_are_invalid() {
        assert!(valid_name("lamp-01"));
        assert!(valid_name("a1B2c3.d@e:f_g"));
        for bad in ["", "a/b", "a+b", "a#", "a&b", "a b", &"x".repeat(65)] {
            assert!(!valid_name(bad), "{bad}");
        }
    }

    #[test]
    fn node_types_round_trip() {
        for t in [NodeType::Direct, NodeType::Gateway, NodeType::SubDevice] {
            assert_eq!(NodeType::parse(t.as_str()), Some(t));
        }
        assert_eq!(NodeType::parse("hub"), None);
    }

    #[test]
    fn debug_output_hides_the_secret() {
        let d = Device::new("pk", "dn", 1);
        assert!(!format!("{d:?}").contains(&d.device_secret));
    }
}
