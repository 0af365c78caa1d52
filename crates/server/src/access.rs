//! Authentication and authorization as the server applies them: the password file and ACL
//! from `[auth]` (or a listener's own overrides), loaded at start and reloaded on SIGHUP (a
//! broken file keeps the old rules),
//! bound to each client as a [`thingmq_broker::AccessPolicy`]; and [`AccessHook`]s, through
//! which other credential sources (the device registry) claim their own clients.

use std::path::PathBuf;
use std::sync::Arc;
use thingmq_auth::{Access, AclFile, Authenticator, Authorizer, ClientInfo, PasswordFile, Refusal};
use thingmq_broker::{AccessPolicy, AllowAll};

/// The `[auth]` settings, or a listener's overrides of them.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AuthConfig {
    /// Whether clients without a username may connect. `None`: only on loopback listeners
    /// (as Mosquitto 2 does).
    pub allow_anonymous: Option<bool>,
    /// Password file (`thingmq passwd` manages it).
    pub password_file: Option<PathBuf>,
    /// ACL file; when set, everything it does not grant is denied.
    pub acl_file: Option<PathBuf>,
}

/// Credentials and permissions that live outside the config files, such as the device
/// registry's. Hooks are asked first, in the order they were added; a hook answers only for
/// the clients it recognises (e.g. usernames of the form `deviceName&productKey`) and
/// returns `None` for the rest, which then meet the password file and ACL.
pub trait AccessHook: Send + Sync + std::fmt::Debug {
    /// `None`: not this hook's client. `Some(Ok(()))` lets it in; `Some(Err(_))` refuses it.
    /// Runs on a blocking thread when the CONNECT carries a password, so it may take a moment
    /// (e.g. a hash); without one it runs on the connection's task and must be quick.
    fn authenticate(
        &self,
        client: &ClientInfo,
        password: Option<&[u8]>,
    ) -> Option<Result<(), Refusal>>;
    /// The policy for a client this hook lets in (`None` for clients it does not know).
    fn policy(&self, client: &ClientInfo) -> Option<Arc<dyn AccessPolicy>>;
}

impl AuthConfig {
    /// These settings with each key a listener sets in `overrides` replaced.
    pub fn with_overrides(&self, overrides: &AuthConfig) -> AuthConfig {
        AuthConfig {
            allow_anonymous: overrides.allow_anonymous.or(self.allow_anonymous),
            password_file: overrides
                .password_file
                .clone()
                .or_else(|| self.password_file.clone()),
            acl_file: overrides.acl_file.clone().or_else(|| self.acl_file.clone()),
        }
    }
}

/// The loaded rules: the hooks, asked first on every listener, then each listener's files
/// (listeners without overrides share `[auth]`'s).
#[derive(Debug, Clone)]
pub(crate) struct AccessControl {
    /// Indexed by listener, in config order; an index past the end (an in-process link,
    /// which has no listener) uses the first.
    listeners: Vec<Arc<Rules>>,
    hooks: Vec<Arc<dyn AccessHook>>,
}

impl AccessControl {
    /// Loads the files each listener's effective settings name (the same settings are loaded
    /// once); an error names the file and line.
    pub(crate) fn load(configs: &[AuthConfig]) -> Result<AccessControl, thingmq_auth::AuthError> {
        let mut loaded: Vec<Arc<Rules>> = Vec::new();
        let mut listeners = Vec::new();
        for config in configs {
            let rules = match loaded.iter().find(|r| r.config == *config) {
                Some(r) => r.clone(),
                None => {
                    let r = Arc::new(Rules::load(config)?);
                    loaded.push(r.clone());
                    r
                }
            };
            listeners.push(rules);
        }
        if listeners.is_empty() {
            listeners.push(Arc::new(Rules::load(&AuthConfig::default())?));
        }
        Ok(AccessControl {
            listeners,
            hooks: Vec::new(),
        })
    }

