//! The pure core of a simulated device: values generated from a thing model that always pass
//! strict validation, a random walk for read-only measurements, property set/get, events and
//! service answers. Deterministic for a given seed; time is passed in. The MQTT side (the
//! `thingmq simulate` command) is not part of this crate.

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::{Map, Value};

use crate::tsl::{AccessMode, DataType, NumberSpecs, Param, ThingModel};
use crate::validate::{check_property_set, ValidationMode, Violation};

/// Range used for numbers whose specs give no bounds.
const DEFAULT_MIN: f64 = 0.0;
const DEFAULT_MAX: f64 = 100.0;

/// One simulated device's state.
#[derive(Debug)]
pub struct SimDevice {
    model: ThingModel,
    values: Map<String, Value>,
    rng: StdRng,
}

impl SimDevice {
    /// A device with a plausible initial value for every property.
    pub fn new(model: ThingModel, seed: u64, now_ms: i64) -> Self {
        let mut rng = StdRng::seed_from_u64(seed);
        let values = model
            .properties
            .iter()
            .map(|p| {
                (
                    p.identifier.clone(),
                    generate(&p.data_type, &mut rng, now_ms),
                )
            })
            .collect();
        Self { model, values, rng }
    }

    /// The current value of every property.
    pub fn values(&self) -> &Map<String, Value> {
        &self.values
    }

    /// Advances read-only numeric properties by a small random step (a measurement drifting)
    /// and returns the full report to post.
    pub fn tick(&mut self, now_ms: i64) -> Map<String, Value> {
        for p in &self.model.properties {
            if p.access_mode != AccessMode::Read {
                continue;
            }
            let next = match &p.data_type {
                DataType::Int(s) | DataType::Float(s) | DataType::Double(s) => {
                    let current = self.values.get(&p.identifier).and_then(Value::as_f64);
                    let v = walk(s, current, &mut self.rng);
                    Some(number(&p.data_type, v))
                }
                DataType::Date => Some(Value::String(now_ms.to_string())),
                _ => None,
            };
            if let Some(v) = next {
                self.values.insert(p.identifier.clone(), v);
            }
        }
        self.values.clone()
    }

    /// Applies a property set from the platform (checked strictly, rw properties only).
    pub fn set(&mut self, values: &Map<String, Value>) -> Result<(), Violation> {
        let checked = check_property_set(&self.model, ValidationMode::Strict, values)?;
        self.values.extend(checked.accepted);
        Ok(())
    }

    /// The values of these properties (all when `identifiers` is empty); unknown ones are
    /// left out.
    pub fn get(&self, identifiers: &[&str]) -> Map<String, Value> {
        self.values
            .iter()
            .filter(|(k, _)| identifiers.is_empty() || identifiers.contains(&k.as_str()))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect()
    }

    /// With probability `p`, one of the model's events with generated output.
    pub fn maybe_event(&mut self, p: f64, now_ms: i64) -> Option<(String, Map<String, Value>)> {
        if self.model.events.is_empty() || !self.rng.gen_bool(p.clamp(0.0, 1.0)) {
            return None;
        }
        let i = self.rng.gen_range(0..self.model.events.len());
        let e = &self.model.events[i];
        let output = params(&e.output_data, &mut self.rng, now_ms);
        Some((e.identifier.clone(), output))
    }

    /// The output of a service call (`None` for an unknown service).
    pub fn call(&mut self, service: &str, now_ms: i64) -> Option<Map<String, Value>> {
        let s = self.model.service(service)?;
        Some(params(&s.output_data, &mut self.rng, now_ms))
    }
}

fn params(list: &[Param], rng: &mut StdRng, now_ms: i64) -> Map<String, Value> {
    list.iter()
        .map(|p| (p.identifier.clone(), generate(&p.data_type, rng, now_ms)))
        .collect()
}

fn bounds(s: &NumberSpecs) -> (f64, f64) {
    let min = s
        .min
        .unwrap_or(DEFAULT_MIN.min(s.max.unwrap_or(DEFAULT_MAX) - DEFAULT_MAX));
    let max = s.max.unwrap_or(min + (DEFAULT_MAX - DEFAULT_MIN));
    (min, max)
}

/// Puts `v` on the step grid inside the bounds.
fn snap(s: &NumberSpecs, v: f64) -> f64 {
    let (min, max) = bounds(s);
    let v = v.clamp(min, max);
    match s.step {
        Some(step) => {
            let k = ((v - min) / step).round();
            let snapped = min + k * step;
            // Rounding to the step's decimals keeps 21.5 from printing as 21.500000000000004.
            let decimals = decimals(step).max(decimals(min));
            let factor = 10f64.powi(decimals);
            let snapped = (snapped * factor).round() / factor;
            if snapped > max {
                snapped - step
            } else {
                snapped
            }
        }
        None => v,
    }
}

fn decimals(x: f64) -> i32 {
    let mut d = 0;
    let mut x = x.abs();
    while d < 9 && (x - x.round()).abs() > 1e-9 {
        x *= 10.0;
        d += 1;
    }
    d
}

fn walk(s: &NumberSpecs, current: Option<f64>, rng: &mut StdRng) -> f64 {
    let (min, max) = bounds(s);
    let unit = s.step.unwrap_or((max - min) / 100.0).max(f64::MIN_POSITIVE);
    let start = current.unwrap_or((min + max) / 2.0);
    snap(s, start + f64::from(rng.gen_range(-2i32..=2)) * unit)
}

