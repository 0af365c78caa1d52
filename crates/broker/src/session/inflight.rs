//! The in-flight window: our QoS 1/2 deliveries awaiting the client, in the order they were
//! sent (the order a reconnect resends them in), with the packet ids they use.
//!
//! A packet id is allocated for every QoS 1/2 delivery, and finding a free one used to scan
//! the whole window: with a window of 65,535 that scan was more than half of the broker's CPU
//! in a fan-in benchmark (docs/benchmarks.md). Ids in use are kept in a bitmap instead, made
//! when the window stops being empty and dropped when it empties again, so an idle session
//! carries no bitmap. An acknowledgement looks its id up from the front: clients acknowledge
//! in order (MQTT-4.6.0-2 asks them to), so the entry is nearly always the first.

use super::InFlight;
use std::collections::VecDeque;
use std::num::NonZeroU16;
use thingmq_codec::PacketId;

/// 65,536 bits: one per packet id.
const WORDS: usize = 1024;

#[derive(Debug, Default)]
pub(super) struct Window {
    entries: VecDeque<InFlight>,
    used: Option<Box<[u64; WORDS]>>,
}

fn bit(id: PacketId) -> (usize, u64) {
    let n = usize::from(id.get());
    (n / 64, 1u64 << (n % 64))
}

impl Window {
    pub(super) fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether `id` is in use by a delivery in flight.
    pub(super) fn contains(&self, id: PacketId) -> bool {
        let (w, b) = bit(id);
        self.used.as_ref().is_some_and(|used| used[w] & b != 0)
    }

    /// A packet id not in use, the first free one from `*next` on (advancing `*next` past
    /// it). There is always one: the window is at most 65,535 (Receive Maximum is a u16 and
    /// at least 1 is free).
    pub(super) fn allocate(&self, next: &mut u16) -> PacketId {
        loop {
            let id = NonZeroU16::new(*next).unwrap_or(NonZeroU16::MIN);
            *next = next.checked_add(1).unwrap_or(1);
            if !self.contains(id) {
                return id;
            }
        }
    }

    pub(super) fn push_back(&mut self, f: InFlight) {
        let (w, b) = bit(f.packet_id);
        self.used.get_or_insert_with(|| Box::new([0; WORDS]))[w] |= b;
        self.entries.push_back(f);
    }

    /// Index of the entry for `id` that matches `pred`.
    pub(super) fn position(&self, id: PacketId, pred: impl Fn(&InFlight) -> bool) -> Option<usize> {
        if !self.contains(id) {
            return None;
        }
        self.entries
            .iter()
            .position(|f| f.packet_id == id && pred(f))
    }

    pub(super) fn get_mut(&mut self, i: usize) -> Option<&mut InFlight> {
        self.entries.get_mut(i)
    }

    pub(super) fn remove(&mut self, i: usize) -> Option<InFlight> {
        let f = self.entries.remove(i)?;
        self.release(f.packet_id);
        Some(f)
    }

    fn release(&mut self, id: PacketId) {
        if self.entries.is_empty() {
            self.used = None;
        } else if let Some(used) = self.used.as_mut() {
            let (w, b) = bit(id);
            used[w] &= !b;
        }
    }

    /// Takes every entry out (in order), freeing their ids.
    pub(super) fn take_all(&mut self) -> VecDeque<InFlight> {
        self.used = None;
        std::mem::take(&mut self.entries)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Message, Routed};
    use std::sync::Arc;
    use thingmq_codec::QoS;

    fn entry(id: u16) -> InFlight {
        InFlight {
            packet_id: NonZeroU16::new(id).unwrap(),
            routed: Routed {
                message: Arc::new(Message {
                    topic: "t".into(),
                    payload: Default::default(),
                    qos: QoS::AtLeastOnce,
                    retain: false,
                    properties: Default::default(),
                    expires_at: None,
                }),
                qos: QoS::AtLeastOnce,
                retain: false,
                subscription_ids: vec![],
                share: None,
                store_id: None,
            },
            awaiting: super::super::Awaiting::Ack,
        }
    }

    #[test]
    fn allocation_skips_ids_in_flight_and_wraps_past_65535_to_1() {
        let mut w = Window::default();
        w.push_back(entry(65535));
        w.push_back(entry(1));
        let mut next = 65535;
        assert_eq!(w.allocate(&mut next).get(), 2);
        assert_eq!(next, 3);
    }

    #[test]
    fn an_acknowledged_id_is_free_again_and_an_empty_window_drops_its_bitmap() {
        let mut w = Window::default();
        w.push_back(entry(7));
        w.push_back(entry(8));
        let i = w.position(NonZeroU16::new(7).unwrap(), |_| true).unwrap();
        w.remove(i);
        assert!(!w.contains(NonZeroU16::new(7).unwrap()));
        assert!(w.contains(NonZeroU16::new(8).unwrap()));
        w.remove(0);
        assert!(w.used.is_none(), "an idle session carries no bitmap");
        assert_eq!(w.position(NonZeroU16::new(8).unwrap(), |_| true), None);
    }

    #[test]
    fn a_full_window_of_65535_ids_still_finds_the_free_one() {
        let mut w = Window::default();
        for id in (1..=65535u16).filter(|&id| id != 4242) {
            w.push_back(entry(id));
        }
        let mut next = 1;
        assert_eq!(w.allocate(&mut next).get(), 4242);
    }
}