    /// Loads the same files again (SIGHUP); hooks stay.
    pub(crate) fn reload(&self) -> Result<AccessControl, thingmq_auth::AuthError> {
        let configs: Vec<AuthConfig> = self.listeners.iter().map(|r| r.config.clone()).collect();
        let mut fresh = AccessControl::load(&configs)?;
        fresh.hooks = self.hooks.clone();
        Ok(fresh)
    }

    /// These rules with one more hook.
    pub(crate) fn with_hook(&self, hook: Arc<dyn AccessHook>) -> AccessControl {
        let mut next = self.clone();
        next.hooks.push(hook);
        next
    }

    fn rules(&self, listener: usize) -> &Rules {
        self.listeners.get(listener).unwrap_or(&self.listeners[0])
    }

    /// Checks a CONNECT's credentials: the hooks first, then the rules of the listener it
    /// came in on. `loopback` says whether the listener is bound to a loopback address
    /// (and, behind a proxy, the client's real address is loopback), which decides
    /// anonymous access when it is not configured.
    pub(crate) fn authenticate(
        &self,
        listener: usize,
        loopback: bool,
        client: &ClientInfo,
        password: Option<&[u8]>,
    ) -> Result<(), Refusal> {
        for hook in &self.hooks {
            if let Some(verdict) = hook.authenticate(client, password) {
                return verdict;
            }
        }
        self.rules(listener)
            .authenticate(loopback, client, password)
    }

    /// The policy for one client of a listener.
    pub(crate) fn policy_for(&self, listener: usize, client: ClientInfo) -> Arc<dyn AccessPolicy> {
        if let Some(policy) = self.hooks.iter().find_map(|h| h.policy(&client)) {
            return policy;
        }
        self.rules(listener).policy_for(client)
    }
}

/// One listener's password file and ACL.
#[derive(Debug)]
struct Rules {
    config: AuthConfig,
    passwords: Option<Arc<PasswordFile>>,
    acl: Option<Arc<AclFile>>,
}

impl Rules {
    /// Loads the files named in `config`; an error names the file and line.
    fn load(config: &AuthConfig) -> Result<Rules, thingmq_auth::AuthError> {
        let passwords = config
            .password_file
            .as_deref()
            .map(PasswordFile::load)
            .transpose()?
            .map(Arc::new);
        let acl = config
            .acl_file
            .as_deref()
            .map(AclFile::load)
            .transpose()?
            .map(Arc::new);
        Ok(Rules {
            config: config.clone(),
            passwords,
            acl,
        })
    }

    fn authenticate(
        &self,
        loopback: bool,
        client: &ClientInfo,
        password: Option<&[u8]>,
    ) -> Result<(), Refusal> {
        let allow_anonymous = self.config.allow_anonymous.unwrap_or(loopback);
        match (&client.username, &self.passwords) {
            (None, _) | (Some(_), None) if allow_anonymous => Ok(()),
            (Some(_), Some(passwords)) => passwords.authenticate(client, password),
            _ => Err(Refusal::NotAuthorized),
        }
    }

    fn policy_for(&self, client: ClientInfo) -> Arc<dyn AccessPolicy> {
        match &self.acl {
            Some(acl) => Arc::new(AclPolicy {
                client,
                acl: acl.clone(),
            }),
            None => AllowAll::shared(),
        }
    }
}

/// An ACL bound to one client's identity.
#[derive(Debug)]
struct AclPolicy {
    client: ClientInfo,
    acl: Arc<AclFile>,
}

impl AccessPolicy for AclPolicy {
    fn can_publish(&self, topic: &str) -> bool {
        self.acl.authorize_topic(&self.client, topic, Access::Write)
    }
    fn can_subscribe(&self, filter: &str) -> bool {
        self.acl.authorize_subscribe(&self.client, filter)
    }
    fn can_receive(&self, topic: &str) -> bool {
        self.acl.authorize_topic(&self.client, topic, Access::Read)
    }
}
