//! Retained messages: at most one per topic name, found again by topic filters at SUBSCRIBE.
//!
//! [`RetainStore`] keeps them in a trie over topic levels, so a wildcard filter visits only the
//! branches it can match instead of testing every retained topic; a filter without wildcards
//! is a direct lookup. Nodes left empty by a removal are pruned. The store is generic over the
//! message (`M`), which the server makes a cheap clone such as `Arc<message>`.
//!
//! Recursion depth follows the number of topic levels, which the server caps
//! (`TopicError::TooManyLevels`).

use std::collections::{hash_map, HashMap};

/// Retained messages by topic name.
#[derive(Debug)]
pub struct RetainStore<M> {
    root: Node<M>,
    /// Counted here so `len` does not walk the trie.
    len: usize,
}

/// One topic level; the path from the root spells the topic. The root itself is no topic.
#[derive(Debug)]
struct Node<M> {
    children: HashMap<Box<str>, Node<M>>,
    message: Option<M>,
}

impl<M> Default for Node<M> {
    fn default() -> Self {
        Node {
            children: HashMap::new(),
            message: None,
        }
    }
}

impl<M> Default for RetainStore<M> {
    fn default() -> Self {
        RetainStore {
            root: Node::default(),
            len: 0,
        }
    }
}

impl<M: Clone> RetainStore<M> {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }

    /// Stores or replaces the retained message for a topic name; returns the previous one.
    pub fn insert(&mut self, topic: &str, msg: M) -> Option<M> {
        let mut node = &mut self.root;
        for level in topic.split('/') {
            // Look up before inserting: `entry` would allocate the key every time.
            if !node.children.contains_key(level) {
                node.children.insert(level.into(), Node::default());
            }
            node = node.children.get_mut(level).expect("inserted above");
        }
        let previous = node.message.replace(msg);
        if previous.is_none() {
            self.len += 1;
        }
        previous
    }

    /// Deletes the retained message for a topic name (a retained PUBLISH with an empty payload
    /// does this [MQTT-3.3.1-6]); returns it.
    pub fn remove(&mut self, topic: &str) -> Option<M> {
        let removed = self.root.remove(&mut topic.split('/'));
        if removed.is_some() {
            self.len -= 1;
        }
        removed
    }

    /// The retained message for a topic name.
    pub fn get(&self, topic: &str) -> Option<&M> {
        let mut node = &self.root;
        for level in topic.split('/') {
            node = node.children.get(level)?;
        }
        node.message.as_ref()
    }

    /// Appends every retained message whose topic matches `filter`, a valid topic filter
    /// without a `$share` prefix. A filter starting with a wildcard does not match topics
    /// starting with `$` [MQTT-4.7.2-1].
    pub fn matching(&self, filter: &str, out: &mut Vec<M>) {
        if !filter.contains(['+', '#']) {
            out.extend(self.get(filter).cloned());
            return;
        }
        self.root.collect(Some(filter), true, out);
    }

    /// Removes every message for which `keep` returns false (message expiry sweeps); returns
    /// how many were removed.
    pub fn retain_where(&mut self, mut keep: impl FnMut(&str, &M) -> bool) -> usize {
        let mut path = String::new();
        let removed = self.root.sweep(&mut path, true, &mut keep);
        self.len -= removed;
        removed
    }

    /// Number of retained messages.
    pub fn len(&self) -> usize {
        self.len
    }

    /// True when nothing is retained.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Iterates `(topic, message)` pairs in no particular order, for persistence and the admin
    /// API. Each topic is rebuilt from its levels, hence the owned `String`.
    pub fn iter(&self) -> impl Iterator<Item = (String, &M)> + '_ {
        Iter {
            stack: vec![Frame {
                children: self.root.children.iter(),
                topic_len: None,
            }],
            path: String::new(),
        }
    }
}

impl<M: Clone> Node<M> {
    fn is_empty(&self) -> bool {
        self.message.is_none() && self.children.is_empty()
    }

