//! The auth layer's error type.

use std::path::PathBuf;

use thingmq_codec::topic::TopicError;

/// Why a password file or ACL file could not be read, parsed or changed.
///
/// Parse errors carry the 1-based line number; [`AuthError::InFile`] adds the path when the
/// text came from `load`. Messages never contain passwords or hashes.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AuthError {
    /// The file could not be read.
    #[error("cannot read {}: {cause}", path.display())]
    Read {
        /// The file that was asked for.
        path: PathBuf,
        /// What the operating system said.
        cause: std::io::Error,
    },
    /// A parse error inside a file loaded from `path`.
    #[error("{}: {inner}", path.display())]
    InFile {
        /// The file the text came from.
        path: PathBuf,
        /// The parse error, with its line number.
        inner: Box<AuthError>,
    },
    /// A password-file line that is not `username:hash`.
    #[error("line {line}: expected `username:hash`")]
    MalformedPasswordLine {
        /// 1-based line number.
        line: usize,
    },
    /// The password part of a line is not a hash this crate can verify (plain text, an unknown
    /// scheme, or a damaged hash). Refused rather than compared, so a plain-text file is never
    /// silently accepted.
    #[error(
        "line {line}: the password of user `{user}` is not an argon2id or mosquitto PBKDF2 ($7$) \
         hash; set it with `thingmq passwd`"
    )]
    UnrecognizedHash {
        /// 1-based line number.
        line: usize,
        /// The user on that line.
        user: String,
    },
    /// A user listed twice: which line wins would be a guess, so neither does.
    #[error("line {line}: user `{user}` is already listed on line {first}")]
    DuplicateUser {
        /// 1-based line number of the second entry.
        line: usize,
        /// 1-based line number of the first entry.
        first: usize,
        /// The user.
        user: String,
    },
    /// A username that could not be written to, or read back from, a password file.
    #[error("invalid username {user:?}: {reason}")]
    InvalidUsername {
        /// The rejected name.
        user: String,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// The hashing library failed (bad parameters or no randomness for the salt).
    #[error("cannot hash the password: {0}")]
    Hash(String),
    /// An ACL line starting with a word other than `topic`, `pattern` or `user`.
    #[error("line {line}: unknown keyword `{keyword}` (expected `topic`, `pattern` or `user`)")]
    UnknownKeyword {
        /// 1-based line number.
        line: usize,
        /// The word found.
        keyword: String,
    },
    /// An ACL rule whose access word is not `read`, `write`, `readwrite` or `deny`.
    #[error(
        "line {line}: bad access `{access}` (expected `read`, `write`, `readwrite` or `deny`)"
    )]
    BadAccess {
        /// 1-based line number.
        line: usize,
        /// The word found.
        access: String,
    },
    /// A `topic` or `pattern` line without a filter.
    #[error("line {line}: missing topic filter")]
    MissingFilter {
        /// 1-based line number.
        line: usize,
    },
    /// A `user` line without a name.
    #[error("line {line}: missing user name after `user`")]
    MissingUser {
        /// 1-based line number.
        line: usize,
    },
    /// A rule whose filter breaks the MQTT wildcard rules.
    #[error("line {line}: invalid topic filter `{filter}`: {reason}")]
    InvalidFilter {
        /// 1-based line number.
        line: usize,
        /// The filter as written.
        filter: String,
        /// What is wrong with it.
        reason: TopicError,
    },
}

impl AuthError {
    /// Attaches the file path to a parse error.
    pub(crate) fn in_file(self, path: &std::path::Path) -> Self {
        AuthError::InFile {
            path: path.to_owned(),
            inner: Box::new(self),
        }
    }
}

/// Reads a whole file as UTF-8, naming the path on failure.
pub(crate) fn read_file(path: &std::path::Path) -> Result<String, AuthError> {
    std::fs::read_to_string(path).map_err(|cause| AuthError::Read {
        path: path.to_owned(),
        cause,
    })
}
