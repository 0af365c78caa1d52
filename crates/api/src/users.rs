//! Console users: a file of `name:role:hash` lines (`thingmq console-user` edits it), the
//! hash an argon2id PHC string made by [`thingmq_auth::hash_password`]. Verification goes
//! through [`thingmq_auth::PasswordFile`], so unknown users cost as much time as wrong
//! passwords.

use crate::keys::Role;
use std::path::Path;
use thingmq_auth::{hash_password, validate_username, AuthError, PasswordFile};

#[derive(Debug, Clone)]
struct User {
    name: String,
    role: Role,
    hash: String,
}

/// The loaded users file.
#[derive(Debug, Clone, Default)]
pub struct ConsoleUsers {
    users: Vec<User>,
    passwords: PasswordFile,
}

/// A users file that can't be used.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum UsersFileError {
    /// The file could not be read.
    #[error("cannot read console users file {path}: {source}")]
    Read {
        /// The file.
        path: String,
        /// Why.
        source: std::io::Error,
    },
    /// A line is not `name:role:hash`.
    #[error("console users file {path}, line {line}: {message}")]
    Line {
        /// The file.
        path: String,
        /// 1-based line number.
        line: usize,
        /// What is wrong.
        message: String,
    },
    /// A user name or password that cannot be stored.
    #[error(transparent)]
    Auth(#[from] AuthError),
}

impl ConsoleUsers {
    /// Reads a users file.
    pub fn load(path: &Path) -> Result<ConsoleUsers, UsersFileError> {
        let text = std::fs::read_to_string(path).map_err(|source| UsersFileError::Read {
            path: path.display().to_string(),
            source,
        })?;
        ConsoleUsers::parse(&text).map_err(|(line, message)| UsersFileError::Line {
            path: path.display().to_string(),
            line,
            message,
        })
    }

    /// Parses users file text; an error gives the 1-based line number and what is wrong.
    pub fn parse(text: &str) -> Result<ConsoleUsers, (usize, String)> {
        let mut users: Vec<User> = Vec::new();
        for (i, line) in text.lines().enumerate() {
            let n = i + 1;
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let mut parts = line.splitn(3, ':');
            let (Some(name), Some(role), Some(hash)) = (parts.next(), parts.next(), parts.next())
            else {
                return Err((n, "expected name:role:hash".into()));
            };
            validate_username(name).map_err(|e| (n, e.to_string()))?;
            let role = Role::parse(role)
                .ok_or_else(|| (n, format!("unknown role {role:?} (admin or viewer)")))?;
            if !hash.starts_with("$argon2id$") {
                return Err((
                    n,
                    "the password must be an argon2id hash (use `thingmq console-user add`)".into(),
                ));
            }
            if users.iter().any(|u| u.name == name) {
                return Err((n, format!("user {name:?} appears twice")));
            }
            users.push(User {
                name: name.to_owned(),
                role,
                hash: hash.to_owned(),
            });
        }
        ConsoleUsers::build(users).map_err(|e| (0, e.to_string()))
    }

    fn build(users: Vec<User>) -> Result<ConsoleUsers, AuthError> {
        let text: String = users
            .iter()
            .map(|u| format!("{}:{}\n", u.name, u.hash))
            .collect();
        Ok(ConsoleUsers {
            passwords: PasswordFile::parse(&text)?,
            users,
        })
    }

    /// The user's role when the password is right. Slow (argon2id): call off the async
    /// threads.
    pub fn verify(&self, name: &str, password: &[u8]) -> Option<Role> {
        if !self.passwords.verify(name, password) {
            return None;
        }
        self.users.iter().find(|u| u.name == name).map(|u| u.role)
    }

    /// The role of a user, if they exist.
    pub fn role(&self, name: &str) -> Option<Role> {
        self.users.iter().find(|u| u.name == name).map(|u| u.role)
    }

    /// Adds a user or replaces their password and role.
    pub fn set(&mut self, name: &str, role: Role, password: &[u8]) -> Result<(), UsersFileError> {
        validate_username(name)?;
        let hash = hash_password(password)?;
        let mut users = std::mem::take(&mut self.users);
        match users.iter_mut().find(|u| u.name == name) {
            Some(u) => {
                u.role = role;
                u.hash = hash;
            }
            None => users.push(User {
                name: name.to_owned(),
                role,
                hash,
            }),
        }
        *self = ConsoleUsers::build(users)?;
        Ok(())
    }

    /// Removes a user; false when there was none.
    pub fn remove(&mut self, name: &str) -> Result<bool, UsersFileError> {
        let before = self.users.len();
        let users: Vec<User> = std::mem::take(&mut self.users)
            .into_iter()
            .filter(|u| u.name != name)
            .collect();
        let removed = users.len() != before;
        *self = ConsoleUsers::build(users)?;
        Ok(removed)
    }

    /// The names and roles, in file order.
    pub fn list(&self) -> impl Iterator<Item = (&str, Role)> {
        self.users.iter().map(|u| (u.name.as_str(), u.role))
    }

    /// Whether there are no users.
    pub fn is_empty(&self) -> bool {
        self.users.is_empty()
    }

    /// The file text.
    pub fn to_text(&self) -> String {
        self.users
            .iter()
            .map(|u| format!("{}:{}:{}\n", u.name, u.role.as_str(), u.hash))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn set_users_verify_with_their_role_after_a_round_trip_through_text() {
        let mut users = ConsoleUsers::default();
        users.set("alice", Role::Admin, b"wonderland").unwrap();
        users.set("bob", Role::Viewer, b"builder").unwrap();
        let text = users.to_text();
        assert!(!text.contains("wonderland"));
        let users = ConsoleUsers::parse(&format!("# users\n\n{text}")).unwrap();
        assert_eq!(users.verify("alice", b"wonderland"), Some(Role::Admin));
        assert_eq!(users.verify("bob", b"builder"), Some(Role::Viewer));
        assert_eq!(users.verify("alice", b"builder"), None);
        assert_eq!(users.verify("carol", b"x"), None);
    }

    #[test]
    fn set_replaces_role_and_password_and_remove_deletes() {
        let mut users = ConsoleUsers::default();
        users.set("alice", Role::Admin, b"one").unwrap();
        users.set("alice", Role::Viewer, b"two").unwrap();
        assert_eq!(users.list().count(), 1);
        assert_eq!(users.verify("alice", b"one"), None);
        assert_eq!(users.verify("alice", b"two"), Some(Role::Viewer));
        assert!(users.remove("alice").unwrap());
        assert!(!users.remove("alice").unwrap());
        assert!(users.is_empty());
    }

    #[test]
    fn bad_lines_are_refused_with_their_number() {
        assert_eq!(ConsoleUsers::parse("alice\n").unwrap_err().0, 1);
        let e = ConsoleUsers::parse("\nalice:root:$argon2id$x\n").unwrap_err();
        assert_eq!(e.0, 2);
        assert!(e.1.contains("unknown role"), "{}", e.1);
        let e = ConsoleUsers::parse("alice:admin:plaintext\n").unwrap_err();
        assert!(e.1.contains("argon2id"), "{}", e.1);
        assert!(ConsoleUsers::set(&mut ConsoleUsers::default(), "a:b", Role::Admin, b"p").is_err());
    }
}