    fn remove<'t>(&mut self, levels: &mut impl Iterator<Item = &'t str>) -> Option<M> {
        let Some(level) = levels.next() else {
            return self.message.take();
        };
        let child = self.children.get_mut(level)?;
        let removed = child.remove(levels);
        if child.is_empty() {
            self.children.remove(level);
            shrink_if_sparse(&mut self.children);
        }
        removed
    }

    /// `rest` is what is left of the filter after the levels that led here; None once every
    /// level is consumed.
    fn collect(&self, rest: Option<&str>, at_root: bool, out: &mut Vec<M>) {
        let Some(remaining) = rest else {
            out.extend(self.message.iter().cloned());
            return;
        };
        let (level, next) = match remaining.split_once('/') {
            Some((level, next)) => (level, Some(next)),
            None => (remaining, None),
        };
        // A leading wildcard does not match a topic starting with `$` [MQTT-4.7.2-1].
        let visible = |name: &str| !(at_root && name.starts_with('$'));
        match level {
            "#" => {
                // `sport/#` matches `sport` itself as well as everything below it.
                out.extend(self.message.iter().cloned());
                for (name, child) in &self.children {
                    if visible(name) {
                        child.collect_all(out);
                    }
                }
            }
            "+" => {
                for (name, child) in &self.children {
                    if visible(name) {
                        child.collect(next, false, out);
                    }
                }
            }
            _ => {
                if let Some(child) = self.children.get(level) {
                    child.collect(next, false, out);
                }
            }
        }
    }

    fn collect_all(&self, out: &mut Vec<M>) {
        out.extend(self.message.iter().cloned());
        for child in self.children.values() {
            child.collect_all(out);
        }
    }

    /// Drops messages `keep` rejects below this node and prunes emptied children; `path` is
    /// this node's topic and is restored before returning. `is_root` is separate from an empty
    /// `path` because a topic's first level may itself be empty (`/a`).
    fn sweep(
        &mut self,
        path: &mut String,
        is_root: bool,
        keep: &mut impl FnMut(&str, &M) -> bool,
    ) -> usize {
        let mut removed = 0;
        let base = path.len();
        self.children.retain(|name, child| {
            if !is_root {
                path.push('/');
            }
            path.push_str(name);
            if child.message.as_ref().is_some_and(|m| !keep(path, m)) {
                child.message = None;
                removed += 1;
            }
            removed += child.sweep(path, false, keep);
            path.truncate(base);
            !child.is_empty()
        });
        shrink_if_sparse(&mut self.children);
        removed
    }
}

/// Depth-first walk over the trie that rebuilds each topic in one reused buffer.
struct Iter<'a, M> {
    /// One frame per open node, innermost last.
    stack: Vec<Frame<'a, M>>,
    path: String,
}

struct Frame<'a, M> {
    children: hash_map::Iter<'a, Box<str>, Node<M>>,
    /// Length of this node's topic in `path`; None for the root, whose children start a topic
    /// without a `/`.
    topic_len: Option<usize>,
}

impl<'a, M> Iterator for Iter<'a, M> {
    type Item = (String, &'a M);

    fn next(&mut self) -> Option<Self::Item> {
        loop {
            let frame = self.stack.last_mut()?;
            let parent_len = frame.topic_len;
            let Some((name, node)) = frame.children.next() else {
                self.stack.pop();
                continue;
            };
            match parent_len {
                Some(len) => {
                    self.path.truncate(len);
                    self.path.push('/');
                }
                None => self.path.clear(),
            }
            self.path.push_str(name);
            self.stack.push(Frame {
                children: node.children.iter(),
                topic_len: Some(self.path.len()),
            });
            if let Some(message) = &node.message {
                return Some((self.path.clone(), message));
            }
        }
    }
}

/// A map keeps its peak capacity after removals; give memory back once it is mostly empty.
fn shrink_if_sparse<V>(map: &mut HashMap<Box<str>, V>) {
    if map.capacity() > 32 && map.len() * 4 < map.capacity() {
        map.shrink_to_fit();
    }
}

#[cfg(test)]
mod tests {
    use super::RetainStore;

    fn store(topics: &[&str]) -> RetainStore<String> {
        let mut store = RetainStore::new();
        for topic in topics {
            store.insert(topic, topic.to_string());
        }
        store
    }

    fn matching(store: &RetainStore<String>, filter: &str) -> Vec<String> {
        let mut out = Vec::new();
        store.matching(filter, &mut out);
        out.sort();
        out
    }

    #[test]
    fn retained_message_is_replaced_by_newer_one() {
        let mut store = RetainStore::new();
        assert_eq!(store.insert("a/b", 1), None);
        assert_eq!(store.insert("a/b", 2), Some(1));
        assert_eq!(store.get("a/b"), Some(&2));
        assert_eq!(store.len(), 1);
    }

