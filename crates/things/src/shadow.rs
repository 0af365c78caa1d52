//! The device shadow: what the device last reported, what the platform wants (desired), and the
//! difference (delta) to deliver when the device comes back. Pure: times are passed in.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// A reported value and when the device measured it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Reported {
    /// The value.
    pub value: Value,
    /// UTC ms.
    pub time: i64,
}

/// A desired value with its version, so concurrent writers can detect that they raced.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Desired {
    /// The value the platform wants.
    pub value: Value,
    /// Bumped on every change of this property's desired value; starts at 1.
    pub version: u64,
    /// When it was set, UTC ms.
    pub time: i64,
}

/// A write carried an expected version that is not the current one.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("desired {identifier}: expected version {expected}, current is {current}")]
pub struct VersionConflict {
    /// The property.
    pub identifier: String,
    /// What the writer expected.
    pub expected: u64,
    /// What it is (0: no desired value).
    pub current: u64,
}

/// One device's shadow document.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Shadow {
    /// Latest reported value per property.
    pub reported: BTreeMap<String, Reported>,
    /// Desired value per property.
    pub desired: BTreeMap<String, Desired>,
    /// Bumped on every change of the document; used for optimistic concurrency in storage.
    pub version: u64,
}

impl Shadow {
    /// Records reported values. An older report never overwrites a newer one (history
    /// uploads and retried messages arrive out of order).
    pub fn apply_reported<'a>(
        &mut self,
        values: impl IntoIterator<Item = (&'a str, &'a Value, i64)>,
    ) {
        let mut changed = false;
        for (id, value, time) in values {
            match self.reported.get(id) {
                Some(r) if r.time > time => {}
                _ => {
                    self.reported.insert(
                        id.to_string(),
                        Reported {
                            value: value.clone(),
                            time,
                        },
                    );
                    changed = true;
                }
            }
        }
        if changed {
            self.version += 1;
        }
    }

    /// Sets a desired value. With `expected_version` the write only happens if the
    /// property's desired version is still that (0 = none yet). Returns the new version.
    pub fn set_desired(
        &mut self,
        identifier: &str,
        value: Value,
        expected_version: Option<u64>,
        now_ms: i64,
    ) -> Result<u64, VersionConflict> {
        let current = self.desired.get(identifier).map_or(0, |d| d.version);
        if let Some(expected) = expected_version {
            if expected != current {
                return Err(VersionConflict {
                    identifier: identifier.to_string(),
                    expected,
                    current,
                });
            }
        }
        let version = current + 1;
        self.desired.insert(
            identifier.to_string(),
            Desired {
                value,
                version,
                time: now_ms,
            },
        );
        self.version += 1;
        Ok(version)
    }

    /// Removes desired values (the device's `thing/property/desired/delete`). An entry with
    /// a version is only removed when it matches, so a device does not delete a newer
    /// desired value it has not seen.
    pub fn delete_desired(&mut self, items: &[(String, Option<u64>)]) {
        let before = self.desired.len();
        for (id, version) in items {
            if let Some(d) = self.desired.get(id) {
                if version.is_none_or(|v| v == d.version) {
                    self.desired.remove(id);
                }
            }
        }
        if self.desired.len() != before {
            self.version += 1;
        }
    }

    /// Desired values that differ from what was reported: what to send the device when it
    /// reconnects.
    pub fn delta(&self) -> Map<String, Value> {
        self.desired
            .iter()
            .filter(|(id, d)| self.reported.get(*id).is_none_or(|r| r.value != d.value))
            .map(|(id, d)| (id.clone(), d.value.clone()))
            .collect()
    }

    /// Reported values in the short property form, for a `get` reply.
    pub fn reported_values(&self) -> Map<String, Value> {
        self.reported
            .iter()
            .map(|(k, r)| (k.clone(), r.value.clone()))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn reports_keep_the_newest_value_per_property() {
        let mut s = Shadow::default();
        s.apply_reported([("temp", &json!(20.0), 100), ("hum", &json!(40), 100)]);
        s.apply_reported([("temp", &json!(21.0), 200)]);
        s.apply_reported([("temp", &json!(19.0), 150)]);
        assert_eq!(
            s.reported["temp"],
            Reported {
                value: json!(21.0),
                time: 200
            }
        );
        assert_eq!(s.reported["hum"].value, json!(40));
        assert_eq!(s.version, 2, "the stale report changed nothing");
    }

    #[test]
    fn desired_values_are_versioned_per_property() {
        let mut s = Shadow::default();
        assert_eq!(s.set_desired("power", json!(1), Some(0), 10), Ok(1));
        assert_eq!(s.set_desired("power", json!(0), None, 11), Ok(2));
        assert_eq!(
            s.set_desired("power", json!(1), Some(1), 12),
            Err(VersionConflict {
                identifier: "power".into(),
                expected: 1,
                current: 2
            })
        );
        assert_eq!(s.desired["power"].value, json!(0));
        assert_eq!(s.set_desired("power", json!(1), Some(2), 13), Ok(3));
    }

    #[test]
    fn delta_is_desired_minus_reported() {
        let mut s = Shadow::default();
        s.apply_reported([("power", &json!(0), 1), ("level", &json!(50), 1)]);
        s.set_desired("power", json!(1), None, 2).unwrap();
        s.set_desired("level", json!(50), None, 2).unwrap();
        s.set_desired("mode", json!(2), None, 2).unwrap();
        assert_eq!(Value::Object(s.delta()), json!({"power": 1, "mode": 2}));
        // the device applied it and reported back
        s.apply_reported([("power", &json!(1), 3)]);
        assert_eq!(Value::Object(s.delta()), json!({"mode": 2}));
    }

    #[test]
    fn delete_desired_respects_versions() {
        let mut s = Shadow::default();
        s.set_desired("a", json!(1), None, 1).unwrap();
        s.set_desired("a", json!(2), None, 1).unwrap();
        s.set_desired("b", json!(1), None, 1).unwrap();
        s.delete_desired(&[("a".into(), Some(1)), ("b".into(), None)]);
        assert!(s.desired.contains_key("a"), "version 1 is stale, a is at 2");
        assert!(!s.desired.contains_key("b"));
        s.delete_desired(&[("a".into(), Some(2))]);
        assert!(s.desired.is_empty());
    }

    #[test]
    fn shadow_round_trips_through_json() {
        let mut s = Shadow::default();
        s.apply_reported([("t", &json!({"r": 1}), 5)]);
        s.set_desired("t", json!({"r": 2}), None, 6).unwrap();
        let text = serde_json::to_string(&s).unwrap();
        assert_eq!(serde_json::from_str::<Shadow>(&text).unwrap(), s);
    }
}
