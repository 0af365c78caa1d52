//! The trie over topic levels that stores subscriptions, and its walk for one topic name.

use super::shared::SharedGroup;
use super::{Subscriber, SubscriptionEntry};
use crate::small_map::SmallMap;

/// One topic level of a filter. The path from the root spells the filter.
#[derive(Debug)]
pub(super) struct Node<S> {
    /// Small maps (a vector while there are a few): most nodes are leaves with no children
    /// and one subscriber, and a `HashMap` apiece made each such node ~400 bytes.
    children: SmallMap<Box<str>, Node<S>>,
    /// The `+` level is kept apart from exact levels so a walk never has to compare with it.
    plus: Option<Box<Node<S>>>,
    /// Subscriptions whose filter ends at this node.
    pub(super) exact: Subs<S>,
    /// Subscriptions whose filter is this node's path followed by `#`. Boxed because few nodes
    /// have any, and an empty `Subs` is several words.
    hash: Option<Box<Subs<S>>>,
}

/// The subscriptions stored under one filter.
#[derive(Debug)]
pub(super) struct Subs<S> {
    /// Ordinary subscriptions. A map past a few: a filter such as `broadcast` can have a
    /// subscription from every client, and unsubscribe must not scan them all.
    pub(super) direct: SmallMap<S, SubscriptionEntry>,
    /// `$share` groups on this filter; a filter rarely has more than a few.
    pub(super) groups: Vec<SharedGroup<S>>,
}

impl<S> Default for Node<S> {
    fn default() -> Self {
        Node {
            children: SmallMap::default(),
            plus: None,
            exact: Subs::default(),
            hash: None,
        }
    }
}

impl<S> Default for Subs<S> {
    fn default() -> Self {
        Subs {
            direct: SmallMap::default(),
            groups: Vec::new(),
        }
    }
}

impl<S> Node<S> {
    fn is_empty(&self) -> bool {
        self.children.is_empty()
            && self.plus.is_none()
            && self.exact.is_empty()
            && self.hash.is_none()
    }

    /// Calls `visit(filter, subs)` for every subscription set in the trie, `filter` spelled
    /// from the levels walked. `path` is scratch space (the filter so far, left as given);
    /// `at_root` tells a first level (no `/` before it) from an empty one (`/a`).
    pub(super) fn each_filter<F: FnMut(&str, &Subs<S>)>(
        &self,
        path: &mut String,
        at_root: bool,
        visit: &mut F,
    ) {
        if !self.exact.is_empty() {
            visit(path, &self.exact);
        }
        let len = path.len();
        let descend = |path: &mut String, level: &str| {
            if !at_root {
                path.push('/');
            }
            path.push_str(level);
        };
        if let Some(hash) = &self.hash {
            descend(path, "#");
            visit(path, hash);
            path.truncate(len);
        }
        let plus = self.plus.as_deref().map(|n| ("+", n));
        for (level, child) in self.children.iter().map(|(l, n)| (&**l, n)).chain(plus) {
            descend(path, level);
            child.each_filter(path, false, visit);
            path.truncate(len);
        }
    }

    /// Calls `visit` with every non-empty subscription set whose filter matches `topic`.
    pub(super) fn walk<'a, F: FnMut(&'a Subs<S>)>(&'a self, topic: &str, visit: &mut F) {
        self.walk_from(Some(topic), true, visit);
    }

    /// `rest` is what is left of the topic after the levels that led here; None once every
    /// level is consumed. Exact children are followed in a loop and only `+` recurses, so the
    /// stack depth is the number of `+` levels on a path, not the number of levels.
    fn walk_from<'a, F: FnMut(&'a Subs<S>)>(
        &'a self,
        mut rest: Option<&str>,
        mut at_root: bool,
        visit: &mut F,
    ) {
        let mut node = self;
        loop {
            let Some(remaining) = rest else {
                visit_non_empty(&node.exact, visit);
                // `sport/#` matches `sport` as well as everything below it.
                if let Some(hash) = &node.hash {
                    visit_non_empty(hash, visit);
                }
                return;
            };
            // A leading wildcard does not match a topic starting with `$` [MQTT-4.7.2-1].
            let wildcards_apply = !(at_root && remaining.starts_with('$'));
            let (level, next) = match remaining.split_once('/') {
                Some((level, next)) => (level, Some(next)),
                None => (remaining, None),
            };
            if wildcards_apply {
                if let Some(hash) = &node.hash {
                    visit_non_empty(hash, visit);
                }
                if let Some(plus) = &node.plus {
                    plus.walk_from(next, false, visit);
                }
            }
            match node.children.get(level) {
                Some(child) => node = child,
                None => return,
            }
            rest = next;
            at_root = false;
        }
    }

    /// The subscriptions stored under exactly `filter`, if any.
    pub(super) fn find(&self, filter: &str) -> Option<&Subs<S>> {
        let mut node = self;
        for level in filter.split('/') {
            node = match level {
                "#" => return node.hash.as_deref(),
                "+" => node.plus.as_deref()?,
                _ => node.children.get(level)?,
            };
        }
        Some(&node.exact)
    }

    /// The subscriptions under `filter`, creating the path to them.
    pub(super) fn subs_or_insert(&mut self, filter: &str) -> &mut Subs<S> {
        let mut node = self;
        for level in filter.split('/') {
            node = match level {
                "#" => return node.hash.get_or_insert_with(Box::default),
                "+" => node.plus.get_or_insert_with(Box::default),
                _ => {
                    // Look up before inserting: `entry` would allocate the key every time.
                    if !node.children.contains_key(level) {
                        node.children.insert(level.into(), Node::default());
                    }
                    node.children.get_mut(level).expect("inserted above")
                }
            };
        }
        &mut node.exact
    }
}

