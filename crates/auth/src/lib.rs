//! Authentication and authorization for thingmq. Pure: no sockets, no clock; the only I/O is
//! the `load` helpers reading a file.
//!
//! - [`PasswordFile`]: `username:hash` lines with argon2id hashes (Mosquitto `$7$` PBKDF2
//!   lines are verified too), edited by `thingmq passwd`.
//! - [`AclFile`]: Mosquitto-compatible ACL rules (`user`, `topic`, `pattern` with `%c`/`%u`).
//! - [`Authenticator`] and [`Authorizer`]: the hooks the server calls on CONNECT and on
//!   PUBLISH / SUBSCRIBE / delivery, so other credential sources can plug in later.
//! - [`PasswordAuth`]: the anonymous policy combined with an optional password file.

mod acl;
mod error;
mod password;

pub use acl::AclFile;
pub use error::AuthError;
pub use password::{hash_password, validate_username, PasswordFile};

/// Who is asking: for `%c` / `%u` substitution and per-user rules.
#[derive(Debug, Clone)]
pub struct ClientInfo {
    /// The MQTT client identifier (the server-assigned one when the client sent none).
    pub client_id: String,
    /// The CONNECT username, if any.
    pub username: Option<String>,
}

/// The kind of topic access being checked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// Subscribe, or receive a message.
    Read,
    /// Publish (including a will message).
    Write,
}

/// Why a client was not let in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// Unknown user, wrong or missing password (CONNACK 0x86 in MQTT 5, 4 in 3.1.1).
    BadCredentials,
    /// The credentials may be fine but this client may not connect, e.g. anonymous clients
    /// when they are not allowed (CONNACK 0x87 in MQTT 5, 5 in 3.1.1).
    NotAuthorized,
}

/// Decides whether a client may connect.
pub trait Authenticator: Send + Sync + std::fmt::Debug {
    /// `Ok(())` to accept; `Err` says why not.
    fn authenticate(&self, client: &ClientInfo, password: Option<&[u8]>) -> Result<(), Refusal>;
}

/// Decides what a connected client may do with topics.
pub trait Authorizer: Send + Sync + std::fmt::Debug {
    /// Publish to (`Write`) or receive a message on (`Read`) a topic name.
    fn authorize_topic(&self, client: &ClientInfo, topic: &str, access: Access) -> bool;
    /// Subscribe with a topic filter, which may contain wildcards.
    fn authorize_subscribe(&self, client: &ClientInfo, filter: &str) -> bool;
}

/// No username, an unknown user or a wrong or missing password: [`Refusal::BadCredentials`].
impl Authenticator for PasswordFile {
    fn authenticate(&self, client: &ClientInfo, password: Option<&[u8]>) -> Result<(), Refusal> {
        let (Some(username), Some(password)) = (&client.username, password) else {
            return Err(Refusal::BadCredentials);
        };
        if self.verify(username, password) {
            Ok(())
        } else {
            Err(Refusal::BadCredentials)
        }
    }
}

impl Authorizer for AclFile {
    fn authorize_topic(&self, client: &ClientInfo, topic: &str, access: Access) -> bool {
        self.check_topic(client, topic, access)
    }

    fn authorize_subscribe(&self, client: &ClientInfo, filter: &str) -> bool {
        self.check_subscribe(client, filter)
    }
}

/// The anonymous policy plus an optional password file, as in Mosquitto's `allow_anonymous`
/// and `password_file`.
#[derive(Debug, Clone)]
pub struct PasswordAuth {
    /// Whether clients may connect without a username. With no password file it also decides
    /// whether clients *with* a username may connect, since nothing can check them.
    pub allow_anonymous: bool,
    /// When set, every client that gives a username must pass it.
    pub passwords: Option<PasswordFile>,
}

/// - no username: accepted iff `allow_anonymous`, else [`Refusal::NotAuthorized`];
/// - a username and a password file: the file decides ([`Refusal::BadCredentials`] on failure);
/// - a username and no password file: accepted iff `allow_anonymous`, else
///   [`Refusal::NotAuthorized`].
impl Authenticator for PasswordAuth {
    fn authenticate(&self, client: &ClientInfo, password: Option<&[u8]>) -> Result<(), Refusal> {
        match (&client.username, &self.passwords) {
            (Some(_), Some(file)) => file.authenticate(client, password),
            _ if self.allow_anonymous => Ok(()),
            _ => Err(Refusal::NotAuthorized),
        }
    }
}
