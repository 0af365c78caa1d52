//! Topic names and topic filters: validation (§4.7) and matching.
//!
//! Validation is done once, where a name or filter enters the broker; matching then works on
//! `&str` levels.

/// Why a topic name or filter is not valid.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum TopicError {
    /// Empty topic names and filters are not allowed [MQTT-4.7.3-1].
    #[error("topic is empty")]
    Empty,
    /// Topic names must not contain wildcards [MQTT-3.3.2-2].
    #[error("topic name contains a wildcard")]
    WildcardInName,
    /// `#` must be the last level and alone in it; `+` must be alone in its level
    /// [MQTT-4.7.1-1, MQTT-4.7.1-2].
    #[error("misplaced wildcard in topic filter")]
    MisplacedWildcard,
    /// U+0000 is not allowed [MQTT-4.7.3-2].
    #[error("topic contains U+0000")]
    NullCharacter,
    /// A `$share/` filter without a valid group name or filter [MQTT-4.8.2-1, MQTT-4.8.2-2].
    #[error("invalid shared subscription")]
    InvalidShare,
    /// More levels than the configured maximum.
    #[error("too many topic levels")]
    TooManyLevels,
}

/// Checks a topic name used in PUBLISH: non-empty, no wildcards, no U+0000.
pub fn validate_name(name: &str) -> Result<(), TopicError> {
    if name.is_empty() {
        return Err(TopicError::Empty);
    }
    for b in name.bytes() {
        match b {
            b'+' | b'#' => return Err(TopicError::WildcardInName),
            0 => return Err(TopicError::NullCharacter),
            _ => {}
        }
    }
    Ok(())
}

/// Checks a topic filter: non-empty, `#` only as the whole last level, `+` only as a whole level.
/// Shared-subscription prefixes are not handled here; see [`parse_shared`].
pub fn validate_filter(filter: &str) -> Result<(), TopicError> {
    if filter.is_empty() {
        return Err(TopicError::Empty);
    }
    if filter.as_bytes().contains(&0) {
        return Err(TopicError::NullCharacter);
    }
    let mut levels = filter.split('/').peekable();
    while let Some(level) = levels.next() {
        let last = levels.peek().is_none();
        if level.contains('#') && (level != "#" || !last) {
            return Err(TopicError::MisplacedWildcard);
        }
        if level.contains('+') && level != "+" {
            return Err(TopicError::MisplacedWildcard);
        }
    }
    Ok(())
}

/// True when the filter has `+` or `#`.
pub fn has_wildcards(filter: &str) -> bool {
    filter.bytes().any(|b| b == b'+' || b == b'#')
}

/// Splits `$share/{group}/{filter}` into `(group, filter)`. Returns `Ok(None)` for an ordinary
/// filter, and an error when the share name or the filter is invalid.
pub fn parse_shared(filter: &str) -> Result<Option<(&str, &str)>, TopicError> {
    let Some(rest) = filter.strip_prefix("$share/") else {
        if filter == "$share" {
            return Err(TopicError::InvalidShare);
        }
        return Ok(None);
    };
    let (group, inner) = rest.split_once('/').ok_or(TopicError::InvalidShare)?;
    if group.is_empty() || group.contains(['+', '#']) || inner.is_empty() {
        return Err(TopicError::InvalidShare);
    }
    validate_filter(inner)?;
    Ok(Some((group, inner)))
}

/// Does `filter` match the topic `name`? Both must already be valid. A filter starting with a
/// wildcard does not match names starting with `$` [MQTT-4.7.2-1].
pub fn matches(filter: &str, name: &str) -> bool {
    if name.starts_with('$') && (filter.starts_with('+') || filter.starts_with('#')) {
        return false;
    }
    let mut f = filter.split('/');
    let mut n = name.split('/');
    loop {
        match (f.next(), n.next()) {
            (Some("#"), _) => return true,
            (Some("+"), Some(_)) => {}
            (Some(a), Some(b)) if a == b => {}
            (None, None) => return true,
            _ => return false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_with_wildcards_or_nul_are_rejected() {
        assert_eq!(validate_name("a/+/b"), Err(TopicError::WildcardInName));
        assert_eq!(validate_name("a/#"), Err(TopicError::WildcardInName));
        assert_eq!(validate_name(""), Err(TopicError::Empty));
        assert_eq!(validate_name("a\0b"), Err(TopicError::NullCharacter));
        assert!(validate_name("/").is_ok());
        assert!(validate_name("sport/tennis/player1").is_ok());
    }

    #[test]
    fn filters_follow_the_wildcard_placement_rules() {
        for ok in [
            "#",
            "+",
            "+/+",
            "sport/#",
            "sport/+/player1",
            "/+",
            "+/tennis/#",
            "a//b",
        ] {
            assert!(validate_filter(ok).is_ok(), "{ok}");
        }
        for bad in [
            "sport/tennis#",
            "sport/#/ranking",
            "sport+",
            "a/b+/c",
            "##",
            "",
        ] {
            assert!(validate_filter(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn multi_level_wildcard_matches_parent_and_children() {
        assert!(matches("sport/tennis/player1/#", "sport/tennis/player1"));
        assert!(matches(
            "sport/tennis/player1/#",
            "sport/tennis/player1/ranking"
        ));
        assert!(matches("sport/#", "sport"));
        assert!(matches("#", "a/b/c"));
        assert!(!matches("sport/tennis/#", "sport/football"));
    }

    #[test]
    fn single_level_wildcard_matches_exactly_one_level() {
        assert!(matches("sport/tennis/+", "sport/tennis/player1"));
        assert!(!matches("sport/tennis/+", "sport/tennis/player1/ranking"));
        assert!(matches("sport/+", "sport/"));
        assert!(!matches("sport/+", "sport"));
        assert!(matches("+/+", "/finance"));
        assert!(matches("/+", "/finance"));
        assert!(!matches("+", "/finance"));
    }

    #[test]
    fn dollar_topics_are_not_matched_by_leading_wildcards() {
        assert!(!matches("#", "$SYS/broker/uptime"));
        assert!(!matches("+/broker/uptime", "$SYS/broker/uptime"));
        assert!(matches("$SYS/#", "$SYS/broker/uptime"));
        assert!(matches("$SYS/+/uptime", "$SYS/broker/uptime"));
    }

    #[test]
    fn shared_filters_split_into_group_and_filter() {
        assert_eq!(parse_shared("$share/g1/a/+"), Ok(Some(("g1", "a/+"))));
        assert_eq!(parse_shared("a/b"), Ok(None));
        assert_eq!(parse_shared("$share/g1"), Err(TopicError::InvalidShare));
        assert_eq!(parse_shared("$share//a"), Err(TopicError::InvalidShare));
        assert_eq!(parse_shared("$share/g+/a"), Err(TopicError::InvalidShare));
        assert_eq!(
            parse_shared("$share/g/a#"),
            Err(TopicError::MisplacedWildcard)
        );
    }
}
