//! Checking device data against a [`ThingModel`] in the product's [`ValidationMode`].
//!
//! - **strict**: every rule (type and specs) is checked; the first violation rejects the whole
//!   message with Alink code 460 and a reason naming the identifier and the rule.
//! - **weak**: only identifiers and data types are checked; what passes is accepted, what fails
//!   is reported back as `checkFailedData` ([`Checked::check_failed_data`]).
//! - **none**: nothing is checked; everything is accepted as sent.

use std::fmt;

use serde_json::{json, Map, Value};

use crate::tsl::{AccessMode, DataType, NumberSpecs, Param, ThingModel};

/// Per-product data verification mode.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ValidationMode {
    /// Type and specs checked; invalid messages rejected.
    #[default]
    Strict,
    /// Identifier and type checked; valid parts accepted, failures reported.
    Weak,
    /// No checks.
    None,
}

impl ValidationMode {
    /// The name used in storage and config.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Strict => "strict",
            Self::Weak => "weak",
            Self::None => "none",
        }
    }

    /// Parses [`Self::as_str`]'s output.
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "strict" => Some(Self::Strict),
            "weak" => Some(Self::Weak),
            "none" => Some(Self::None),
            _ => None,
        }
    }
}

/// The rule a value broke.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum Rule {
    /// The identifier is not in the model.
    UnknownIdentifier,
    /// The JSON value is not of the declared type.
    WrongType {
        /// The TSL type expected.
        expected: &'static str,
    },
    /// Below `specs.min`.
    BelowMin(f64),
    /// Above `specs.max`.
    AboveMax(f64),
    /// Not `min + k * step`.
    OffStep(f64),
    /// A text longer than `specs.length` bytes.
    TooLong(u32),
    /// An enum value that is not listed.
    NotInEnum,
    /// An array with more than `specs.size` items.
    TooManyItems(u32),
    /// A struct member or an input/output argument is missing.
    Missing,
    /// The platform tried to set a read-only property.
    ReadOnly,
}

impl fmt::Display for Rule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::UnknownIdentifier => write!(f, "identifier not defined in the thing model"),
            Self::WrongType { expected } => write!(f, "dataType must be {expected}"),
            Self::BelowMin(min) => write!(f, "must be >= min {min}"),
            Self::AboveMax(max) => write!(f, "must be <= max {max}"),
            Self::OffStep(step) => write!(f, "must be a multiple of step {step}"),
            Self::TooLong(len) => write!(f, "must be at most {len} bytes long"),
            Self::NotInEnum => write!(f, "not one of the enum values"),
            Self::TooManyItems(size) => write!(f, "must have at most {size} items"),
            Self::Missing => write!(f, "is required"),
            Self::ReadOnly => write!(f, "is read-only (accessMode r)"),
        }
    }
}

impl Rule {
    /// Whether weak mode checks this rule (identifier and data type), or only strict does.
    fn checked_in_weak(&self) -> bool {
        matches!(self, Self::UnknownIdentifier | Self::WrongType { .. })
    }
}

/// A value that broke a rule. `path` starts with the identifier and descends into structs and
/// arrays: `color.r`, `levels[3]`.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{path}: {rule}")]
pub struct Violation {
    /// Which value.
    pub path: String,
    /// Which rule.
    pub rule: Rule,
}

/// The outcome of a check that did not reject the whole message.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Checked {
    /// The values that passed, to be stored and forwarded.
    pub accepted: Map<String, Value>,
    /// What failed (weak mode only; strict rejects instead, none checks nothing).
    pub failed: Vec<Violation>,
}

impl Checked {
    /// The `checkFailedData` object of a weak-mode reply: for each failed top-level identifier,
    /// the value sent and the reason.
    pub fn check_failed_data(&self, sent: &Map<String, Value>) -> Value {
        let mut out = Map::new();
        for v in &self.failed {
            let id = top_identifier(&v.path);
            out.entry(id.to_string()).or_insert_with(|| {
                json!({
                    "value": sent.get(id).cloned().unwrap_or(Value::Null),
                    "code": crate::alink::code::INVALID_PARAMS,
                    "message": v.to_string(),
                })
            });
        }
        Value::Object(out)
    }
}

