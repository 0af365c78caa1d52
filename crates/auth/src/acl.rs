//! Mosquitto-compatible ACL files: the format and the decision rules are documented on
//! [`AclFile`].

use std::collections::HashMap;
use std::path::Path;

use thingmq_codec::topic::{parse_shared, validate_filter, validate_name};

use crate::error::{read_file, AuthError};
use crate::{Access, ClientInfo};

/// What a rule grants, or `Deny`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum RuleAccess {
    Read,
    Write,
    ReadWrite,
    Deny,
}

impl RuleAccess {
    fn parse(word: &str) -> Option<Self> {
        Some(match word {
            "read" => RuleAccess::Read,
            "write" => RuleAccess::Write,
            "readwrite" => RuleAccess::ReadWrite,
            "deny" => RuleAccess::Deny,
            _ => return None,
        })
    }

    fn grants(self, access: Access) -> bool {
        matches!(
            (self, access),
            (RuleAccess::ReadWrite, _)
                | (RuleAccess::Read, Access::Read)
                | (RuleAccess::Write, Access::Write)
        )
    }
}

/// Part of a pattern level: `dev-%c` is `[Text("dev-"), ClientId]`.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Piece {
    Text(String),
    ClientId,
    Username,
}

/// One level of a rule's filter, pre-split so checks do not allocate.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Level {
    /// `#`
    Multi,
    /// `+`
    Single,
    Literal(String),
    /// A pattern level containing `%c` or `%u`.
    Template(Vec<Piece>),
}

#[derive(Debug, Clone)]
struct Rule {
    access: RuleAccess,
    levels: Vec<Level>,
    uses_client_id: bool,
    uses_username: bool,
}

/// The substitution values for one client; `Err(())` marks a value that must not be substituted.
#[derive(Debug, Clone, Copy)]
struct Who<'a> {
    client_id: Result<&'a str, ()>,
    /// `None`: the client has no username.
    username: Option<Result<&'a str, ()>>,
}

impl<'a> Who<'a> {
    fn new(client: &'a ClientInfo) -> Self {
        Who {
            client_id: safe_value(&client.client_id),
            username: client.username.as_deref().map(safe_value),
        }
    }
}

/// Values that could change a pattern's shape are refused (see [`AclFile`]).
fn safe_value(value: &str) -> Result<&str, ()> {
    let unsafe_value =
        value.is_empty() || value.starts_with('$') || value.contains(['/', '+', '#', '\0']);
    if unsafe_value {
        Err(())
    } else {
        Ok(value)
    }
}

/// How a rule applies to one client.
enum Applies {
    /// Not at all (e.g. a `%u` pattern and a client without a username).
    Never,
    /// To every topic (a deny pattern whose value could not be substituted).
    Always,
    /// Where its filter matches.
    ByFilter,
}

impl Rule {
    fn applies(&self, who: &Who<'_>) -> Applies {
        let mut refused = false;
        if self.uses_username {
            match who.username {
                None => return Applies::Never,
                Some(Err(())) => refused = true,
                Some(Ok(_)) => {}
            }
        }
        if self.uses_client_id && who.client_id.is_err() {
            refused = true;
        }
        match (refused, self.access) {
            (false, _) => Applies::ByFilter,
            (true, RuleAccess::Deny) => Applies::Always,
            (true, _) => Applies::Never,
        }
    }

    /// Does the rule match the topic name? Only called when `applies` said `ByFilter`.
    fn matches_name(&self, topic: &str, who: &Who<'_>) -> bool {
        if topic.starts_with('$') && self.starts_with_wildcard() {
            return false;
        }
        let mut names = topic.split('/');
        for level in &self.levels {
            if *level == Level::Multi {
                return true;
            }
            let Some(name) = names.next() else {
                return false;
            };
            if *level != Level::Single && !level_equals(level, name, who) {
                return false;
            }
        }
        names.next().is_none()
    }

