//! A map for the many small collections of the broker's core: a session's subscriptions, a
//! topic level's children in the router, a filter's subscribers.
//!
//! Most of them hold one or a few entries (a device subscribes to its own command topic; a
//! leaf level of the router has no children and one subscriber), yet each lives as long as
//! its session or subscription, and the smallest `HashMap` table is four buckets — ~440 bytes
//! for a single subscription record, kept per session. Up to [`FEW`] entries the map is a
//! boxed slice grown one slot at a time and searched in order (faster than hashing for so
//! few; a slice rather than a vector: it has no capacity to keep, so the map is two words);
//! past that it becomes a `HashMap`, so a filter every client subscribes to, or a session
//! with thousands of subscriptions, still inserts and removes in constant time.

use std::borrow::Borrow;
use std::collections::HashMap;
use std::hash::Hash;

/// Entries kept in a vector at most.
pub(crate) const FEW: usize = 8;

#[derive(Debug)]
pub(crate) enum SmallMap<K, V> {
    Few(Box<[(K, V)]>),
    /// Boxed, so that the enum is the size of a slice pointer: a router node has two of
    /// these, and a session one.
    #[allow(clippy::box_collection)] // the box is the point (see above)
    Many(Box<HashMap<K, V>>),
}

impl<K, V> Default for SmallMap<K, V> {
    fn default() -> Self {
        SmallMap::Few(Box::default())
    }
}

impl<K: Eq + Hash, V> SmallMap<K, V> {
    pub(crate) fn get<Q>(&self, key: &Q) -> Option<&V>
    where
        K: Borrow<Q>,
        Q: Eq + Hash + ?Sized,
    {
        match self {
            SmallMap::Few(v) => v.iter().find(|(k, _)| k.borrow() == key).map(|(_, v)| v),
            SmallMap::Many(m) => m.get(key),
        }
    }

    pub(crate) fn get_mut<Q>(&mut self, key: &Q) -> Option<&mut V>
    where
        K: Borrow<Q>,
        Q: Eq + Hash + ?Sized,
    {
        match self {
            SmallMap::Few(v) => v
                .iter_mut()
                .find(|(k, _)| k.borrow() == key)
                .map(|(_, v)| v),
            SmallMap::Many(m) => m.get_mut(key),
        }
    }

    pub(crate) fn contains_key<Q>(&self, key: &Q) -> bool
    where
        K: Borrow<Q>,
        Q: Eq + Hash + ?Sized,
    {
        self.get(key).is_some()
    }

    /// Adds or replaces; the replaced value, if any.
    pub(crate) fn insert(&mut self, key: K, value: V) -> Option<V> {
        match self {
            SmallMap::Few(v) => {
                if let Some(slot) = v.iter_mut().find(|(k, _)| *k == key) {
                    return Some(std::mem::replace(&mut slot.1, value));
                }
                let mut few = std::mem::take(v).into_vec();
                if few.len() < FEW {
                    // One slot at a time: `push` alone would make room for four.
                    few.reserve_exact(1);
                    few.push((key, value));
                    *v = few.into_boxed_slice();
                    return None;
                }
                let mut map: HashMap<K, V> = few.into_iter().collect();
                map.insert(key, value);
                *self = SmallMap::Many(Box::new(map));
                None
            }
            SmallMap::Many(m) => m.insert(key, value),
        }
    }

    pub(crate) fn remove<Q>(&mut self, key: &Q) -> Option<V>
    where
        K: Borrow<Q>,
        Q: Eq + Hash + ?Sized,
    {
        match self {
            SmallMap::Few(v) => {
                let at = v.iter().position(|(k, _)| k.borrow() == key)?;
                let mut few = std::mem::take(v).into_vec();
                let (_, value) = few.swap_remove(at);
                *v = few.into_boxed_slice();
                Some(value)
            }
            SmallMap::Many(m) => {
                let value = m.remove(key)?;
                if m.len() <= FEW / 2 {
                    // Back to a vector once mostly empty: the table keeps its peak capacity.
                    let few: Vec<(K, V)> = m.drain().collect();
                    *self = SmallMap::Few(few.into_boxed_slice());
                } else if m.capacity() > 32 && m.len() * 4 < m.capacity() {
                    m.shrink_to_fit();
                }
                Some(value)
            }
        }
    }
}