impl<S: Subscriber> Node<S> {
    /// Removes one subscription and prunes the nodes it leaves empty.
    pub(super) fn remove(&mut self, filter: &str, group: Option<&str>, subscriber: &S) -> bool {
        self.remove_levels(&mut filter.split('/'), group, subscriber)
    }

    fn remove_levels<'f>(
        &mut self,
        levels: &mut impl Iterator<Item = &'f str>,
        group: Option<&str>,
        subscriber: &S,
    ) -> bool {
        match levels.next() {
            None => self.exact.remove(group, subscriber),
            Some("#") => {
                let Some(hash) = self.hash.as_deref_mut() else {
                    return false;
                };
                let removed = hash.remove(group, subscriber);
                if hash.is_empty() {
                    self.hash = None;
                }
                removed
            }
            Some("+") => {
                let Some(plus) = self.plus.as_deref_mut() else {
                    return false;
                };
                let removed = plus.remove_levels(levels, group, subscriber);
                if plus.is_empty() {
                    self.plus = None;
                }
                removed
            }
            Some(level) => {
                let Some(child) = self.children.get_mut(level) else {
                    return false;
                };
                let removed = child.remove_levels(levels, group, subscriber);
                if child.is_empty() {
                    self.children.remove(level);
                }
                removed
            }
        }
    }

    /// Number of nodes below and including this one; lets tests check pruning.
    #[cfg(test)]
    pub(super) fn node_count(&self) -> usize {
        1 + self.children.values().map(Node::node_count).sum::<usize>()
            + self.plus.as_ref().map_or(0, |p| p.node_count())
    }
}

impl<S> Subs<S> {
    fn is_empty(&self) -> bool {
        self.direct.is_empty() && self.groups.is_empty()
    }

    /// The `$share` group named `name` on this filter.
    pub(super) fn group(&self, name: &str) -> Option<&SharedGroup<S>> {
        self.groups.iter().find(|g| &**g.name() == name)
    }
}

impl<S: Subscriber> Subs<S> {
    /// Adds or replaces; true when it is new.
    pub(super) fn insert(
        &mut self,
        filter: &str,
        group: Option<&str>,
        subscriber: S,
        entry: SubscriptionEntry,
    ) -> bool {
        let Some(name) = group else {
            return self.direct.insert(subscriber, entry).is_none();
        };
        match self.groups.iter_mut().position(|g| &**g.name() == name) {
            Some(i) => self.groups[i].upsert(subscriber, entry),
            None => {
                let mut g = SharedGroup::new(name.into(), filter.into());
                g.upsert(subscriber, entry);
                self.groups.push(g);
                true
            }
        }
    }

    fn remove(&mut self, group: Option<&str>, subscriber: &S) -> bool {
        let Some(name) = group else {
            return self.direct.remove(subscriber).is_some();
        };
        let Some(i) = self.groups.iter().position(|g| &**g.name() == name) else {
            return false;
        };
        let removed = self.groups[i].remove(subscriber);
        if self.groups[i].is_empty() {
            self.groups.swap_remove(i);
        }
        removed
    }

    /// The entry under which `subscriber` receives a message from `publisher` here, if any.
    pub(super) fn effective(
        &self,
        subscriber: &S,
        publisher: Option<&S>,
    ) -> Option<&SubscriptionEntry> {
        self.direct
            .get(subscriber)
            .filter(|entry| !skips(entry, subscriber, publisher))
    }
}

/// No Local: the subscription does not receive its own client's publications [MQTT-3.8.3-3].
pub(super) fn skips<S: PartialEq>(
    entry: &SubscriptionEntry,
    subscriber: &S,
    publisher: Option<&S>,
) -> bool {
    entry.options.no_local && publisher == Some(subscriber)
}

fn visit_non_empty<'a, S, F: FnMut(&'a Subs<S>)>(subs: &'a Subs<S>, visit: &mut F) {
    if !subs.is_empty() {
        visit(subs);
    }
}
