//! SUBSCRIBE and UNSUBSCRIBE: filter checks, granted QoS, and the router updates they ask for.

use super::{Output, Session, SubscriptionRecord};
use crate::router::SubscriptionEntry;
use crate::Violation;
use bytestring::ByteString;
use thingmq_codec::topic::{has_wildcards, parse_shared, validate_filter};
use thingmq_codec::{
    Packet, ReasonCode, SubAck, SubAckProperties, Subscribe, SubscriptionOptions, UnsubAck,
    UnsubAckProperties, Unsubscribe,
};

impl Session {
    pub(super) fn on_subscribe(
        &mut self,
        s: Subscribe,
        out: &mut Vec<Output>,
    ) -> Result<(), Violation> {
        let identifier = s.properties.subscription_identifier;
        if identifier.is_some() && !self.settings.subscription_identifiers {
            return Err(Violation::SubscriptionIdentifiersNotSupported);
        }
        // Check every filter first: a protocol error in any of them closes the connection
        // without changing the session.
        let checked = s
            .filters
            .into_iter()
            .map(
                |(filter, options)| match self.check_filter(&filter, options) {
                    Ok(split) => Ok((filter, options, Ok(split))),
                    Err(FilterError::Refused(code)) => Ok((filter, options, Err(code))),
                    Err(FilterError::Violation(v)) => Err(v),
                },
            )
            .collect::<Result<Vec<_>, _>>()?;
        let mut reasons = Vec::with_capacity(checked.len());
        let mut ops = Vec::with_capacity(checked.len());
        for (filter, options, result) in checked {
            match result {
                Ok((inner, group)) => {
                    let granted = options.qos.min(self.settings.max_qos);
                    let record = SubscriptionRecord {
                        filter: inner,
                        share_group: group,
                        entry: SubscriptionEntry {
                            options: SubscriptionOptions {
                                qos: granted,
                                ..options
                            },
                            identifier,
                        },
                    };
                    self.subscriptions.insert(filter, record.clone());
                    ops.push(Output::Subscribe(record));
                    reasons.push(ReasonCode::granted(granted));
                }
                Err(code) => {
                    if code == ReasonCode::NotAuthorized {
                        out.push(Output::Denied {
                            action: "subscribe",
                            topic: filter,
                        });
                    }
                    reasons.push(code);
                }
            }
        }
        out.push(Output::Send(Packet::SubAck(SubAck {
            packet_id: s.packet_id,
            properties: SubAckProperties::default(),
            reasons,
        })));
        let changed = !ops.is_empty();
        out.extend(ops);
        if changed {
            self.persist_state(out);
        }
        Ok(())
    }

    fn check_filter(
        &self,
        filter: &ByteString,
        options: SubscriptionOptions,
    ) -> Result<(ByteString, Option<ByteString>), FilterError> {
        let settings = &self.settings;
        let shared = parse_shared(filter)
            .map_err(|_| FilterError::Refused(ReasonCode::TopicFilterInvalid))?;
        let (inner, group) = match shared {
            Some((group, inner)) => {
                if !settings.shared_subscriptions {
                    return Err(FilterError::Refused(
                        ReasonCode::SharedSubscriptionsNotSupported,
                    ));
                }
                if options.no_local && self.protocol.is_v5() {
                    return Err(FilterError::Violation(Violation::Mqtt_3_8_3_4));
                }
                (ByteString::from(inner), Some(ByteString::from(group)))
            }
            None => {
                validate_filter(filter)
                    .map_err(|_| FilterError::Refused(ReasonCode::TopicFilterInvalid))?;
                (filter.clone(), None)
            }
        };
        if !self.policy.can_subscribe(&inner) {
            return Err(FilterError::Refused(ReasonCode::NotAuthorized));
        }
        if super::inbound::too_deep(&inner, settings.max_topic_levels) {
            return Err(FilterError::Refused(ReasonCode::TopicFilterInvalid));
        }
        if !settings.wildcard_subscriptions && has_wildcards(&inner) {
            return Err(FilterError::Refused(
                ReasonCode::WildcardSubscriptionsNotSupported,
            ));
        }
        Ok((inner, group))
    }

    pub(super) fn on_unsubscribe(&mut self, u: Unsubscribe, out: &mut Vec<Output>) {
        let mut reasons = Vec::with_capacity(u.filters.len());
        let mut ops = Vec::new();
        for filter in &u.filters {
            match self.subscriptions.remove(filter) {
                Some(record) => {
                    ops.push(Output::Unsubscribe(record));
                    reasons.push(ReasonCode::Success);
                }
                None => reasons.push(ReasonCode::NoSubscriptionExisted),
            }
        }
        if !self.protocol.is_v5() {
            reasons.clear();
        }
        out.push(Output::Send(Packet::UnsubAck(UnsubAck {
            packet_id: u.packet_id,
            properties: UnsubAckProperties::default(),
            reasons,
        })));
        let changed = !ops.is_empty();
        out.extend(ops);
        if changed {
            self.persist_state(out);
        }
    }
}

enum FilterError {
    /// The filter is refused with this code in SUBACK.
    Refused(ReasonCode),
    /// The whole connection is closed.
    Violation(Violation),
}