    #[test]
    fn removed_message_is_gone_and_its_nodes_are_pruned() {
        let mut store = store(&["a/b/c", "a/b", "x"]);
        assert_eq!(store.remove("a/b/c").as_deref(), Some("a/b/c"));
        assert_eq!(store.remove("a/b/c"), None);
        assert_eq!(store.get("a/b").map(String::as_str), Some("a/b"));
        assert_eq!(store.remove("a/b").as_deref(), Some("a/b"));
        assert_eq!(store.remove("x").as_deref(), Some("x"));
        assert!(store.is_empty());
        assert!(store.root.is_empty());
    }

    #[test]
    fn removing_a_parent_keeps_its_children() {
        let mut store = store(&["a", "a/b"]);
        assert!(store.remove("a").is_some());
        assert_eq!(store.get("a"), None);
        assert_eq!(matching(&store, "a/#"), ["a/b"]);
    }

    #[test]
    fn exact_filter_finds_only_its_topic() {
        let store = store(&["a/b", "a/b/c", "a"]);
        assert_eq!(matching(&store, "a/b"), ["a/b"]);
        assert!(matching(&store, "a/c").is_empty());
    }

    #[test]
    fn single_level_wildcard_finds_one_level() {
        let store = store(&["a/b", "a/c", "a/b/c", "a", "a/", "/x"]);
        assert_eq!(matching(&store, "a/+"), ["a/", "a/b", "a/c"]);
        assert_eq!(matching(&store, "+/+/c"), ["a/b/c"]);
        assert_eq!(matching(&store, "+"), ["a"]);
        assert_eq!(matching(&store, "+/x"), ["/x"]);
    }

    #[test]
    fn multi_level_wildcard_finds_parent_and_children() {
        let store = store(&["sport", "sport/tennis", "sport/tennis/p1", "news"]);
        assert_eq!(
            matching(&store, "sport/#"),
            ["sport", "sport/tennis", "sport/tennis/p1"]
        );
        assert_eq!(matching(&store, "#").len(), 4);
        assert_eq!(
            matching(&store, "+/tennis/#"),
            ["sport/tennis", "sport/tennis/p1"]
        );
    }

    #[test]
    fn dollar_topics_are_not_matched_by_leading_wildcard() {
        let store = store(&["$SYS/uptime", "$SYS", "a/$b"]);
        assert_eq!(matching(&store, "#"), ["a/$b"]);
        assert!(matching(&store, "+/uptime").is_empty());
        assert!(matching(&store, "+").is_empty());
        assert_eq!(matching(&store, "$SYS/#"), ["$SYS", "$SYS/uptime"]);
        assert_eq!(matching(&store, "$SYS/+"), ["$SYS/uptime"]);
        assert_eq!(matching(&store, "a/+"), ["a/$b"]);
    }

    #[test]
    fn retain_where_removes_rejected_messages_and_prunes() {
        let mut store = store(&["a/b/c", "a/b", "keep/me", "x/y", "/a"]);
        let mut seen = Vec::new();
        let removed = store.retain_where(|topic, msg| {
            assert_eq!(topic, msg);
            seen.push(topic.to_owned());
            topic.starts_with("keep")
        });
        seen.sort();
        assert_eq!(seen, ["/a", "a/b", "a/b/c", "keep/me", "x/y"]);
        assert_eq!(removed, 4);
        assert_eq!(store.len(), 1);
        assert_eq!(store.root.children.len(), 1);
        assert_eq!(store.retain_where(|_, _| false), 1);
        assert!(store.root.is_empty());
    }

    #[test]
    fn iter_yields_every_topic_with_its_message() {
        let topics = ["a", "a/b", "a/b/c", "/", "//x", "$SYS/x"];
        let store = store(&topics);
        let mut pairs: Vec<(String, String)> = store.iter().map(|(t, m)| (t, m.clone())).collect();
        pairs.sort();
        let mut expected: Vec<(String, String)> = topics
            .iter()
            .map(|t| (t.to_string(), t.to_string()))
            .collect();
        expected.sort();
        assert_eq!(pairs, expected);
        assert_eq!(RetainStore::<String>::new().iter().count(), 0);
    }
}
