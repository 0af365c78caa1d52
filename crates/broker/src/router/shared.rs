//! One `$share/{group}/{filter}` subscription: its members and round-robin member selection.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use super::{Subscriber, SubscriptionEntry};

/// The members of one share group on one filter.
#[derive(Debug)]
pub(super) struct SharedGroup<S> {
    /// Shared so every delivery can name its group without allocating.
    name: Arc<str>,
    /// The filter (without the `$share/{group}/` prefix), so a delivery can name the exact
    /// shared subscription it came through.
    filter: Arc<str>,
    /// A Vec, not a map: groups are small, and selection indexes by position.
    members: Vec<(S, SubscriptionEntry)>,
    /// Round-robin cursor. Atomic because routing runs concurrently under a read lock; races
    /// between threads only bend the rotation, they never pick a non-member.
    next: AtomicUsize,
}

impl<S> SharedGroup<S> {
    pub(super) fn new(name: Arc<str>, filter: Arc<str>) -> Self {
        SharedGroup {
            name,
            filter,
            members: Vec::new(),
            next: AtomicUsize::new(0),
        }
    }

    pub(super) fn name(&self) -> &Arc<str> {
        &self.name
    }

    pub(super) fn filter(&self) -> &Arc<str> {
        &self.filter
    }

    pub(super) fn is_empty(&self) -> bool {
        self.members.is_empty()
    }

    pub(super) fn members(&self) -> &[(S, SubscriptionEntry)] {
        &self.members
    }
}

impl<S: Subscriber> SharedGroup<S> {
    /// Adds or replaces a member's entry; true when the member is new.
    pub(super) fn upsert(&mut self, subscriber: S, entry: SubscriptionEntry) -> bool {
        match self.members.iter_mut().find(|(s, _)| *s == subscriber) {
            Some((_, old)) => {
                *old = entry;
                false
            }
            None => {
                self.members.push((subscriber, entry));
                true
            }
        }
    }

    pub(super) fn remove(&mut self, subscriber: &S) -> bool {
        match self.members.iter().position(|(s, _)| s == subscriber) {
            Some(i) => {
                // Order matters only for fairness, which the cursor provides anyway.
                self.members.swap_remove(i);
                true
            }
            None => false,
        }
    }

    /// The next member in rotation, skipping `exclude` and preferring available members;
    /// when none is available, the next unavailable one, whose session keeps the message for
    /// its reconnection.
    pub(super) fn select(&self, exclude: Option<&S>) -> Option<&(S, SubscriptionEntry)> {
        let len = self.members.len();
        if len == 0 {
            return None;
        }
        let start = self.next.fetch_add(1, Ordering::Relaxed);
        let mut fallback = None;
        for step in 0..len {
            let member = &self.members[start.wrapping_add(step) % len];
            if exclude == Some(&member.0) {
                continue;
            }
            if member.0.is_available() {
                if step > 0 {
                    // Move the cursor past the members we skipped, or the member after a
                    // run of unavailable ones would be picked once for each of them. Losing
                    // this race to another router thread is harmless.
                    let _ = self.next.compare_exchange(
                        start.wrapping_add(1),
                        start.wrapping_add(1 + step),
                        Ordering::Relaxed,
                        Ordering::Relaxed,
                    );
                }
                return Some(member);
            }
            fallback.get_or_insert(member);
        }
        fallback
    }
}