fn top_identifier(path: &str) -> &str {
    path.split(['.', '[']).next().unwrap_or(path)
}

/// Checks a property report (`params` of `thing.event.property.post`, values already
/// unwrapped from the full form).
pub fn check_properties(
    model: &ThingModel,
    mode: ValidationMode,
    values: &Map<String, Value>,
) -> Result<Checked, Violation> {
    check_map(mode, values, |id| {
        model.property(id).map(|p| (&p.data_type, None))
    })
}

/// Checks a property set from the platform: like a report, and the properties must be `rw`.
pub fn check_property_set(
    model: &ThingModel,
    mode: ValidationMode,
    values: &Map<String, Value>,
) -> Result<Checked, Violation> {
    check_map(mode, values, |id| {
        model.property(id).map(|p| {
            let ro = (p.access_mode == AccessMode::Read).then_some(Rule::ReadOnly);
            (&p.data_type, ro)
        })
    })
}

/// Checks an event's `params.value` against its `outputData`. An unknown event is rejected in
/// strict and weak mode (the identifier check applies to the event itself).
pub fn check_event(
    model: &ThingModel,
    mode: ValidationMode,
    event_id: &str,
    output: &Map<String, Value>,
) -> Result<Checked, Violation> {
    let params = match (mode, model.event(event_id)) {
        (ValidationMode::None, _) => &[][..],
        (_, Some(e)) => &e.output_data[..],
        (_, None) => {
            return Err(Violation {
                path: event_id.to_string(),
                rule: Rule::UnknownIdentifier,
            })
        }
    };
    check_params(mode, params, output)
}

/// Checks a service call's arguments against its `inputData` (or a reply's against its
/// `outputData` with `output = true`).
pub fn check_service(
    model: &ThingModel,
    mode: ValidationMode,
    service_id: &str,
    args: &Map<String, Value>,
    output: bool,
) -> Result<Checked, Violation> {
    let params = match (mode, model.service(service_id)) {
        (ValidationMode::None, _) => &[][..],
        (_, Some(s)) if output => &s.output_data[..],
        (_, Some(s)) => &s.input_data[..],
        (_, None) => {
            return Err(Violation {
                path: service_id.to_string(),
                rule: Rule::UnknownIdentifier,
            })
        }
    };
    check_params(mode, params, args)
}

/// Arguments: like properties, and in strict mode every declared argument must be present.
fn check_params(
    mode: ValidationMode,
    params: &[Param],
    args: &Map<String, Value>,
) -> Result<Checked, Violation> {
    if mode == ValidationMode::Strict {
        if let Some(p) = params.iter().find(|p| !args.contains_key(&p.identifier)) {
            return Err(Violation {
                path: p.identifier.clone(),
                rule: Rule::Missing,
            });
        }
    }
    check_map(mode, args, |id| {
        params
            .iter()
            .find(|p| p.identifier == id)
            .map(|p| (&p.data_type, None))
    })
}

fn check_map<'m>(
    mode: ValidationMode,
    values: &Map<String, Value>,
    lookup: impl Fn(&str) -> Option<(&'m DataType, Option<Rule>)>,
) -> Result<Checked, Violation> {
    let mut checked = Checked::default();
    for (id, value) in values {
        if mode == ValidationMode::None {
            checked.accepted.insert(id.clone(), value.clone());
            continue;
        }
        let mut found = Vec::new();
        match lookup(id) {
            None => found.push(Violation {
                path: id.clone(),
                rule: Rule::UnknownIdentifier,
            }),
            Some((dt, extra)) => {
                if let Some(rule) = extra {
                    found.push(Violation {
                        path: id.clone(),
                        rule,
                    });
                }
                check_value(dt, value, id, &mut found);
            }
        }
        if mode == ValidationMode::Weak {
            found.retain(|v| v.rule.checked_in_weak() || v.rule == Rule::ReadOnly);
        }
        match (mode, found.into_iter().next()) {
            (_, None) => {
                checked.accepted.insert(id.clone(), value.clone());
            }
            (ValidationMode::Strict, Some(v)) => return Err(v),
            (_, Some(v)) => checked.failed.push(v),
        }
    }
    Ok(checked)
}

