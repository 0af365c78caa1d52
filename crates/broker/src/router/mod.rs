//! The subscription router: maps topic filters to subscribers.
//!
//! [`Router`] holds every subscription in a trie over topic levels (`trie.rs`) and answers one
//! question on the publish hot path: who gets a copy of a message published to this topic?
//! [`Router::route`] takes `&self`, so the server can share one router behind a read lock and
//! route from many threads at once; the only state a route changes is the round-robin cursor
//! of each matched `$share` group, which is an atomic (`shared.rs`).
//!
//! Rules implemented here:
//! - `+` matches one level, `#` matches its parent level and everything below (`sport/#`
//!   matches `sport`).
//! - A filter whose first level is a wildcard does not match a topic starting with `$`
//!   [MQTT-4.7.2-1].
//! - A subscriber with several matching subscriptions gets one copy, with the highest granted
//!   QoS and every subscription identifier [MQTT-3.3.4-2, MQTT-3.3.4-3, MQTT-3.3.4-4].
//! - No Local subscriptions skip the publisher's own messages [MQTT-3.8.3-3].
//! - Each matching `$share` group gets one copy, sent to one member chosen round-robin,
//!   preferring members with a live connection.
//!
//! Recursion depth in the trie is bounded by the number of levels in the stored filters; the
//! server caps topic levels (`TopicError::TooManyLevels`) before anything reaches the router.

mod merge;
mod shared;
mod trie;

#[cfg(test)]
mod tests;

use std::num::NonZeroU32;
use std::sync::Arc;

use thingmq_codec::{QoS, SubscriptionOptions};

use merge::Matched;
use trie::Node;

/// What a subscriber handle must provide. Implemented by the server's session handle.
pub trait Subscriber: Clone + Eq + std::hash::Hash {
    /// False while the session has no live connection; shared-subscription selection prefers
    /// available members.
    fn is_available(&self) -> bool;
}

/// One subscription's stored options.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SubscriptionEntry {
    /// The options from SUBSCRIBE; the QoS is the one granted.
    pub options: SubscriptionOptions,
    /// The MQTT 5 Subscription Identifier, echoed back in every PUBLISH this subscription causes.
    pub identifier: Option<NonZeroU32>,
}

/// One subscriber's merged view of a published message.
#[derive(Debug, Clone)]
pub struct Delivery<S> {
    /// Who gets the copy.
    pub subscriber: S,
    /// Highest granted QoS among its matching subscriptions; the session still caps it at the
    /// QoS the message was published with.
    pub qos: QoS,
    /// True if any matching subscription has Retain As Published.
    pub retain_as_published: bool,
    /// Every matching subscription identifier (MQTT 5), in no particular order.
    pub identifiers: Vec<NonZeroU32>,
    /// Some when delivered via a `$share` group: redistribution on session end needs the group.
    pub share_group: Option<Arc<str>>,
    /// The filter of that shared subscription (without the `$share/{group}/` prefix).
    pub share_filter: Option<Arc<str>>,
}

impl<S> Delivery<S> {
    fn new(subscriber: S, entry: &SubscriptionEntry, share: Option<(Arc<str>, Arc<str>)>) -> Self {
        let (share_group, share_filter) = share.unzip();
        Delivery {
            subscriber,
            qos: entry.options.qos,
            retain_as_published: entry.options.retain_as_published,
            // Collecting an Option allocates only when there is an identifier.
            identifiers: entry.identifier.into_iter().collect(),
            share_group,
            share_filter,
        }
    }

    /// Folds one more matching subscription of the same subscriber into this copy.
    fn merge(&mut self, entry: &SubscriptionEntry) {
        self.qos = self.qos.max(entry.options.qos);
        self.retain_as_published |= entry.options.retain_as_published;
        self.identifiers.extend(entry.identifier);
    }
}

/// All subscriptions of the broker, indexed by filter.
#[derive(Debug)]
pub struct Router<S> {
    root: Node<S>,
    /// Counted here so `len` does not walk the trie.
    len: usize,
}