    /// Does the rule match every topic that `filter` can match? Only called when `applies` said
    /// `ByFilter`.
    fn covers(&self, filter: &str, who: &Who<'_>) -> bool {
        if filter.starts_with('$') && self.starts_with_wildcard() {
            return false;
        }
        let mut subs = filter.split('/');
        for level in &self.levels {
            if *level == Level::Multi {
                return true;
            }
            let Some(sub) = subs.next() else {
                return false;
            };
            let covered = match (level, sub) {
                // A `#` in the subscription spans any number of levels; only `#` covers it.
                (_, "#") => false,
                (Level::Single, _) => true,
                (_, "+") => false,
                (level, sub) => level_equals(level, sub, who),
            };
            if !covered {
                return false;
            }
        }
        subs.next().is_none()
    }

    fn starts_with_wildcard(&self) -> bool {
        matches!(self.levels.first(), Some(Level::Multi | Level::Single))
    }
}

/// Compares a literal or template rule level with one literal level of a topic.
fn level_equals(level: &Level, text: &str, who: &Who<'_>) -> bool {
    match level {
        Level::Literal(literal) => literal == text,
        Level::Template(pieces) => {
            let mut rest = text;
            for piece in pieces {
                let expected = match piece {
                    Piece::Text(t) => t.as_str(),
                    Piece::ClientId => match who.client_id {
                        Ok(id) => id,
                        Err(()) => return false,
                    },
                    Piece::Username => match who.username {
                        Some(Ok(name)) => name,
                        _ => return false,
                    },
                };
                match rest.strip_prefix(expected) {
                    Some(r) => rest = r,
                    None => return false,
                }
            }
            rest.is_empty()
        }
        Level::Multi | Level::Single => false,
    }
}

/// Splits a valid filter into levels; in patterns, `%c` and `%u` become placeholders.
fn parse_levels(filter: &str, pattern: bool) -> Vec<Level> {
    filter
        .split('/')
        .map(|level| match level {
            "#" => Level::Multi,
            "+" => Level::Single,
            _ if pattern && (level.contains("%c") || level.contains("%u")) => {
                Level::Template(parse_template(level))
            }
            _ => Level::Literal(level.to_owned()),
        })
        .collect()
}

fn parse_template(level: &str) -> Vec<Piece> {
    let mut pieces = Vec::new();
    let mut text = String::new();
    let mut chars = level.chars().peekable();
    while let Some(c) = chars.next() {
        let placeholder = match (c, chars.peek()) {
            ('%', Some('c')) => Some(Piece::ClientId),
            ('%', Some('u')) => Some(Piece::Username),
            _ => None,
        };
        match placeholder {
            Some(piece) => {
                chars.next();
                if !text.is_empty() {
                    pieces.push(Piece::Text(std::mem::take(&mut text)));
                }
                pieces.push(piece);
            }
            None => text.push(c),
        }
    }
    if !text.is_empty() {
        pieces.push(Piece::Text(text));
    }
    pieces
}

