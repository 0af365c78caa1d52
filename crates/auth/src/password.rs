//! Password files: one `username:hash` per line, like Mosquitto's `password_file`.
//!
//! New hashes are argon2id PHC strings (`$argon2id$v=19$m=...`). Lines written by
//! `mosquitto_passwd` (PBKDF2-SHA512, `$7$iterations$salt$hash`) are verified too, so a
//! Mosquitto password file can be used as is and migrated user by user. Anything else in the
//! password position, plain text in particular, is refused when the file is parsed.

use std::collections::HashMap;
use std::path::Path;

use argon2::password_hash::rand_core::OsRng;
use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::Argon2;
use base64::Engine as _;
use subtle::ConstantTimeEq;

use crate::error::{read_file, AuthError};

/// An argon2id hash (default parameters) of a password nobody knows, verified when the user
/// does not exist so that "unknown user" and "wrong password" take about the same time.
const DUMMY_HASH: &str =
    "$argon2id$v=19$m=19456,t=2,p=1$OPHZcBq2wvB3k8YsEMLp/Q$HXs/pBYkr2dErHTOP7clIG4Dt7ACtric4Bov3EGsCjg";

/// Mosquitto's PBKDF2 output length: SHA-512's.
const PBKDF2_LEN: usize = 64;

/// Hashes a password as an argon2id PHC string with a fresh random salt and the argon2 crate's
/// default parameters (19 MiB, 2 passes, 1 lane: the OWASP minimum).
pub fn hash_password(password: &[u8]) -> Result<String, AuthError> {
    let salt = SaltString::generate(&mut OsRng);
    Argon2::default()
        .hash_password(password, &salt)
        .map(|hash| hash.to_string())
        .map_err(|e| AuthError::Hash(e.to_string()))
}

/// Checks that a username can be stored in a password file and read back unchanged.
///
/// Refused: empty names, `:` (the field separator), control characters (newlines would split
/// the line), a leading `#` (the line would read as a comment) and leading or trailing
/// whitespace (easy to type by accident, invisible in the file).
pub fn validate_username(username: &str) -> Result<(), AuthError> {
    let reason = if username.is_empty() {
        Some("it is empty")
    } else if username.contains(':') {
        Some("it contains `:`")
    } else if username.chars().any(char::is_control) {
        Some("it contains a control character")
    } else if username.starts_with('#') {
        Some("it starts with `#`")
    } else if username.trim() != username {
        Some("it starts or ends with whitespace")
    } else {
        None
    };
    match reason {
        Some(reason) => Err(AuthError::InvalidUsername {
            user: username.to_owned(),
            reason,
        }),
        None => Ok(()),
    }
}

/// A hash from a password file, checked when the file was parsed.
#[derive(Debug, Clone)]
enum StoredHash {
    /// An argon2id PHC string; its parameters and salt are read from it at verify time.
    Argon2id(String),
    /// Mosquitto's `$7$`: PBKDF2-HMAC-SHA512 over the password with a raw salt.
    MosquittoPbkdf2 {
        iterations: u32,
        salt: Vec<u8>,
        hash: [u8; PBKDF2_LEN],
    },
}

impl StoredHash {
    /// Recognises a hash, or returns `None` for anything that is not one we can verify.
    fn parse(text: &str) -> Option<Self> {
        if text.starts_with("$argon2id$") {
            let parsed = PasswordHash::new(text).ok()?;
            // Reject damaged parameters now rather than failing every login later.
            argon2::Params::try_from(&parsed).ok()?;
            parsed.hash?;
            return Some(StoredHash::Argon2id(text.to_owned()));
        }
        if let Some(rest) = text.strip_prefix("$7$") {
            let mut parts = rest.split('$');
            let (Some(iterations), Some(salt), Some(hash), None) =
                (parts.next(), parts.next(), parts.next(), parts.next())
            else {
                return None;
            };
            let iterations: u32 = iterations.parse().ok().filter(|&n| n > 0)?;
            let b64 = base64::engine::general_purpose::STANDARD;
            let salt = b64.decode(salt).ok().filter(|s| !s.is_empty())?;
            let hash = b64.decode(hash).ok()?.try_into().ok()?;
            return Some(StoredHash::MosquittoPbkdf2 {
                iterations,
                salt,
                hash,
            });
        }
        None
    }

