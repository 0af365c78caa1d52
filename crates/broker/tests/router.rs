//! Property tests: the router agrees with `thingmq_codec::topic::matches`, the reference
//! definition of filter matching, on random filters and topics.

use std::collections::{BTreeMap, BTreeSet};
use std::num::NonZeroU32;

use proptest::prelude::*;
use thingmq_broker::router::{Router, Subscriber, SubscriptionEntry};
use thingmq_codec::topic::{matches, validate_filter, validate_name};
use thingmq_codec::{QoS, SubscriptionOptions};

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct Client(u8);

impl Subscriber for Client {
    fn is_available(&self) -> bool {
        true
    }
}

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

fn qos(n: u8) -> QoS {
    QoS::from_u8(n % 3).unwrap()
}

/// One subscription: filter, optional share group, subscriber, QoS.
fn subscription() -> impl Strategy<Value = (String, Option<u8>, u8, u8)> {
    (
        filter(),
        prop::option::weighted(0.3, 0..2u8),
        0..5u8,
        0..3u8,
    )
}

fn entry(qos_bits: u8, id: u32) -> SubscriptionEntry {
    SubscriptionEntry {
        options: SubscriptionOptions {
            qos: qos(qos_bits),
            ..SubscriptionOptions::default()
        },
        identifier: NonZeroU32::new(id),
    }
}

type Key = (String, Option<String>, u8);

/// The model: the last entry stored per (filter, group, subscriber), with its identifier.
fn subscribe_all(
    subs: &[(String, Option<u8>, u8, u8)],
) -> (Router<Client>, BTreeMap<Key, (u8, u32)>) {
    let mut router = Router::new();
    let mut model = BTreeMap::new();
    for (i, (filter, group, client, qos_bits)) in subs.iter().enumerate() {
        let group = group.map(|g| format!("g{g}"));
        let id = i as u32 + 1;
        let is_new = router.subscribe(
            filter,
            group.as_deref(),
            Client(*client),
            entry(*qos_bits, id),
        );
        let was = model.insert((filter.clone(), group, *client), (*qos_bits, id));
        assert_eq!(is_new, was.is_none());
    }
    assert_eq!(router.len(), model.len());
    (router, model)
}

fn check_route(router: &Router<Client>, model: &BTreeMap<Key, (u8, u32)>, topic: &str) {
    // Ordinary subscriptions: one delivery per subscriber, max QoS, every identifier.
    let mut expected: BTreeMap<u8, (QoS, BTreeSet<u32>)> = BTreeMap::new();
    // Shared: one delivery per matching (group, filter), to one of its members.
    let mut groups: BTreeMap<(String, String), BTreeSet<u8>> = BTreeMap::new();
    for ((filter, group, client), (qos_bits, id)) in model {
        if !matches(filter, topic) {
            continue;
        }
        match group {
            None => {
                let (max, ids) = expected
                    .entry(*client)
                    .or_insert((QoS::AtMostOnce, BTreeSet::new()));
                *max = (*max).max(qos(*qos_bits));
                ids.insert(*id);
            }
            Some(g) => {
                groups
                    .entry((g.clone(), filter.clone()))
                    .or_default()
                    .insert(*client);
            }
        }
    }
    let mut expected_per_group: BTreeMap<String, usize> = BTreeMap::new();
    for (group, _) in groups.keys() {
        *expected_per_group.entry(group.clone()).or_default() += 1;
    }

    let mut out = Vec::new();
    router.route(topic, None, &mut out);
    let mut got = BTreeMap::new();
    let mut got_per_group: BTreeMap<String, usize> = BTreeMap::new();
    for d in &out {
        match &d.share_group {
            None => {
                let ids: BTreeSet<u32> = d.identifiers.iter().map(|i| i.get()).collect();
                assert_eq!(ids.len(), d.identifiers.len(), "duplicate identifiers");
                let prev = got.insert(d.subscriber.0, (d.qos, ids));
                assert!(
                    prev.is_none(),
                    "two copies for {:?} on {topic}",
                    d.subscriber
                );
            }
            Some(g) => {
                *got_per_group.entry(g.to_string()).or_default() += 1;
                let member_of_a_matching_group = groups
                    .iter()
                    .any(|((name, _), members)| **name == **g && members.contains(&d.subscriber.0));
                assert!(member_of_a_matching_group, "{d:?} on {topic}");
            }
        }
    }
    assert_eq!(got, expected, "topic {topic}");
    assert_eq!(got_per_group, expected_per_group, "topic {topic}");
}

proptest! {
    #[test]
    fn route_delivers_exactly_to_matching_subscribers(
        subs in prop::collection::vec(subscription(), 0..12),
        topics in prop::collection::vec(topic(), 1..8),
    ) {
        let (router, model) = subscribe_all(&subs);
        for topic in &topics {
            check_route(&router, &model, topic);
        }
    }

    #[test]
    fn route_stays_exact_after_unsubscribes(
        subs in prop::collection::vec(subscription(), 0..12),
        drop_mask in prop::collection::vec(any::<bool>(), 12),
        topics in prop::collection::vec(topic(), 1..8),
    ) {
        let (mut router, mut model) = subscribe_all(&subs);
        let keys: Vec<Key> = model.keys().cloned().collect();
        for (key, drop) in keys.iter().zip(&drop_mask) {
            if *drop {
                let (filter, group, client) = key;
                prop_assert!(router.unsubscribe(filter, group.as_deref(), &Client(*client)));
                prop_assert!(!router.unsubscribe(filter, group.as_deref(), &Client(*client)));
                model.remove(key);
            }
        }
        prop_assert_eq!(router.len(), model.len());
        for topic in &topics {
            check_route(&router, &model, topic);
        }
        for (filter, group, client) in model.keys() {
            prop_assert!(router.unsubscribe(filter, group.as_deref(), &Client(*client)));
        }
        prop_assert!(router.is_empty());
        for topic in &topics {
            let mut out = Vec::new();
            router.route(topic, None, &mut out);
            prop_assert!(out.is_empty());
        }
    }
}
