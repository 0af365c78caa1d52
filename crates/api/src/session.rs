//! Console login sessions, in memory: a random token (the cookie) maps to a user, a role and
//! an expiry. Pure: the caller passes the time in. A restart logs everyone out, which is the
//! price of keeping no session store on disk.

use crate::keys::Role;
use rand::RngCore;
use std::collections::HashMap;
use std::time::{Duration, Instant};

/// A logged-in user as a session knows them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct SessionUser {
    pub(crate) name: String,
    pub(crate) role: Role,
}

#[derive(Debug)]
struct Entry {
    user: SessionUser,
    expires: Instant,
}

/// Open sessions, bounded in number.
#[derive(Debug)]
pub(crate) struct Sessions {
    ttl: Duration,
    max: usize,
    by_token: HashMap<String, Entry>,
}

impl Sessions {
    pub(crate) fn new(ttl: Duration, max: usize) -> Sessions {
        Sessions {
            ttl,
            max,
            by_token: HashMap::new(),
        }
    }

    /// How long a session lasts.
    pub(crate) fn ttl(&self) -> Duration {
        self.ttl
    }

    /// Opens a session and returns its token. When full, expired sessions go first, then
    /// the one closest to expiry.
    pub(crate) fn create(&mut self, user: SessionUser, now: Instant) -> String {
        if self.by_token.len() >= self.max {
            self.by_token.retain(|_, e| e.expires > now);
        }
        if self.by_token.len() >= self.max {
            if let Some(oldest) = self
                .by_token
                .iter()
                .min_by_key(|(_, e)| e.expires)
                .map(|(t, _)| t.clone())
            {
                self.by_token.remove(&oldest);
            }
        }
        let mut bytes = [0u8; 32];
        rand::rngs::OsRng.fill_bytes(&mut bytes);
        let token: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
        self.by_token.insert(
            token.clone(),
            Entry {
                user,
                expires: now + self.ttl,
            },
        );
        token
    }

    /// The user of a live session; an expired one is removed.
    pub(crate) fn get(&mut self, token: &str, now: Instant) -> Option<SessionUser> {
        let live = self.by_token.get(token).map(|e| e.expires > now)?;
        if live {
            self.by_token.get(token).map(|e| e.user.clone())
        } else {
            self.by_token.remove(token);
            None
        }
    }

    /// Ends a session; false when there was none.
    pub(crate) fn remove(&mut self, token: &str) -> bool {
        self.by_token.remove(token).is_some()
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.by_token.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn alice() -> SessionUser {
        SessionUser {
            name: "alice".into(),
            role: Role::Admin,
        }
    }

    #[test]
    fn session_is_valid_until_it_expires() {
        let t0 = Instant::now();
        let mut s = Sessions::new(Duration::from_secs(60), 10);
        let token = s.create(alice(), t0);
        assert_eq!(token.len(), 64);
        assert_eq!(s.get(&token, t0 + Duration::from_secs(59)), Some(alice()));
        assert_eq!(s.get(&token, t0 + Duration::from_secs(60)), None);
        assert_eq!(s.len(), 0, "an expired session is forgotten");
    }

    #[test]
    fn unknown_and_removed_tokens_are_refused() {
        let t0 = Instant::now();
        let mut s = Sessions::new(Duration::from_secs(60), 10);
        let token = s.create(alice(), t0);
        assert_eq!(s.get("nope", t0), None);
        assert!(s.remove(&token));
        assert!(!s.remove(&token));
        assert_eq!(s.get(&token, t0), None);
    }

    #[test]
    fn tokens_are_distinct_and_the_store_is_bounded() {
        let t0 = Instant::now();
        let mut s = Sessions::new(Duration::from_secs(60), 2);
        let a = s.create(alice(), t0);
        let b = s.create(alice(), t0 + Duration::from_secs(1));
        assert_ne!(a, b);
        let c = s.create(alice(), t0 + Duration::from_secs(2));
        assert_eq!(s.len(), 2);
        assert_eq!(
            s.get(&a, t0 + Duration::from_secs(2)),
            None,
            "oldest evicted"
        );
        assert!(s.get(&b, t0 + Duration::from_secs(2)).is_some());
        assert!(s.get(&c, t0 + Duration::from_secs(2)).is_some());
    }
}