    fn verify(&self, password: &[u8]) -> bool {
        match self {
            StoredHash::Argon2id(phc) => verify_argon2(phc, password),
            StoredHash::MosquittoPbkdf2 {
                iterations,
                salt,
                hash,
            } => {
                let mut out = [0u8; PBKDF2_LEN];
                pbkdf2::pbkdf2_hmac::<sha2::Sha512>(password, salt, *iterations, &mut out);
                out.ct_eq(hash).into()
            }
        }
    }
}

/// Verifies with the parameters stored in the PHC string; the comparison inside the argon2
/// crate is constant-time.
fn verify_argon2(phc: &str, password: &[u8]) -> bool {
    PasswordHash::new(phc)
        .map(|hash| Argon2::default().verify_password(password, &hash).is_ok())
        .unwrap_or(false)
}

/// One line of the file, kept so that rewriting the file keeps its comments and order.
#[derive(Debug, Clone)]
enum Line {
    /// A blank line or `#` comment, written back verbatim.
    Other(String),
    User {
        name: String,
        /// The hash as it appeared in the file (or as produced by [`hash_password`]).
        text: String,
        hash: StoredHash,
    },
}

/// A Mosquitto-style password file: one `username:hash` per line, blank lines and `#`
/// comments allowed.
///
/// Parsing refuses lines whose hash is not recognised, so a plain-text file fails loudly at
/// startup instead of rejecting every login. [`to_text`](Self::to_text) writes the users back in
/// file order (new users at the end) with comments kept.
#[derive(Clone, Default)]
pub struct PasswordFile {
    lines: Vec<Line>,
    /// Username → index into `lines`, for lookups on every CONNECT.
    index: HashMap<String, usize>,
}

/// Lists the users only: hashes stay out of logs.
impl std::fmt::Debug for PasswordFile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PasswordFile")
            .field("users", &self.users().collect::<Vec<_>>())
            .finish()
    }
}

impl PasswordFile {
    /// Parses the text of a password file.
    pub fn parse(text: &str) -> Result<Self, AuthError> {
        let mut file = PasswordFile::default();
        for (i, raw) in text.lines().enumerate() {
            let line = i + 1;
            let trimmed = raw.trim();
            if trimmed.is_empty() || trimmed.starts_with('#') {
                file.lines.push(Line::Other(raw.to_owned()));
                continue;
            }
            let (name, hash) = raw
                .trim_end()
                .split_once(':')
                .ok_or(AuthError::MalformedPasswordLine { line })?;
            if name.is_empty() {
                return Err(AuthError::MalformedPasswordLine { line });
            }
            let stored = StoredHash::parse(hash).ok_or_else(|| AuthError::UnrecognizedHash {
                line,
                user: name.to_owned(),
            })?;
            if let Some(&first) = file.index.get(name) {
                return Err(AuthError::DuplicateUser {
                    line,
                    // While parsing, every text line is one entry of `lines`.
                    first: first + 1,
                    user: name.to_owned(),
                });
            }
            file.index.insert(name.to_owned(), file.lines.len());
            file.lines.push(Line::User {
                name: name.to_owned(),
                text: hash.to_owned(),
                hash: stored,
            });
        }
        Ok(file)
    }

    /// Reads and parses a password file; errors name the path.
    pub fn load(path: &Path) -> Result<Self, AuthError> {
        let text = read_file(path)?;
        Self::parse(&text).map_err(|e| e.in_file(path))
    }

    /// Is `password` right for `username`? An unknown user costs about as much time as a
    /// known one with a wrong password, so timing does not reveal which users exist.
    pub fn verify(&self, username: &str, password: &[u8]) -> bool {
        match self.index.get(username).map(|&i| &self.lines[i]) {
            Some(Line::User { hash, .. }) => hash.verify(password),
            _ => {
                // The result is ignored; the call is there for its running time.
                let _ = verify_argon2(DUMMY_HASH, password);
                false
            }
        }
    }

