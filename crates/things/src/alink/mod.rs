//! The Alink protocol: topics ([`DeviceTopic`]), the request envelope ([`Request`]), replies
//! ([`Reply`]) and reply codes ([`code`]), and the property report forms.

mod envelope;
mod topic;

pub use envelope::{
    batch_login, event_params, history_post, identities, pack_post, property_values,
    signed_identity, topo_add, EnvelopeError, EventParams, PackPost, PropertyValue, Reply, Request,
    SignedIdentity, SubDeviceReport, MAX_PROPERTIES_PER_REPORT, MAX_TIME_AHEAD_MS,
};
pub use topic::{DeviceTopic, Direction, SessionKind, SessionTopic, TopicError, TopicKind};

/// Alink reply codes.
pub mod code {
    /// Success.
    pub const OK: u32 = 200;
    /// The request is malformed (not JSON, no `id`, …).
    pub const BAD_REQUEST: u32 = 400;
    /// Too many requests.
    pub const THROTTLED: u32 = 429;
    /// Parameters do not match the thing model.
    pub const INVALID_PARAMS: u32 = 460;
    /// The platform failed.
    pub const INTERNAL_ERROR: u32 = 500;
    /// No such device.
    pub const DEVICE_NOT_FOUND: u32 = 6100;
    /// More than [`super::MAX_PROPERTIES_PER_REPORT`] properties in one report.
    pub const TOO_MANY_PROPERTIES: u32 = 6106;
    /// The topic is not an Alink topic.
    pub const TOPIC_NOT_PARSED: u32 = 6203;
    /// The device is disabled.
    pub const DEVICE_DISABLED: u32 = 6204;
    /// A sub-device's signature (topo/add, combine/login) does not match its secret, or the
    /// gateway may not register it (`thing/sub/register`: "request auth error").
    pub const AUTH_FAILED: u32 = 401;
    /// The sub-device is not attached to this gateway (add it with `thing/topo/add`).
    pub const TOPO_NOT_FOUND: u32 = 6401;
    /// A gateway cannot be its own sub-device.
    pub const TOPO_SELF: u32 = 6402;
    /// No such product (Alibaba: "查询产品信息失败", the product could not be found).
    pub const PRODUCT_NOT_FOUND: u32 = 6250;
}