/// A parsed Mosquitto-style ACL file. The default value has no rules and so denies everything.
///
/// ```text
/// # Rules before any `user` line apply to anonymous clients only.
/// topic read public/#
///
/// user alice
/// topic readwrite home/alice/#
/// topic deny home/alice/secret
///
/// # Patterns apply to every client, with %c = client id and %u = username.
/// pattern write devices/%c/telemetry
/// pattern read devices/%c/commands/#
/// ```
///
/// A `topic` or `pattern` line is `topic [read|write|readwrite|deny] <filter>`: with no access
/// word the rule grants `readwrite`; after an access word the rest of the line is the filter, so
/// filters with spaces need an access word.
///
/// Decisions, for one client, over its own rules (its `user` section, or the anonymous section
/// when it has no username) plus every pattern:
/// - anything no rule grants is denied, and a matching `deny` rule wins over any grant, whatever
///   the order of the lines;
/// - rules whose filter starts with a wildcard do not match `$` topics (as in MQTT matching);
/// - `%c` / `%u` are replaced by the client id / username. A `%u` pattern never applies to a
///   client without a username. A value that is empty, starts with `$`, or contains `/`, `+`,
///   `#` or U+0000 could widen a pattern into someone else's topics, so it is never substituted:
///   a grant pattern then does not apply, and a deny pattern applies to every topic (fail
///   closed).
///
/// Subscriptions ([`check_subscribe`](Self::check_subscribe)): the filter (the inner filter
/// of `$share/{group}/{filter}`) is allowed when some `read`/`readwrite` rule *covers* it, i.e.
/// matches every topic it can match (`home/#` covers `home/+/temp`; `home/+` does not cover
/// `home/#`), and no `deny` rule covers it. A deny rule that covers only part of a subscription
/// (`deny home/secret` under a subscription to `home/#`) does not refuse the subscription: as in
/// Mosquitto, the server must check each message with [`check_topic`](Self::check_topic) and
/// [`Access::Read`] before delivering it, and the denied topics are not delivered.
#[derive(Debug, Clone, Default)]
pub struct AclFile {
    /// `topic` lines before the first `user` line: for clients without a username.
    anonymous: Vec<Rule>,
    /// `topic` lines per `user` section (sections for the same user are merged).
    users: HashMap<String, Vec<Rule>>,
    /// `pattern` lines, wherever they appear: for every client.
    patterns: Vec<Rule>,
}

impl AclFile {
    /// Parses the text of an ACL file.
    pub fn parse(text: &str) -> Result<Self, AuthError> {
        let mut acl = AclFile::default();
        let mut user: Option<String> = None;
        for (i, raw) in text.lines().enumerate() {
            let line = i + 1;
            let trimmed = raw.trim();
            if trimmed.is_empty() || trimmed.starts_with('#') {
                continue;
            }
            let (keyword, rest) = split_word(trimmed);
            match keyword {
                "user" => {
                    if rest.is_empty() {
                        return Err(AuthError::MissingUser { line });
                    }
                    user = Some(rest.to_owned());
                }
                "topic" => {
                    let rule = parse_rule(rest, line, false)?;
                    match &user {
                        Some(name) => acl.users.entry(name.clone()).or_default().push(rule),
                        None => acl.anonymous.push(rule),
                    }
                }
                "pattern" => acl.patterns.push(parse_rule(rest, line, true)?),
                other => {
                    return Err(AuthError::UnknownKeyword {
                        line,
                        keyword: other.to_owned(),
                    })
                }
            }
        }
        Ok(acl)
    }

    /// Reads and parses an ACL file; errors name the path.
    pub fn load(path: &Path) -> Result<Self, AuthError> {
        let text = read_file(path)?;
        Self::parse(&text).map_err(|e| e.in_file(path))
    }

    /// May the client publish to (`Write`) or receive a message on (`Read`) this topic name?
    /// Invalid names (empty, wildcards) are refused.
    pub fn check_topic(&self, client: &ClientInfo, topic: &str, access: Access) -> bool {
        if validate_name(topic).is_err() {
            return false;
        }
        let who = Who::new(client);
        let mut granted = false;
        for rule in self.rules_for(client) {
            let matched = match rule.applies(&who) {
                Applies::Never => false,
                Applies::Always => true,
                Applies::ByFilter => rule.matches_name(topic, &who),
            };
            if !matched {
                continue;
            }
            if rule.access == RuleAccess::Deny {
                return false;
            }
            granted |= rule.access.grants(access);
        }
        granted
    }