    /// Adds a user or replaces their password, hashing it with argon2id and a fresh salt.
    pub fn set(&mut self, username: &str, password: &[u8]) -> Result<(), AuthError> {
        validate_username(username)?;
        let text = hash_password(password)?;
        let hash = StoredHash::Argon2id(text.clone());
        let entry = Line::User {
            name: username.to_owned(),
            text,
            hash,
        };
        match self.index.get(username) {
            Some(&i) => self.lines[i] = entry,
            None => {
                self.index.insert(username.to_owned(), self.lines.len());
                self.lines.push(entry);
            }
        }
        Ok(())
    }

    /// Removes a user; returns whether they were there.
    pub fn remove(&mut self, username: &str) -> bool {
        let Some(i) = self.index.remove(username) else {
            return false;
        };
        self.lines.remove(i);
        for slot in self.index.values_mut() {
            if *slot > i {
                *slot -= 1;
            }
        }
        true
    }

    /// The users, in file order.
    pub fn users(&self) -> impl Iterator<Item = &str> {
        self.lines.iter().filter_map(|line| match line {
            Line::User { name, .. } => Some(name.as_str()),
            Line::Other(_) => None,
        })
    }

    /// Is this user in the file?
    pub fn contains(&self, username: &str) -> bool {
        self.index.contains_key(username)
    }