fn number(dt: &DataType, v: f64) -> Value {
    match dt {
        DataType::Int(_) => Value::from(v.round() as i64),
        _ => serde_json::Number::from_f64(v).map_or(Value::Null, Value::Number),
    }
}

fn generate(dt: &DataType, rng: &mut StdRng, now_ms: i64) -> Value {
    match dt {
        DataType::Int(s) | DataType::Float(s) | DataType::Double(s) => {
            let (min, max) = bounds(s);
            let v = if max > min {
                rng.gen_range(min..=max)
            } else {
                min
            };
            let v = snap(s, v);
            let v = if matches!(dt, DataType::Int(_)) {
                snap(s, v.round())
            } else {
                v
            };
            number(dt, v)
        }
        DataType::Text { length } => {
            let len = length.unwrap_or(16).min(8) as usize;
            let s: String = (0..len)
                .map(|_| char::from(b'a' + rng.gen_range(0..26u8)))
                .collect();
            Value::String(s)
        }
        DataType::Date => Value::String(now_ms.to_string()),
        DataType::Bool { .. } => Value::from(rng.gen_range(0..=1)),
        DataType::Enum(values) => {
            let keys: Vec<i64> = values.keys().copied().collect();
            Value::from(keys[rng.gen_range(0..keys.len())])
        }
        DataType::Struct(members) => Value::Object(params(members, rng, now_ms)),
        DataType::Array { size, item } => {
            let n = rng.gen_range(1..=(*size).min(4));
            Value::Array((0..n).map(|_| generate(item, rng, now_ms)).collect())
        }
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::validate::{check_event, check_properties, check_service};

    const NOW: i64 = 1_700_000_000_000;

    fn examples() -> Vec<ThingModel> {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/things");
        let mut models = Vec::new();
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if path.extension().is_some_and(|e| e == "json") {
                models
                    .push(ThingModel::from_json(&std::fs::read_to_string(&path).unwrap()).unwrap());
            }
        }
        assert_eq!(models.len(), 5);
        models
    }

    #[test]
    fn generated_reports_events_and_outputs_pass_strict_validation() {
        for (i, model) in examples().into_iter().enumerate() {
            let mut dev = SimDevice::new(model.clone(), i as u64, NOW);
            for t in 0..500 {
                let report = dev.tick(NOW + t * 1000);
                check_properties(&model, ValidationMode::Strict, &report)
                    .unwrap_or_else(|v| panic!("report {report:?}: {v}"));
                if let Some((id, out)) = dev.maybe_event(0.5, NOW + t) {
                    check_event(&model, ValidationMode::Strict, &id, &out)
                        .unwrap_or_else(|v| panic!("event {id} {out:?}: {v}"));
                }
                for s in &model.services {
                    let out = dev.call(&s.identifier, NOW).unwrap();
                    check_service(&model, ValidationMode::Strict, &s.identifier, &out, true)
                        .unwrap_or_else(|v| panic!("service {} {out:?}: {v}", s.identifier));
                }
            }
        }
    }

    #[test]
    fn measurements_drift_within_bounds() {
        let model = ThingModel::from_value(&json!({"properties": [
            {"identifier": "t", "accessMode": "r", "dataType": {"type": "float", "specs": {"min": "-20", "max": "60", "step": "0.1"}}}
        ]}))
        .unwrap();
        let mut dev = SimDevice::new(model, 7, NOW);
        let mut seen = std::collections::BTreeSet::new();
        for i in 0..200 {
            let v = dev.tick(NOW + i)["t"].as_f64().unwrap();
            assert!((-20.0..=60.0).contains(&v));
            seen.insert((v * 10.0).round() as i64);
        }
        assert!(seen.len() > 5, "the value moves: {seen:?}");
    }

    #[test]
    fn set_changes_rw_properties_and_get_reads_them() {
        let model = ThingModel::from_value(&json!({"properties": [
            {"identifier": "power", "accessMode": "rw", "dataType": {"type": "bool"}},
            {"identifier": "temp", "accessMode": "r", "dataType": {"type": "int", "specs": {"min": "0", "max": "50"}}}
        ]}))
        .unwrap();
        let mut dev = SimDevice::new(model, 1, NOW);
        let mut set = Map::new();
        set.insert("power".into(), json!(1));
        dev.set(&set).unwrap();
        assert_eq!(
            dev.get(&["power"]),
            *json!({"power": 1}).as_object().unwrap()
        );
        set.insert("power".into(), json!(0));
        dev.tick(NOW);
        assert_eq!(dev.get(&["power"])["power"], 1, "rw values do not drift");
        let mut bad = Map::new();
        bad.insert("temp".into(), json!(3));
        assert!(dev.set(&bad).is_err(), "temp is read-only");
        assert_eq!(dev.get(&[]).len(), 2);
        assert!(dev.call("nope", NOW).is_none());
    }

    #[test]
    fn same_seed_same_values() {
        let model = examples().remove(0);
        let mut a = SimDevice::new(model.clone(), 42, NOW);
        let mut b = SimDevice::new(model, 42, NOW);
        for i in 0..20 {
            assert_eq!(a.tick(NOW + i), b.tick(NOW + i));
        }
    }
}
