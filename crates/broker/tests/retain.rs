//! Property tests: the retained-message store agrees with `thingmq_codec::topic::matches`, the
//! reference definition of filter matching, on random topics and filters.

use std::collections::BTreeMap;

use proptest::prelude::*;
use thingmq_broker::retain::RetainStore;
use thingmq_codec::topic::{matches, validate_filter, validate_name};

const FILTER_LEVELS: &[&str] = &["$SYS", "", "a", "b", "+", "#"];
const NAME_LEVELS: &[&str] = &["$SYS", "", "a", "b"];

fn join(levels: &[&str], picks: Vec<usize>) -> String {
    picks
        .into_iter()
        .map(|i| levels[i])
        .collect::<Vec<_>>()
        .join("/")
}

fn filter() -> impl Strategy<Value = String> {
    prop::collection::vec(0..FILTER_LEVELS.len(), 1..5)
        .prop_map(|picks| join(FILTER_LEVELS, picks))
        .prop_filter("valid filter", |f| validate_filter(f).is_ok())
}

fn topic() -> impl Strategy<Value = String> {
    prop::collection::vec(0..NAME_LEVELS.len(), 1..5)
        .prop_map(|picks| join(NAME_LEVELS, picks))
        .prop_filter("valid name", |t| validate_name(t).is_ok())
}

fn sorted_matching(store: &RetainStore<String>, filter: &str) -> Vec<String> {
    let mut out = Vec::new();
    store.matching(filter, &mut out);
    out.sort();
    out
}

proptest! {
    #[test]
    fn matching_returns_exactly_the_retained_topics_the_filter_matches(
        topics in prop::collection::vec(topic(), 0..16),
        removals in prop::collection::vec(topic(), 0..6),
        filters in prop::collection::vec(filter(), 1..8),
    ) {
        let mut store = RetainStore::new();
        let mut model = BTreeMap::new();
        for t in &topics {
            prop_assert_eq!(store.insert(t, t.clone()), model.insert(t.clone(), t.clone()));
        }
        for t in &removals {
            prop_assert_eq!(store.remove(t), model.remove(t));
        }
        prop_assert_eq!(store.len(), model.len());
        for f in &filters {
            let expected: Vec<String> = model.keys().filter(|t| matches(f, t)).cloned().collect();
            prop_assert_eq!(sorted_matching(&store, f), expected, "filter {}", f);
        }
        let mut listed: Vec<String> = store.iter().map(|(t, m)| { assert_eq!(&t, m); t }).collect();
        listed.sort();
        prop_assert_eq!(listed, model.keys().cloned().collect::<Vec<_>>());
    }

    #[test]
    fn retain_where_removes_exactly_the_rejected_messages(
        topics in prop::collection::vec(topic(), 0..16),
        rejected in filter(),
    ) {
        let mut store = RetainStore::new();
        for t in &topics {
            store.insert(t, t.clone());
        }
        let before = store.len();
        let removed = store.retain_where(|t, _| !matches(&rejected, t));
        prop_assert_eq!(store.len(), before - removed);
        for t in &topics {
            prop_assert_eq!(store.get(t).is_some(), !matches(&rejected, t));
        }
        store.retain_where(|_, _| false);
        prop_assert!(store.is_empty());
        prop_assert_eq!(store.iter().count(), 0);
    }
}
