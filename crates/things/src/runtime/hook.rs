//! The server-side face of device authentication: an [`AccessHook`] that claims clients whose
//! username is `deviceName&productKey`, checks their Alink signature or secret, and confines
//! them to their own `/sys/{productKey}/{deviceName}/` topics.

use std::sync::Arc;

use thingmq_auth::{Authenticator, ClientInfo, Refusal};
use thingmq_broker::AccessPolicy;
use thingmq_server::access::AccessHook;

use crate::device_auth::DeviceAuth;

/// Device credentials for the broker. Usernames containing `&` belong to the device layer:
/// such a client is a device or is refused; other clients meet the password file and ACL.
#[derive(Debug, Clone)]
pub struct DeviceAccessHook {
    auth: Arc<DeviceAuth>,
}

impl DeviceAccessHook {
    pub(super) fn new(auth: Arc<DeviceAuth>) -> Self {
        DeviceAccessHook { auth }
    }
}

impl AccessHook for DeviceAccessHook {
    fn authenticate(
        &self,
        client: &ClientInfo,
        password: Option<&[u8]>,
    ) -> Option<Result<(), Refusal>> {
        self.auth
            .claims(client)
            .then(|| self.auth.authenticate(client, password))
    }

    fn policy(&self, client: &ClientInfo) -> Option<Arc<dyn AccessPolicy>> {
        self.auth
            .policy(client)
            .map(|p| Arc::new(p) as Arc<dyn AccessPolicy>)
    }
}