impl<S> Default for Router<S> {
    fn default() -> Self {
        Router {
            root: Node::default(),
            len: 0,
        }
    }
}

impl<S: Subscriber> Router<S> {
    /// An empty router.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds or replaces a subscription. `filter` is the inner filter (already validated, without
    /// the `$share/{group}/` prefix); `share_group` is the group when it was a `$share` filter.
    /// Returns true when it did not exist before (Retain Handling 1 needs this).
    pub fn subscribe(
        &mut self,
        filter: &str,
        share_group: Option<&str>,
        subscriber: S,
        entry: SubscriptionEntry,
    ) -> bool {
        let is_new =
            self.root
                .subs_or_insert(filter)
                .insert(filter, share_group, subscriber, entry);
        if is_new {
            self.len += 1;
        }
        is_new
    }

    /// Removes a subscription; returns whether it existed. Trie nodes left empty are pruned so
    /// memory does not grow with subscribe/unsubscribe churn.
    pub fn unsubscribe(&mut self, filter: &str, share_group: Option<&str>, subscriber: &S) -> bool {
        let removed = self.root.remove(filter, share_group, subscriber);
        if removed {
            self.len -= 1;
        }
        removed
    }

    /// Appends one [`Delivery`] per subscriber whose non-shared subscriptions match `topic`, and
    /// one per matching `$share` group (see the module docs for the rules). A subscriber
    /// matching both ways gets both: they are distinct subscriptions.
    ///
    /// `topic` must be a valid topic name. Allocates only for pushes to `out`, subscription
    /// identifiers, and when more than a handful of distinct filters match.
    pub fn route(&self, topic: &str, publisher: Option<&S>, out: &mut Vec<Delivery<S>>) {
        let mut matched = Matched::new(&self.root.exact);
        self.root.walk(topic, &mut |subs| {
            for group in &subs.groups {
                // No Local is not checked: on a shared subscription it is a protocol error
                // [MQTT-3.8.3-4], rejected at SUBSCRIBE.
                if let Some((member, entry)) = group.select(None) {
                    out.push(Delivery::new(
                        member.clone(),
                        entry,
                        Some((group.name().clone(), group.filter().clone())),
                    ));
                }
            }
            if !subs.direct.is_empty() {
                matched.push(subs);
            }
        });
        merge::deliver(matched.as_slice(), publisher, out);
    }

    /// Picks another member of the `$share/{group}/{filter}` subscription for a message whose
    /// previous member's session ended, excluding `exclude`. Prefers available members; None if
    /// there is no other member.
    pub fn pick_shared(&self, filter: &str, group: &str, exclude: &S) -> Option<S> {
        self.pick_shared_entry(filter, group, exclude)
            .map(|(member, _)| member)
    }

    /// Like [`Router::pick_shared`], also returning the member's subscription entry (its
    /// granted QoS and subscription identifier).
    pub fn pick_shared_entry(
        &self,
        filter: &str,
        group: &str,
        exclude: &S,
    ) -> Option<(S, SubscriptionEntry)> {
        let group = self.root.find(filter)?.group(group)?;
        group.select(Some(exclude)).cloned()
    }

    /// Calls `visit(filter, share_group, subscriber, entry)` for every subscription (each
    /// shared-group membership once), in no particular order. Walks the whole trie: for
    /// operators' listings, not for the publish path.
    pub fn for_each_subscription(
        &self,
        mut visit: impl FnMut(&str, Option<&Arc<str>>, &S, &SubscriptionEntry),
    ) {
        let mut path = String::new();
        self.root.each_filter(&mut path, true, &mut |filter, subs| {
            for (s, e) in subs.direct.iter() {
                visit(filter, None, s, e);
            }
            for g in &subs.groups {
                for (s, e) in g.members() {
                    visit(filter, Some(g.name()), s, e);
                }
            }
        });
    }

    /// Number of subscriptions (each shared-group membership counts one).
    pub fn len(&self) -> usize {
        self.len
    }

    /// True when there are no subscriptions.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
}