    /// May the client subscribe with this filter? Some read rule
    /// must cover the whole filter and no deny rule may cover it. Invalid filters are refused;
    /// for `$share/{group}/{filter}` the inner filter is checked.
    pub fn check_subscribe(&self, client: &ClientInfo, filter: &str) -> bool {
        let filter = match parse_shared(filter) {
            Ok(Some((_group, inner))) => inner,
            Ok(None) if validate_filter(filter).is_ok() => filter,
            _ => return false,
        };
        let who = Who::new(client);
        let mut granted = false;
        for rule in self.rules_for(client) {
            let covered = match rule.applies(&who) {
                Applies::Never => false,
                Applies::Always => true,
                Applies::ByFilter => rule.covers(filter, &who),
            };
            if !covered {
                continue;
            }
            if rule.access == RuleAccess::Deny {
                return false;
            }
            granted |= rule.access.grants(Access::Read);
        }
        granted
    }

    /// The client's own section (by username, or the anonymous one) followed by the patterns.
    fn rules_for<'a>(&'a self, client: &ClientInfo) -> impl Iterator<Item = &'a Rule> {
        let own: &[Rule] = match &client.username {
            Some(name) => self.users.get(name).map_or(&[], Vec::as_slice),
            None => &self.anonymous,
        };
        own.iter().chain(&self.patterns)
    }
}

/// Splits off the first whitespace-separated word; the rest is trimmed.
fn split_word(text: &str) -> (&str, &str) {
    match text.split_once(char::is_whitespace) {
        Some((word, rest)) => (word, rest.trim()),
        None => (text, ""),
    }
}

