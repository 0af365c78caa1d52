//! API keys: long random tokens for scripts, stored as SHA-256 digests in a file of
//! `name:role:sha256hex` lines (`thingmq api-key` adds them). A fast hash is right here,
//! unlike for passwords: a 256-bit random key cannot be guessed from its digest.

use rand::RngCore;
use sha2::{Digest, Sha256};
use std::path::Path;
use subtle::ConstantTimeEq;

/// What a key may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Role {
    /// Read-only access.
    Viewer,
    /// Everything, including kicking clients, publishing and deleting.
    Admin,
}

impl Role {
    /// Parses `admin` or `viewer`.
    pub fn parse(s: &str) -> Option<Role> {
        match s {
            "admin" => Some(Role::Admin),
            "viewer" => Some(Role::Viewer),
            _ => None,
        }
    }

    /// The name used in the key file.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Admin => "admin",
            Role::Viewer => "viewer",
        }
    }
}

/// One key as stored.
#[derive(Debug, Clone)]
struct Entry {
    name: String,
    role: Role,
    digest: [u8; 32],
}

/// The loaded key file.
#[derive(Debug, Clone, Default)]
pub struct ApiKeys {
    entries: Vec<Entry>,
}

/// A key file that can't be used.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum KeyFileError {
    /// The file could not be read.
    #[error("cannot read API key file {path}: {source}")]
    Read {
        /// The file.
        path: String,
        /// Why.
        source: std::io::Error,
    },
    /// A line is not `name:role:sha256hex`.
    #[error("API key file {path}, line {line}: {message}")]
    Line {
        /// The file.
        path: String,
        /// 1-based line number.
        line: usize,
        /// What is wrong.
        message: String,
    },
}

impl ApiKeys {
    /// Reads a key file.
    pub fn load(path: &Path) -> Result<ApiKeys, KeyFileError> {
        let text = std::fs::read_to_string(path).map_err(|source| KeyFileError::Read {
            path: path.display().to_string(),
            source,
        })?;
        ApiKeys::parse(&text).map_err(|(line, message)| KeyFileError::Line {
            path: path.display().to_string(),
            line,
            message,
        })
    }

    /// Parses key file text; an error gives the 1-based line number and what is wrong.
    pub fn parse(text: &str) -> Result<ApiKeys, (usize, String)> {
        let mut entries = Vec::new();
        for (i, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let n = i + 1;
            let mut parts = line.splitn(3, ':');
            let (Some(name), Some(role), Some(hex)) = (parts.next(), parts.next(), parts.next())
            else {
                return Err((n, "expected name:role:sha256hex".into()));
            };
            if name.is_empty() {
                return Err((n, "empty key name".into()));
            }
            let role = Role::parse(role)
                .ok_or_else(|| (n, format!("unknown role {role:?} (admin or viewer)")))?;
            let digest = parse_hex32(hex).ok_or_else(|| {
                (
                    n,
                    "the third field must be the key's SHA-256 digest as 64 hex digits (never the key itself)".to_string(),
                )
            })?;
            entries.push(Entry {
                name: name.to_owned(),
                role,
                digest,
            });
        }
        Ok(ApiKeys { entries })
    }

    /// The name and role of the key, if it is one of ours. Every entry is compared in
    /// constant time, so timing tells nothing about which digest came close.
    pub fn verify(&self, key: &str) -> Option<(&str, Role)> {
        let digest: [u8; 32] = Sha256::digest(key.as_bytes()).into();
        let mut found = None;
        for e in &self.entries {
            if bool::from(e.digest.ct_eq(&digest)) {
                found = Some((e.name.as_str(), e.role));
            }
        }
        found
    }

    /// Whether any key is configured.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

/// A new random key and the line that stores it.
pub fn generate(name: &str, role: Role) -> (String, String) {
    let mut bytes = [0u8; 32];
    rand::rngs::OsRng.fill_bytes(&mut bytes);
    let key = format!("tmq_{}", to_hex(&bytes));
    let digest: [u8; 32] = Sha256::digest(key.as_bytes()).into();
    let line = format!("{name}:{}:{}", role.as_str(), to_hex(&digest));
    (key, line)
}

fn to_hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn parse_hex32(s: &str) -> Option<[u8; 32]> {
    if s.len() != 64 || !s.is_ascii() {
        return None;
    }
    let mut out = [0u8; 32];
    for (i, o) in out.iter_mut().enumerate() {
        *o = u8::from_str_radix(&s[2 * i..2 * i + 2], 16).ok()?;
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_key_verifies_with_its_role_and_others_do_not() {
        let (key, line) = generate("ci", Role::Viewer);
        let keys = ApiKeys::parse(&format!("# comment\n\n{line}\n")).unwrap();
        assert_eq!(keys.verify(&key), Some(("ci", Role::Viewer)));
        assert_eq!(keys.verify("tmq_wrong"), None);
        assert_eq!(keys.verify(""), None);
        assert!(!line.contains(&key[4..]), "the file must not hold the key");
    }

    #[test]
    fn digest_matches_an_independent_sha256() {
        // printf 'hello' | sha256sum
        let keys = ApiKeys::parse(
            "a:admin:2cf24dba5fb0a30e26e83b2ac5b9e29e1b161e5c1fa7425e73043362938b9824",
        )
        .unwrap();
        assert_eq!(keys.verify("hello"), Some(("a", Role::Admin)));
    }

    #[test]
    fn bad_lines_are_refused_with_their_number() {
        assert_eq!(ApiKeys::parse("x\n").unwrap_err().0, 1);
        let e = ApiKeys::parse("\nx:root:00\n").unwrap_err();
        assert_eq!(e.0, 2);
        assert!(e.1.contains("unknown role"), "{}", e.1);
        let e = ApiKeys::parse("x:admin:tmq_plaintextkey\n").unwrap_err();
        assert!(e.1.contains("SHA-256"), "{}", e.1);
        assert!(ApiKeys::parse(":admin:00\n").is_err());
    }
}
