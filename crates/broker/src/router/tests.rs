use std::cell::Cell;
use std::hash::{Hash, Hasher};
use std::num::NonZeroU32;
use std::rc::Rc;

use thingmq_codec::{QoS, SubscriptionOptions};

use super::{Delivery, Router, Subscriber, SubscriptionEntry};

/// A test session handle: identity is the id; availability can be flipped through any clone.
#[derive(Debug, Clone)]
struct Client {
    id: u32,
    online: Rc<Cell<bool>>,
}

impl PartialEq for Client {
    fn eq(&self, other: &Self) -> bool {
        self.id == other.id
    }
}

impl Eq for Client {}

impl Hash for Client {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.id.hash(state);
    }
}

impl Subscriber for Client {
    fn is_available(&self) -> bool {
        self.online.get()
    }
}

fn client(id: u32) -> Client {
    Client {
        id,
        online: Rc::new(Cell::new(true)),
    }
}

fn entry(qos: QoS) -> SubscriptionEntry {
    SubscriptionEntry {
        options: SubscriptionOptions {
            qos,
            ..SubscriptionOptions::default()
        },
        identifier: None,
    }
}

fn with_id(qos: QoS, id: u32) -> SubscriptionEntry {
    SubscriptionEntry {
        identifier: NonZeroU32::new(id),
        ..entry(qos)
    }
}

fn q0() -> SubscriptionEntry {
    entry(QoS::AtMostOnce)
}

fn route(
    router: &Router<Client>,
    topic: &str,
    publisher: Option<&Client>,
) -> Vec<Delivery<Client>> {
    let mut out = Vec::new();
    router.route(topic, publisher, &mut out);
    out
}

/// Ids of the clients that got a copy, sorted.
fn receivers(router: &Router<Client>, topic: &str) -> Vec<u32> {
    let mut ids: Vec<u32> = route(router, topic, None)
        .iter()
        .map(|d| d.subscriber.id)
        .collect();
    ids.sort_unstable();
    ids
}

fn router_with(filters: &[&str]) -> Router<Client> {
    let mut router = Router::new();
    for (i, filter) in filters.iter().enumerate() {
        router.subscribe(filter, None, client(i as u32), q0());
    }
    router
}

#[test]
fn exact_filter_matches_only_its_topic() {
    let router = router_with(&["sport/tennis"]);
    assert_eq!(receivers(&router, "sport/tennis"), [0]);
    assert!(receivers(&router, "sport/tennis/player1").is_empty());
    assert!(receivers(&router, "sport").is_empty());
    assert!(receivers(&router, "sport/tennis/").is_empty());
}

#[test]
fn single_level_wildcard_matches_exactly_one_level() {
    let router = router_with(&["sport/+", "+/+", "/+", "+"]);
    assert_eq!(receivers(&router, "sport/tennis"), [0, 1]);
    assert_eq!(receivers(&router, "sport/"), [0, 1]);
    assert_eq!(receivers(&router, "sport"), [3]);
    assert_eq!(receivers(&router, "/finance"), [1, 2]);
    assert!(receivers(&router, "sport/tennis/player1").is_empty());
}

#[test]
fn multi_level_wildcard_matches_parent_and_children() {
    let router = router_with(&["sport/#", "#", "sport/tennis/#"]);
    assert_eq!(receivers(&router, "sport"), [0, 1]);
    assert_eq!(receivers(&router, "sport/tennis"), [0, 1, 2]);
    assert_eq!(
        receivers(&router, "sport/tennis/player1/ranking"),
        [0, 1, 2]
    );
    assert_eq!(receivers(&router, "football"), [1]);
}

#[test]
fn dollar_topics_are_not_matched_by_leading_wildcard() {
    let router = router_with(&["#", "+/monitor/+", "$SYS/#", "$SYS/monitor/+", "a/#", "a/+"]);
    assert_eq!(receivers(&router, "$SYS/monitor/clients"), [2, 3]);
    assert_eq!(receivers(&router, "$SYS"), [2]);
    // Only the first level is special: a `$` deeper down is an ordinary character.
    assert_eq!(receivers(&router, "a/$b"), [0, 4, 5]);
    assert_eq!(receivers(&router, "x/monitor/y"), [0, 1]);
}