    /// The file's text: comments and users in their original order, new users at the end,
    /// every line ending in `\n`.
    pub fn to_text(&self) -> String {
        let mut out = String::new();
        for line in &self.lines {
            match line {
                Line::Other(text) => out.push_str(text),
                Line::User { name, text, .. } => {
                    out.push_str(name);
                    out.push(':');
                    out.push_str(text);
                }
            }
            out.push('\n');
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Written by `mosquitto_passwd -b` (mosquitto 2.0.11): alice / "correct horse",
    /// bob / "p@ss:w0rd".
    const MOSQUITTO_FILE: &str = "\
alice:$7$101$VRU+G4zxU656JSEP$q+QPmmxevMB8LteqTyc0+v/s24/VG40kqYGJiPsQGBPBUaLLdzprNd1+7vt8SVmWpbaC+rrpO9T8goLiUGYCMw==
bob:$7$101$ISqr/EsmLuTYXfuq$rQ1pKCXGFuLDoe6+syeD2c7louKJsQvdnnjbX28oco9WjpXTJr05h6xDGYgYIYov24x5fi+hYFlTdWAmqFKKTA==
";

    fn client(username: Option<&str>) -> crate::ClientInfo {
        crate::ClientInfo {
            client_id: "c1".into(),
            username: username.map(Into::into),
        }
    }

    #[test]
    fn mosquitto_pbkdf2_lines_verify_the_right_password_only() {
        let file = PasswordFile::parse(MOSQUITTO_FILE).unwrap();
        assert!(file.verify("alice", b"correct horse"));
        assert!(file.verify("bob", b"p@ss:w0rd"));
        assert!(!file.verify("alice", b"p@ss:w0rd"));
        assert!(!file.verify("alice", b"correct horse "));
        assert!(!file.verify("bob", b""));
    }

    #[test]
    fn argon2id_round_trip_through_text_keeps_passwords_comments_and_order() {
        let mut file = PasswordFile::parse(&format!("# users\n\n{MOSQUITTO_FILE}")).unwrap();
        file.set("carol", b"s3cret").unwrap();
        file.set("alice", b"new alice").unwrap();
        let text = file.to_text();
        assert!(text.starts_with("# users\n\nalice:$argon2id$"), "{text}");
        let back = PasswordFile::parse(&text).unwrap();
        assert_eq!(back.users().collect::<Vec<_>>(), ["alice", "bob", "carol"]);
        assert!(back.verify("carol", b"s3cret"));
        assert!(!back.verify("carol", b"s3cret!"));
        assert!(back.verify("alice", b"new alice"));
        assert!(!back.verify("alice", b"correct horse"));
        assert!(back.verify("bob", b"p@ss:w0rd"));
    }

    #[test]
    fn debug_output_lists_users_but_not_hashes() {
        let file = PasswordFile::parse(MOSQUITTO_FILE).unwrap();
        let debug = format!("{file:?}");
        assert!(debug.contains("alice") && !debug.contains("$7$"), "{debug}");
    }

    #[test]
    fn unknown_user_is_refused() {
        let file = PasswordFile::parse(MOSQUITTO_FILE).unwrap();
        assert!(!file.verify("mallory", b"correct horse"));
        assert!(!PasswordFile::default().verify("", b""));
    }

    #[test]
    fn hash_password_makes_salted_argon2id_phc_strings() {
        let a = hash_password(b"pw").unwrap();
        let b = hash_password(b"pw").unwrap();
        assert!(a.starts_with("$argon2id$v=19$"), "{a}");
        assert_ne!(a, b, "each hash gets its own salt");
    }

    #[test]
    fn plain_text_password_is_refused_with_line_and_user() {
        let err = PasswordFile::parse("# comment\nalice:hunter2\n").unwrap_err();
        assert!(
            matches!(&err, AuthError::UnrecognizedHash { line: 2, user } if user == "alice"),
            "{err:?}"
        );
        let message = err.to_string();
        assert!(
            message.contains("line 2") && message.contains("`alice`"),
            "{message}"
        );
        assert!(message.contains("thingmq passwd"), "{message}");
        assert!(!message.contains("hunter2"), "{message}");
    }

    #[test]
    fn damaged_or_foreign_hashes_are_refused() {
        for hash in [
            "$6$c2FsdA==$aGFzaA==",
            "$argon2i$v=19$m=19456,t=2,p=1$OPHZcBq2wvB3k8YsEMLp/Q$HXs/pBYkr2dErHTOP7clIG4Dt7ACtric4Bov3EGsCjg",
            "$argon2id$v=19$m=19456,t=2,p=1$OPHZcBq2wvB3k8YsEMLp/Q",
            "$argon2id$garbage",
            "$7$0$VRU+G4zxU656JSEP$q+QPmmxevMB8LteqTyc0+v/s24/VG40kqYGJiPsQGBPBUaLLdzprNd1+7vt8SVmWpbaC+rrpO9T8goLiUGYCMw==",
            "$7$101$VRU+G4zxU656JSEP$dG9vIHNob3J0",
            "$7$101$not base64!$q+QPmmxevMB8LteqTyc0+v/s24/VG40kqYGJiPsQGBPBUaLLdzprNd1+7vt8SVmWpbaC+rrpO9T8goLiUGYCMw==",
            "",
        ] {
            let err = PasswordFile::parse(&format!("u:{hash}")).unwrap_err();
            assert!(
                matches!(err, AuthError::UnrecognizedHash { line: 1, .. }),
                "{hash}: {err:?}"
            );
        }
    }

    #[test]
    fn lines_without_a_user_and_hash_are_malformed() {
        for (text, line) in [("alice\n", 1), ("\n# c\n:$7$101$x$y\n", 3)] {
            let err = PasswordFile::parse(text).unwrap_err();
            assert!(
                matches!(err, AuthError::MalformedPasswordLine { line: l } if l == line),
                "{text:?}: {err:?}"
            );
        }
    }

    #[test]
    fn a_user_listed_twice_is_refused() {
        let bob = MOSQUITTO_FILE.lines().nth(1).unwrap();
        let err = PasswordFile::parse(&format!("{MOSQUITTO_FILE}\n{bob}\n")).unwrap_err();
        assert!(
            matches!(&err, AuthError::DuplicateUser { line: 4, first: 2, user } if user == "bob"),
            "{err:?}"
        );
    }

    #[test]
    fn crlf_line_endings_and_blank_lines_are_accepted() {
        let text = MOSQUITTO_FILE.replace('\n', "\r\n\r\n");
        let file = PasswordFile::parse(&text).unwrap();
        assert!(file.verify("bob", b"p@ss:w0rd"));
    }

    #[test]
    fn usernames_that_would_not_read_back_are_refused_before_hashing() {
        let mut file = PasswordFile::default();
        for bad in ["", "a:b", "a\nb", "#admin", " bob", "bob\t", "nul\0"] {
            assert!(
                matches!(file.set(bad, b"pw"), Err(AuthError::InvalidUsername { .. })),
                "{bad:?}"
            );
        }
        assert!(validate_username("dev ice-1@site").is_ok());
        assert_eq!(file.users().count(), 0);
    }

    #[test]
    fn remove_drops_only_that_user() {
        let mut file = PasswordFile::parse(MOSQUITTO_FILE).unwrap();
        assert!(file.remove("alice"));
        assert!(!file.remove("alice"));
        assert!(!file.contains("alice"));
        assert!(file.verify("bob", b"p@ss:w0rd"));
        assert_eq!(
            file.to_text(),
            MOSQUITTO_FILE.lines().nth(1).unwrap().to_owned() + "\n"
        );
    }

    #[test]
    fn load_names_the_path_in_errors() {
        let dir = std::env::temp_dir().join(format!("thingmq-auth-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let missing = dir.join("missing.passwd");
        let err = PasswordFile::load(&missing).unwrap_err();
        assert!(err.to_string().contains("missing.passwd"), "{err}");

        let plain = dir.join("plain.passwd");
        std::fs::write(&plain, "alice:hunter2\n").unwrap();
        let message = PasswordFile::load(&plain).unwrap_err().to_string();
        assert!(message.contains("plain.passwd: line 1"), "{message}");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn password_file_authenticator_refuses_missing_or_wrong_credentials() {
        use crate::{Authenticator, Refusal};
        let file = PasswordFile::parse(MOSQUITTO_FILE).unwrap();
        let alice = client(Some("alice"));
        assert_eq!(file.authenticate(&alice, Some(b"correct horse")), Ok(()));
        assert_eq!(
            file.authenticate(&alice, Some(b"nope")),
            Err(Refusal::BadCredentials)
        );
        assert_eq!(
            file.authenticate(&alice, None),
            Err(Refusal::BadCredentials)
        );
        assert_eq!(
            file.authenticate(&client(None), Some(b"correct horse")),
            Err(Refusal::BadCredentials)
        );
    }

    #[test]
    fn password_auth_applies_the_anonymous_policy() {
        use crate::{Authenticator, PasswordAuth, Refusal};
        let file = PasswordFile::parse(MOSQUITTO_FILE).unwrap();
        let open = PasswordAuth {
            allow_anonymous: true,
            passwords: Some(file.clone()),
        };
        let closed = PasswordAuth {
            allow_anonymous: false,
            passwords: Some(file),
        };
        let nothing = PasswordAuth {
            allow_anonymous: false,
            passwords: None,
        };
        let anyone = PasswordAuth {
            allow_anonymous: true,
            passwords: None,
        };
        let anon = client(None);
        let bob = client(Some("bob"));

        assert_eq!(open.authenticate(&anon, None), Ok(()));
        assert_eq!(
            closed.authenticate(&anon, None),
            Err(Refusal::NotAuthorized)
        );
        assert_eq!(open.authenticate(&bob, Some(b"p@ss:w0rd")), Ok(()));
        // A username given is always checked, even when anonymous clients are welcome.
        assert_eq!(
            open.authenticate(&bob, Some(b"x")),
            Err(Refusal::BadCredentials)
        );
        assert_eq!(
            closed.authenticate(&bob, Some(b"x")),
            Err(Refusal::BadCredentials)
        );
        assert_eq!(
            nothing.authenticate(&bob, Some(b"x")),
            Err(Refusal::NotAuthorized)
        );
        assert_eq!(
            nothing.authenticate(&anon, None),
            Err(Refusal::NotAuthorized)
        );
        assert_eq!(anyone.authenticate(&bob, None), Ok(()));
    }
}
