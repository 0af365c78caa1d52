//! The Alink protocol: topics ([`DeviceTopic`]), the request envelope ([`Request`]), replies
//! ([`Reply`]) and reply codes ([`code`]), and the property report forms.

mod envelope;
mod topic;

pub use envelope::{
    event_params, history_post, pack_post, property_values, EnvelopeError, EventParams, PackPost,
    PropertyValue, Reply, Request, SubDeviceReport, MAX_PROPERTIES_PER_REPORT, MAX_TIME_AHEAD_MS,
};
pub use topic::{DeviceTopic, Direction, TopicError, TopicKind};

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
}