#[test]
fn overlapping_subscriptions_merge_to_one_copy_with_max_qos_and_all_identifiers() {
    let mut router = Router::new();
    let c = client(1);
    router.subscribe("a/b", None, c.clone(), with_id(QoS::AtMostOnce, 10));
    router.subscribe("a/+", None, c.clone(), with_id(QoS::ExactlyOnce, 11));
    router.subscribe("a/#", None, c.clone(), entry(QoS::AtLeastOnce));
    router.subscribe("a/#", None, client(2), with_id(QoS::AtLeastOnce, 12));

    let mut out = route(&router, "a/b", None);
    out.sort_by_key(|d| d.subscriber.id);
    assert_eq!(out.len(), 2);
    assert_eq!(out[0].subscriber, c);
    assert_eq!(out[0].qos, QoS::ExactlyOnce);
    let mut ids: Vec<u32> = out[0].identifiers.iter().map(|i| i.get()).collect();
    ids.sort_unstable();
    assert_eq!(ids, [10, 11]);
    assert_eq!(out[1].qos, QoS::AtLeastOnce);
    assert_eq!(out[1].identifiers, [NonZeroU32::new(12).unwrap()]);
    assert!(out.iter().all(|d| d.share_group.is_none()));
}

#[test]
fn merging_still_gives_one_copy_when_many_filters_match() {
    // More matching filters than the inline buffer holds, so the spill path is used.
    let filters = [
        "a/b/c", "a/b/+", "a/+/c", "+/b/c", "a/+/+", "+/+/c", "+/b/+", "+/+/+", "a/#", "a/b/#",
        "#", "+/#", "a/b/c/#", "+/b/#",
    ];
    let mut router = Router::new();
    for (i, filter) in filters.iter().enumerate() {
        router.subscribe(
            filter,
            None,
            client(1),
            with_id(QoS::AtMostOnce, i as u32 + 1),
        );
        router.subscribe(filter, None, client(i as u32 + 100), q0());
    }
    let out = route(&router, "a/b/c", None);
    let mine: Vec<_> = out.iter().filter(|d| d.subscriber.id == 1).collect();
    assert_eq!(mine.len(), 1);
    assert_eq!(mine[0].identifiers.len(), filters.len());
    assert_eq!(out.len(), filters.len() + 1);
}

#[test]
fn retain_as_published_is_set_when_any_matching_subscription_has_it() {
    let mut router = Router::new();
    let mut rap = q0();
    rap.options.retain_as_published = true;
    router.subscribe("a/+", None, client(1), q0());
    router.subscribe("a/b", None, client(1), rap);
    router.subscribe("a/c", None, client(1), q0());
    assert!(route(&router, "a/b", None)[0].retain_as_published);
    assert!(!route(&router, "a/c", None)[0].retain_as_published);
}

#[test]
fn no_local_skips_only_the_publishers_own_subscription() {
    let mut router = Router::new();
    let mut no_local = with_id(QoS::AtLeastOnce, 7);
    no_local.options.no_local = true;
    let (me, other) = (client(1), client(2));
    router.subscribe("chat/#", None, me.clone(), no_local);
    router.subscribe("chat/#", None, other.clone(), no_local);

    let out = route(&router, "chat/room", Some(&me));
    assert_eq!(out.len(), 1);
    assert_eq!(out[0].subscriber, other);
    assert_eq!(route(&router, "chat/room", None).len(), 2);
}

#[test]
fn no_local_subscription_does_not_hide_an_overlapping_ordinary_one() {
    let mut router = Router::new();
    let mut no_local = with_id(QoS::ExactlyOnce, 7);
    no_local.options.no_local = true;
    let me = client(1);
    router.subscribe("chat/#", None, me.clone(), no_local);
    router.subscribe("chat/room", None, me.clone(), with_id(QoS::AtMostOnce, 8));

    let out = route(&router, "chat/room", Some(&me));
    assert_eq!(out.len(), 1);
    // The skipped subscription contributes neither its QoS nor its identifier.
    assert_eq!(out[0].qos, QoS::AtMostOnce);
    assert_eq!(out[0].identifiers, [NonZeroU32::new(8).unwrap()]);
}

