//! The authorization hook the session consults. The broker core does not know where rules
//! come from (ACL file, device registry, HTTP); the server gives each session a policy bound
//! to that client's identity.

/// What one client may do. Implementations must be cheap: they run on every PUBLISH and
/// every delivery.
pub trait AccessPolicy: Send + Sync + std::fmt::Debug {
    /// May the client publish to this topic name (also checked for its will)?
    fn can_publish(&self, topic: &str) -> bool;
    /// May the client subscribe with this filter (as written, `$share/` prefix removed)?
    fn can_subscribe(&self, filter: &str) -> bool;
    /// May the client receive a message on this topic name (live and retained)?
    fn can_receive(&self, topic: &str) -> bool;
}

/// Allows everything: the policy when no ACL is configured.
#[derive(Debug, Clone, Copy, Default)]
pub struct AllowAll;

impl AllowAll {
    /// One shared instance: an `Arc` per session, even of a zero-sized type, is an
    /// allocation per connection.
    pub fn shared() -> std::sync::Arc<dyn AccessPolicy> {
        static SHARED: std::sync::OnceLock<std::sync::Arc<dyn AccessPolicy>> =
            std::sync::OnceLock::new();
        SHARED.get_or_init(|| std::sync::Arc::new(AllowAll)).clone()
    }
}

impl AccessPolicy for AllowAll {
    fn can_publish(&self, _: &str) -> bool {
        true
    }
    fn can_subscribe(&self, _: &str) -> bool {
        true
    }
    fn can_receive(&self, _: &str) -> bool {
        true
    }
}