impl<K, V> SmallMap<K, V> {
    pub(crate) fn len(&self) -> usize {
        match self {
            SmallMap::Few(v) => v.len(),
            SmallMap::Many(m) => m.len(),
        }
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The entries, in no particular order.
    pub(crate) fn iter(&self) -> Iter<'_, K, V> {
        match self {
            SmallMap::Few(v) => Iter::Few(v.iter()),
            SmallMap::Many(m) => Iter::Many(m.iter()),
        }
    }

    pub(crate) fn values(&self) -> impl Iterator<Item = &V> {
        self.iter().map(|(_, v)| v)
    }

    /// Removes and returns every value.
    pub(crate) fn take_values(&mut self) -> Vec<V> {
        match std::mem::take(self) {
            SmallMap::Few(v) => v.into_vec().into_iter().map(|(_, v)| v).collect(),
            SmallMap::Many(m) => m.into_values().collect(),
        }
    }
}

/// The entries of a [`SmallMap`] (on the publish path: an enum, not a chain of options, so
/// each step is one match).
pub(crate) enum Iter<'a, K, V> {
    Few(std::slice::Iter<'a, (K, V)>),
    Many(std::collections::hash_map::Iter<'a, K, V>),
}

impl<'a, K, V> Iterator for Iter<'a, K, V> {
    type Item = (&'a K, &'a V);

    fn next(&mut self) -> Option<Self::Item> {
        match self {
            Iter::Few(i) => i.next().map(|(k, v)| (k, v)),
            Iter::Many(i) => i.next(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn one_entry_takes_one_slot() {
        let mut m = SmallMap::default();
        m.insert("a".to_string(), 1);
        assert!(matches!(&m, SmallMap::Few(v) if v.len() == 1));
        assert_eq!(std::mem::size_of_val(&m), 16, "two words");
        assert_eq!(m.get("a"), Some(&1));
    }

    #[test]
    fn it_becomes_a_hash_map_past_a_few_and_a_vector_again_when_mostly_empty() {
        let mut m = SmallMap::default();
        for i in 0..=FEW {
            assert_eq!(m.insert(i, i), None);
        }
        assert!(matches!(m, SmallMap::Many(_)));
        for i in 0..=FEW / 2 {
            assert_eq!(m.remove(&i), Some(i));
        }
        assert!(matches!(m, SmallMap::Few(_)));
        assert_eq!(m.len(), FEW - FEW / 2);
        m.take_values();
        assert!(m.is_empty());
    }

    proptest! {
        /// Whatever the sequence of inserts and removes, it answers as a `HashMap` does.
        #[test]
        fn behaves_like_a_hash_map(ops in prop::collection::vec((any::<bool>(), 0u8..24, any::<u16>()), 0..200)) {
            let mut ours = SmallMap::default();
            let mut theirs = HashMap::new();
            for (insert, k, v) in ops {
                if insert {
                    prop_assert_eq!(ours.insert(k, v), theirs.insert(k, v));
                } else {
                    prop_assert_eq!(ours.remove(&k), theirs.remove(&k));
                }
                prop_assert_eq!(ours.len(), theirs.len());
                for k in 0u8..24 {
                    prop_assert_eq!(ours.get(&k), theirs.get(&k));
                }
            }
            let mut all: Vec<_> = ours.iter().map(|(k, v)| (*k, *v)).collect();
            all.sort();
            let mut want: Vec<_> = theirs.into_iter().collect();
            want.sort();
            prop_assert_eq!(all, want);
        }
    }
}