#[test]
fn shared_group_round_robin_alternates_between_members() {
    let mut router = Router::new();
    router.subscribe("jobs/+", Some("workers"), client(1), q0());
    router.subscribe("jobs/+", Some("workers"), client(2), q0());

    let picks: Vec<u32> = (0..4)
        .map(|_| {
            let out = route(&router, "jobs/x", None);
            assert_eq!(out.len(), 1);
            assert_eq!(out[0].share_group.as_deref(), Some("workers"));
            out[0].subscriber.id
        })
        .collect();
    assert_ne!(picks[0], picks[1]);
    assert_eq!(picks[0], picks[2]);
    assert_eq!(picks[1], picks[3]);
}

#[test]
fn unavailable_members_are_skipped() {
    let mut router = Router::new();
    let (a, b, c) = (client(1), client(2), client(3));
    for member in [&a, &b, &c] {
        router.subscribe("jobs", Some("g"), member.clone(), q0());
    }
    a.online.set(false);
    let picks: Vec<u32> = (0..6)
        .map(|_| route(&router, "jobs", None)[0].subscriber.id)
        .collect();
    assert!(!picks.contains(&1), "{picks:?}");
    // Skipping an offline member does not make its neighbour take its turns.
    assert_eq!(picks.iter().filter(|&&id| id == 2).count(), 3, "{picks:?}");
}

#[test]
fn offline_group_still_gets_the_message_through_some_member() {
    let mut router = Router::new();
    let (a, b) = (client(1), client(2));
    router.subscribe("jobs", Some("g"), a.clone(), q0());
    router.subscribe("jobs", Some("g"), b.clone(), q0());
    a.online.set(false);
    b.online.set(false);
    assert_eq!(route(&router, "jobs", None).len(), 1);
}

#[test]
fn each_matching_share_group_gets_one_copy() {
    let mut router = Router::new();
    router.subscribe("a/b", Some("g1"), client(1), q0());
    router.subscribe("a/b", Some("g1"), client(2), q0());
    router.subscribe("a/b", Some("g2"), client(3), q0());
    // Same group name, different filter: a different shared subscription.
    router.subscribe("a/#", Some("g1"), client(4), q0());

    let mut groups: Vec<String> = route(&router, "a/b", None)
        .iter()
        .map(|d| d.share_group.as_deref().unwrap().to_owned())
        .collect();
    groups.sort();
    assert_eq!(groups, ["g1", "g1", "g2"]);
}

#[test]
fn subscriber_in_a_share_group_and_an_ordinary_subscription_gets_both_copies() {
    let mut router = Router::new();
    let c = client(1);
    router.subscribe("a", Some("g"), c.clone(), entry(QoS::AtLeastOnce));
    router.subscribe("a", None, c.clone(), q0());
    let out = route(&router, "a", None);
    assert_eq!(out.len(), 2);
    assert!(out.iter().all(|d| d.subscriber == c));
    assert_eq!(out.iter().filter(|d| d.share_group.is_some()).count(), 1);
}

#[test]
fn shared_subscriptions_ignore_the_publisher() {
    let mut router = Router::new();
    let c = client(1);
    router.subscribe("a", Some("g"), c.clone(), q0());
    assert_eq!(route(&router, "a", Some(&c)).len(), 1);
}

#[test]
fn pick_shared_chooses_another_member() {
    let mut router = Router::new();
    let (a, b, c) = (client(1), client(2), client(3));
    for member in [&a, &b, &c] {
        router.subscribe("jobs/#", Some("g"), member.clone(), q0());
    }
    b.online.set(false);
    for _ in 0..4 {
        assert_eq!(router.pick_shared("jobs/#", "g", &a), Some(c.clone()));
    }
    c.online.set(false);
    // Nobody else is connected: an offline member keeps it for later.
    assert!(matches!(router.pick_shared("jobs/#", "g", &a), Some(m) if m != a));
}

#[test]
fn pick_shared_finds_nobody_when_the_member_is_alone_or_unknown() {
    let mut router = Router::new();
    let a = client(1);
    router.subscribe("jobs", Some("g"), a.clone(), q0());
    assert_eq!(router.pick_shared("jobs", "g", &a), None);
    assert_eq!(router.pick_shared("jobs", "other", &a), None);
    assert_eq!(router.pick_shared("nope", "g", &a), None);
}