/// Pushes every rule `value` breaks (type and specs); the caller drops the spec rules in weak
/// mode.
pub fn check_value(dt: &DataType, value: &Value, path: &str, out: &mut Vec<Violation>) {
    let mut push = |rule| {
        out.push(Violation {
            path: path.to_string(),
            rule,
        })
    };
    let wrong = |expected| Rule::WrongType { expected };
    match dt {
        DataType::Int(specs) => match value.as_i64().and_then(|v| i32::try_from(v).ok()) {
            Some(v) => number_specs(specs, f64::from(v), &mut push),
            None => push(wrong("int (32-bit integer)")),
        },
        DataType::Float(specs) | DataType::Double(specs) => match value.as_f64() {
            Some(v) => number_specs(specs, v, &mut push),
            None => push(wrong(if matches!(dt, DataType::Float(_)) {
                "float"
            } else {
                "double"
            })),
        },
        DataType::Text { length } => match value.as_str() {
            Some(s) => {
                if let Some(max) = length {
                    if s.len() > *max as usize {
                        push(Rule::TooLong(*max));
                    }
                }
            }
            None => push(wrong("text")),
        },
        DataType::Date => {
            let ok = match value {
                Value::String(s) => !s.is_empty() && s.parse::<u64>().is_ok(),
                Value::Number(n) => n.as_u64().is_some(),
                _ => false,
            };
            if !ok {
                push(wrong("date (UTC milliseconds as a string of digits)"));
            }
        }
        DataType::Bool { .. } => {
            if !matches!(value.as_i64(), Some(0 | 1)) && !value.is_boolean() {
                push(wrong("bool (0 or 1)"));
            }
        }
        DataType::Enum(values) => match value.as_i64() {
            Some(v) if values.contains_key(&v) => {}
            Some(_) => push(Rule::NotInEnum),
            None => push(wrong("enum (integer)")),
        },
        DataType::Struct(members) => match value.as_object() {
            Some(obj) => {
                for (k, v) in obj {
                    let p = format!("{path}.{k}");
                    match members.iter().find(|m| &m.identifier == k) {
                        Some(m) => check_value(&m.data_type, v, &p, out),
                        None => out.push(Violation {
                            path: p,
                            rule: Rule::UnknownIdentifier,
                        }),
                    }
                }
                for m in members.iter().filter(|m| !obj.contains_key(&m.identifier)) {
                    out.push(Violation {
                        path: format!("{path}.{}", m.identifier),
                        rule: Rule::Missing,
                    });
                }
            }
            None => push(wrong("struct (object)")),
        },
        DataType::Array { size, item } => match value.as_array() {
            Some(items) => {
                if items.len() > *size as usize {
                    push(Rule::TooManyItems(*size));
                }
                for (i, v) in items.iter().enumerate() {
                    check_value(item, v, &format!("{path}[{i}]"), out);
                }
            }
            None => push(wrong("array")),
        },
    }
}

fn number_specs(specs: &NumberSpecs, v: f64, push: &mut impl FnMut(Rule)) {
    if let Some(min) = specs.min {
        if v < min {
            push(Rule::BelowMin(min));
        }
    }
    if let Some(max) = specs.max {
        if v > max {
            push(Rule::AboveMax(max));
        }
    }
    if let Some(step) = specs.step {
        // Decimal steps are not exact in binary (0.1), so "a multiple" allows rounding error.
        let k = (v - specs.min.unwrap_or(0.0)) / step;
        if (k - k.round()).abs() > 1e-6 * k.abs().max(1.0) {
            push(Rule::OffStep(step));
        }
    }
}

#[cfg(test)]
mod tests;