/// Parses what follows `topic` or `pattern`: `[access] filter`.
fn parse_rule(rest: &str, line: usize, pattern: bool) -> Result<Rule, AuthError> {
    let (first, after) = split_word(rest);
    let (access, filter) = match (RuleAccess::parse(first), after.is_empty()) {
        _ if first.is_empty() => return Err(AuthError::MissingFilter { line }),
        // A lone access word: Mosquitto reads it as a missing topic, not a topic named "read".
        (Some(_), true) => return Err(AuthError::MissingFilter { line }),
        (None, true) => (RuleAccess::ReadWrite, first),
        (Some(access), false) => (access, after),
        (None, false) => {
            return Err(AuthError::BadAccess {
                line,
                access: first.to_owned(),
            })
        }
    };
    validate_filter(filter).map_err(|reason| AuthError::InvalidFilter {
        line,
        filter: filter.to_owned(),
        reason,
    })?;
    let levels = parse_levels(filter, pattern);
    let uses = |wanted: &Piece| {
        levels.iter().any(|level| match level {
            Level::Template(pieces) => pieces.contains(wanted),
            _ => false,
        })
    };
    Ok(Rule {
        access,
        uses_client_id: uses(&Piece::ClientId),
        uses_username: uses(&Piece::Username),
        levels,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Access::{Read, Write};

    fn client(id: &str, username: Option<&str>) -> ClientInfo {
        ClientInfo {
            client_id: id.into(),
            username: username.map(Into::into),
        }
    }

    fn acl(text: &str) -> AclFile {
        AclFile::parse(text).unwrap()
    }

    const HOME: &str = "\
# anonymous clients
topic read public/#

user alice
topic readwrite home/alice/#
topic deny home/alice/secret
topic write alerts
topic read weather/+/temp

user bob
topic home/bob/#
";

    #[test]
    fn users_get_their_own_section_and_nothing_else() {
        let acl = acl(HOME);
        let alice = client("a1", Some("alice"));
        let bob = client("b1", Some("bob"));
        assert!(acl.check_topic(&alice, "home/alice/kitchen", Write));
        assert!(acl.check_topic(&alice, "home/alice/kitchen", Read));
        assert!(
            acl.check_topic(&alice, "home/alice", Read),
            "`#` includes the parent"
        );
        assert!(acl.check_topic(&alice, "alerts", Write));
        assert!(!acl.check_topic(&alice, "alerts", Read), "write-only rule");
        assert!(acl.check_topic(&alice, "weather/paris/temp", Read));
        assert!(!acl.check_topic(&alice, "weather/paris/temp", Write));
        assert!(!acl.check_topic(&alice, "home/bob/kitchen", Read));
        assert!(
            !acl.check_topic(&alice, "public/news", Read),
            "anonymous rules are not hers"
        );
        assert!(
            acl.check_topic(&bob, "home/bob/x", Write),
            "no access word = readwrite"
        );
        assert!(!acl.check_topic(&bob, "home/alice/x", Read));
    }

    #[test]
    fn rules_before_any_user_line_apply_to_anonymous_clients_only() {
        let acl = acl(HOME);
        let anon = client("anon", None);
        assert!(acl.check_topic(&anon, "public/news", Read));
        assert!(!acl.check_topic(&anon, "public/news", Write));
        assert!(!acl.check_topic(&anon, "home/alice/kitchen", Read));
        let stranger = client("s", Some("carol"));
        assert!(!acl.check_topic(&stranger, "public/news", Read));
    }

    #[test]
    fn deny_wins_over_grants_in_any_order() {
        let acl = acl(HOME);
        let alice = client("a1", Some("alice"));
        assert!(!acl.check_topic(&alice, "home/alice/secret", Read));
        assert!(!acl.check_topic(&alice, "home/alice/secret", Write));

        let deny_first = AclFile::parse("pattern deny x/%c/lock\ntopic x/#\n").unwrap();
        let anon = client("d1", None);
        assert!(!deny_first.check_topic(&anon, "x/d1/lock", Write));
        assert!(deny_first.check_topic(&anon, "x/d2/lock", Write));
    }

    #[test]
    fn anything_not_granted_is_denied() {
        let empty = AclFile::default();
        let alice = client("a1", Some("alice"));
        assert!(!empty.check_topic(&alice, "a", Read));
        assert!(!empty.check_subscribe(&alice, "#"));
        let acl = acl(HOME);
        assert!(!acl.check_topic(&alice, "elsewhere", Write));
    }

    #[test]
    fn patterns_substitute_client_id_and_username_for_every_client() {
        let acl = acl(
            "pattern readwrite devices/%c/#\npattern read users/%u/inbox\n\
                       pattern write dev-%c-%u/x\n",
        );
        let alice = client("sensor-1", Some("alice"));
        let anon = client("sensor-2", None);
        assert!(acl.check_topic(&alice, "devices/sensor-1/temp", Write));
        assert!(!acl.check_topic(&alice, "devices/sensor-2/temp", Write));
        assert!(acl.check_topic(&alice, "users/alice/inbox", Read));
        assert!(!acl.check_topic(&alice, "users/bob/inbox", Read));
        assert!(acl.check_topic(&alice, "dev-sensor-1-alice/x", Write));
        assert!(!acl.check_topic(&alice, "dev-sensor-1-alicex/x", Write));
        assert!(acl.check_topic(&anon, "devices/sensor-2/temp", Read));
        assert!(!acl.check_topic(&anon, "dev-sensor-2-/x", Write));
    }

    #[test]
    fn a_username_pattern_never_matches_a_client_without_a_username() {
        let acl = acl("pattern read users/%u/#\npattern read users/+/public\n");
        let anon = client("c", None);
        assert!(!acl.check_topic(&anon, "users//x", Read));
        assert!(!acl.check_topic(&anon, "users/%u/x", Read));
        assert!(acl.check_topic(&anon, "users/x/public", Read));
    }

    #[test]
    fn percent_placeholders_in_topic_lines_are_literal() {
        let acl = acl("topic read a/%c\n");
        let anon = client("x", None);
        assert!(acl.check_topic(&anon, "a/%c", Read));
        assert!(!acl.check_topic(&anon, "a/x", Read));
    }

    #[test]
    fn crafted_client_ids_with_wildcards_or_slashes_do_not_widen_rights() {
        let acl = acl("pattern readwrite devices/%c/#\npattern read owners/%u\n");
        for id in ["+", "#", "a/b", "+/x", "", "$SYS", "a\0b"] {
            let crafted = client(id, None);
            assert!(
                !acl.check_topic(&crafted, "devices/victim/cmd", Write),
                "{id:?}"
            );
            assert!(
                !acl.check_topic(&crafted, "devices/a/b/cmd", Write),
                "{id:?}"
            );
            assert!(!acl.check_subscribe(&crafted, "devices/+/cmd"), "{id:?}");
            assert!(!acl.check_subscribe(&crafted, "devices/#"), "{id:?}");
        }
        let user = client("c", Some("#"));
        assert!(!acl.check_topic(&user, "owners/x", Read));
        assert!(!acl.check_subscribe(&user, "owners/+"));
    }

    #[test]
    fn deny_patterns_fail_closed_when_the_value_cannot_be_substituted() {
        let acl = acl("topic readwrite devices/#\npattern deny devices/%c/admin\n");
        let normal = client("d1", None);
        assert!(acl.check_topic(&normal, "devices/d2/admin", Write));
        assert!(!acl.check_topic(&normal, "devices/d1/admin", Write));
        let crafted = client("d1/x", None);
        assert!(!acl.check_topic(&crafted, "devices/d1/x/admin", Write));
        assert!(!acl.check_topic(&crafted, "devices/d2/data", Write));
    }

    #[test]
    fn wildcard_rules_do_not_match_dollar_topics() {
        let acl = acl("topic read #\ntopic read +/broker/#\ntopic read $SYS/broker/load\n");
        let anon = client("c", None);
        assert!(acl.check_topic(&anon, "a/b", Read));
        assert!(!acl.check_topic(&anon, "$SYS/broker/uptime", Read));
        assert!(acl.check_topic(&anon, "$SYS/broker/load", Read));
        assert!(acl.check_subscribe(&anon, "#"));
        assert!(!acl.check_subscribe(&anon, "$SYS/#"));
        assert!(acl.check_subscribe(&anon, "$SYS/broker/load"));
    }

    #[test]
    fn invalid_topic_names_are_refused() {
        let acl = acl("topic #\n");
        let anon = client("c", None);
        assert!(!acl.check_topic(&anon, "a/+", Write));
        assert!(!acl.check_topic(&anon, "", Write));
        assert!(!acl.check_subscribe(&anon, "a/#/b"));
        assert!(!acl.check_subscribe(&anon, ""));
    }

    #[test]
    fn subscription_is_allowed_only_when_a_read_rule_covers_the_whole_filter() {
        let acl = acl(
            "topic read home/#\ntopic read sensors/+\ntopic read a/+/c\n\
                       topic write out/#\n",
        );
        let anon = client("c", None);
        for ok in [
            "home/#",
            "home/+/temp",
            "home",
            "home/x/y/z",
            "sensors/+",
            "sensors/t1",
        ] {
            assert!(acl.check_subscribe(&anon, ok), "{ok}");
        }
        for no in [
            "#",
            "+",
            "+/temp",
            "sensors/#",
            "sensors/+/x",
            "sensors",
            "a/#",
            "a/+/+",
            "a/b/#",
            "out/#",
            "out/x",
        ] {
            assert!(!acl.check_subscribe(&anon, no), "{no}");
        }
        assert!(acl.check_subscribe(&anon, "a/b/c"));
        assert!(acl.check_subscribe(&anon, "a/+/c"));
    }

    #[test]
    fn subscription_covered_by_a_deny_rule_is_refused() {
        let acl = acl("topic read home/#\ntopic deny home/secret/#\ntopic deny home/+/pin\n");
        let anon = client("c", None);
        assert!(!acl.check_subscribe(&anon, "home/secret/#"), "equal filter");
        assert!(!acl.check_subscribe(&anon, "home/secret/+"), "covered");
        assert!(
            !acl.check_subscribe(&anon, "home/secret"),
            "`#` includes the parent"
        );
        assert!(!acl.check_subscribe(&anon, "home/door/pin"));
        // Partly denied: the subscription stands and delivery is filtered per message.
        assert!(acl.check_subscribe(&anon, "home/#"));
        assert!(acl.check_subscribe(&anon, "home/+/pin/x"));
        assert!(!acl.check_topic(&anon, "home/secret/key", Read));
        assert!(acl.check_topic(&anon, "home/door/state", Read));
    }

    #[test]
    fn shared_subscriptions_are_checked_on_the_inner_filter() {
        let acl = acl("topic read jobs/#\n");
        let anon = client("c", None);
        assert!(acl.check_subscribe(&anon, "$share/workers/jobs/+"));
        assert!(!acl.check_subscribe(&anon, "$share/workers/other/+"));
        assert!(!acl.check_subscribe(&anon, "$share/workers"));
    }

    #[test]
    fn pattern_subscriptions_are_covered_per_client() {
        let acl = acl("pattern read devices/%c/#\n");
        let d1 = client("d1", None);
        assert!(acl.check_subscribe(&d1, "devices/d1/#"));
        assert!(acl.check_subscribe(&d1, "devices/d1/+/x"));
        assert!(!acl.check_subscribe(&d1, "devices/+/x"));
        assert!(!acl.check_subscribe(&d1, "devices/d2/#"));
    }

    #[test]
    fn filters_after_an_access_word_may_contain_spaces_and_repeated_user_sections_merge() {
        let acl = acl("user al ice\ntopic read my topic/#\nuser bob\ntopic a\n\
                       user al ice\ntopic write b\n");
        let alice = client("c", Some("al ice"));
        assert!(acl.check_topic(&alice, "my topic/x", Read));
        assert!(acl.check_topic(&alice, "b", Write));
        assert!(!acl.check_topic(&alice, "a", Write));
    }

    fn parse_error(text: &str) -> AuthError {
        AclFile::parse(text).unwrap_err()
    }

    #[test]
    fn unknown_keywords_are_reported_with_their_line() {
        let err = parse_error("# c\n\ntopic a\nusr bob\n");
        assert!(
            matches!(&err, AuthError::UnknownKeyword { line: 4, keyword } if keyword == "usr"),
            "{err:?}"
        );
        assert!(
            err.to_string().starts_with("line 4: unknown keyword `usr`"),
            "{err}"
        );
    }

    #[test]
    fn bad_access_words_are_reported_with_their_line() {
        let err = parse_error("topic a\npattern reed a/b\n");
        assert!(
            matches!(&err, AuthError::BadAccess { line: 2, access } if access == "reed"),
            "{err:?}"
        );
        assert!(err.to_string().contains("`reed`"), "{err}");
    }

    #[test]
    fn missing_filters_and_user_names_are_reported_with_their_line() {
        assert!(matches!(
            parse_error("topic\n"),
            AuthError::MissingFilter { line: 1 }
        ));
        assert!(matches!(
            parse_error("topic a\npattern   read  \n"),
            AuthError::MissingFilter { line: 2 }
        ));
        assert!(matches!(
            parse_error("\nuser\n"),
            AuthError::MissingUser { line: 2 }
        ));
    }

    #[test]
    fn invalid_filters_are_reported_with_their_line() {
        for (text, bad) in [
            ("topic read a/#/b\n", "a/#/b"),
            ("topic read a+\n", "a+"),
            ("pattern write dev/%c#\n", "dev/%c#"),
        ] {
            let err = parse_error(text);
            assert!(
                matches!(&err, AuthError::InvalidFilter { line: 1, filter, .. } if filter == bad),
                "{text}: {err:?}"
            );
        }
    }

    #[test]
    fn load_names_the_path_in_errors() {
        let dir = std::env::temp_dir().join(format!("thingmq-acl-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("bad.acl");
        std::fs::write(&path, "topic read a\nbogus\n").unwrap();
        let message = AclFile::load(&path).unwrap_err().to_string();
        assert!(
            message.contains("bad.acl: line 2: unknown keyword"),
            "{message}"
        );
        let missing = AclFile::load(&dir.join("none.acl"))
            .unwrap_err()
            .to_string();
        assert!(missing.contains("none.acl"), "{missing}");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