#[test]
fn unsubscribe_removes_the_subscription_and_prunes_empty_nodes() {
    let mut router = Router::new();
    let filters = ["a/b/c", "a/+/c", "a/#", "#", "+", "x/y/z/#", "/"];
    for filter in filters {
        router.subscribe(filter, None, client(1), q0());
        router.subscribe(filter, Some("g"), client(2), q0());
    }
    assert_eq!(router.len(), filters.len() * 2);
    for filter in filters {
        assert!(router.unsubscribe(filter, None, &client(1)));
        assert!(router.unsubscribe(filter, Some("g"), &client(2)));
    }
    assert!(router.is_empty());
    assert!(route(&router, "a/b/c", None).is_empty());
    assert_eq!(router.root.node_count(), 1);
    assert!(router.root.find("#").is_none());
}

#[test]
fn unsubscribe_keeps_nodes_other_subscriptions_still_use() {
    let mut router = router_with(&["a/b", "a/b/c"]);
    assert!(router.unsubscribe("a/b", None, &client(0)));
    assert_eq!(receivers(&router, "a/b/c"), [1]);
    assert!(receivers(&router, "a/b").is_empty());
    assert_eq!(router.root.node_count(), 4);
}

#[test]
fn unsubscribing_something_never_subscribed_returns_false() {
    let mut router = router_with(&["a/b"]);
    assert!(!router.unsubscribe("a/b", None, &client(9)));
    assert!(!router.unsubscribe("a/c", None, &client(0)));
    assert!(!router.unsubscribe("a/b", Some("g"), &client(0)));
    assert!(!router.unsubscribe("a/#", None, &client(0)));
    assert_eq!(router.len(), 1);
    assert_eq!(router.root.node_count(), 3);
}

#[test]
fn replacing_a_subscription_changes_its_options_and_returns_false() {
    let mut router = Router::new();
    assert!(router.subscribe("a", None, client(1), with_id(QoS::AtMostOnce, 1)));
    assert!(!router.subscribe("a", None, client(1), with_id(QoS::ExactlyOnce, 2)));
    assert!(router.subscribe("a", Some("g"), client(1), q0()));
    assert!(!router.subscribe("a", Some("g"), client(1), entry(QoS::AtLeastOnce)));
    assert_eq!(router.len(), 2);

    let out = route(&router, "a", None);
    let direct = out.iter().find(|d| d.share_group.is_none()).unwrap();
    assert_eq!(direct.qos, QoS::ExactlyOnce);
    assert_eq!(direct.identifiers, [NonZeroU32::new(2).unwrap()]);
    let shared = out.iter().find(|d| d.share_group.is_some()).unwrap();
    assert_eq!(shared.qos, QoS::AtLeastOnce);
}

#[test]
fn route_appends_without_clearing_the_output() {
    let router = router_with(&["a"]);
    let mut out = Vec::new();
    router.route("a", None, &mut out);
    router.route("a", None, &mut out);
    assert_eq!(out.len(), 2);
}

#[test]
fn every_subscription_is_listed_with_its_filter_spelled_back() {
    let filters = [
        "a", "a/b", "a/+", "a/#", "#", "+", "/a", "/", "//", "+/+/#", "$SYS/#", "a//b",
    ];
    let mut router = router_with(&filters);
    router.subscribe("a/+", Some("g"), client(100), entry(QoS::AtLeastOnce));
    router.subscribe("a/+", Some("g"), client(101), q0());
    let mut seen = Vec::new();
    router.for_each_subscription(|filter, group, s, e| {
        seen.push((
            filter.to_owned(),
            group.map(|g| g.to_string()),
            s.id,
            e.options.qos,
        ));
    });
    seen.sort();
    let mut expected: Vec<_> = filters
        .iter()
        .enumerate()
        .map(|(i, f)| (f.to_string(), None, i as u32, QoS::AtMostOnce))
        .collect();
    expected.push(("a/+".into(), Some("g".into()), 100, QoS::AtLeastOnce));
    expected.push(("a/+".into(), Some("g".into()), 101, QoS::AtMostOnce));
    expected.sort();
    assert_eq!(seen, expected);
    assert_eq!(seen.len(), router.len());
}
