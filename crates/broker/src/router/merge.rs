//! Turning the matched subscription sets of one publish into one delivery per subscriber.
//!
//! A subscriber whose subscriptions overlap must get a single copy [MQTT-3.3.4-2]. Rather than
//! building a per-publish map of subscribers, this uses the maps the trie already has: a
//! subscriber is emitted from the first matched set that holds it, and the later sets are
//! asked (one hash lookup each) for its other entries. With one matched filter, the common
//! case for large fan-outs, no lookups happen at all.

use super::trie::{skips, Subs};
use super::{Delivery, Subscriber};

/// How many matched sets fit without allocating; most topics match only a few filters.
const INLINE: usize = 8;

/// The non-empty subscription sets that matched one topic, in walk order.
pub(super) struct Matched<'a, S> {
    inline: [&'a Subs<S>; INLINE],
    len: usize,
    /// Holds every set once more than `INLINE` have matched.
    spill: Vec<&'a Subs<S>>,
}

impl<'a, S> Matched<'a, S> {
    /// `filler` is any set: it only initialises unused slots, which are never read.
    pub(super) fn new(filler: &'a Subs<S>) -> Self {
        Matched {
            inline: [filler; INLINE],
            len: 0,
            spill: Vec::new(),
        }
    }

    pub(super) fn push(&mut self, subs: &'a Subs<S>) {
        if self.len < INLINE {
            self.inline[self.len] = subs;
            self.len += 1;
        } else {
            if self.spill.is_empty() {
                self.spill.extend_from_slice(&self.inline);
            }
            self.spill.push(subs);
        }
    }

    pub(super) fn as_slice(&self) -> &[&'a Subs<S>] {
        if self.spill.is_empty() {
            &self.inline[..self.len]
        } else {
            &self.spill
        }
    }
}

/// Appends one delivery per subscriber found in `sets`, merging its entries across sets.
pub(super) fn deliver<S: Subscriber>(
    sets: &[&Subs<S>],
    publisher: Option<&S>,
    out: &mut Vec<Delivery<S>>,
) {
    for (i, set) in sets.iter().enumerate() {
        let (earlier, later) = (&sets[..i], &sets[i + 1..]);
        for (subscriber, entry) in set.direct.iter() {
            if skips(entry, subscriber, publisher) {
                continue;
            }
            if earlier
                .iter()
                .any(|e| e.effective(subscriber, publisher).is_some())
            {
                continue; // already delivered, with this entry merged in
            }
            let mut delivery = Delivery::new(subscriber.clone(), entry, None);
            for other in later {
                if let Some(entry) = other.effective(subscriber, publisher) {
                    delivery.merge(entry);
                }
            }
            out.push(delivery);
        }
    }
}
