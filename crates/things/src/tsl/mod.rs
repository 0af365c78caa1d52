//! Thing models in Alibaba Cloud IoT's TSL JSON: [`ThingModel`] with properties, events and
//! services, each typed by a [`DataType`].
//!
//! [`ThingModel::from_json`] parses *and* validates the model, so a model that exists is a valid
//! one; every error names the JSON path of the offending field
//! (`properties[2].dataType.specs.max: must be >= min`). The built-in `post` event and the
//! `set` / `get` services are derived from the properties, never stored: on import they are
//! skipped, on export ([`ThingModel::to_json`]) they are generated, so import/export round-trips.

mod parse;

use std::collections::BTreeMap;

use serde_json::{json, Map, Value};

/// A TSL model was not valid. `path` is a JSON path such as `properties[2].dataType.specs.max`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{path}: {message}")]
pub struct ModelError {
    /// Where in the JSON document the problem is.
    pub path: String,
    /// What is wrong there.
    pub message: String,
}

/// Largest `array` size the TSL allows.
pub const MAX_ARRAY_SIZE: u32 = 512;
/// Largest `text` length the TSL allows (bytes).
pub const MAX_TEXT_LENGTH: u32 = 10240;

/// A validated thing model.
#[derive(Debug, Clone, PartialEq)]
pub struct ThingModel {
    /// The `schema` URL, kept for export.
    pub schema: Option<String>,
    /// `profile.productKey`, when the document names its product.
    pub product_key: Option<String>,
    /// Properties in document order.
    pub properties: Vec<Property>,
    /// User-defined events (the built-in `post` is derived, see [`ThingModel::post_event_output`]).
    pub events: Vec<Event>,
    /// User-defined services (`set` / `get` are derived).
    pub services: Vec<Service>,
}

/// Whether the platform may write a property.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AccessMode {
    /// Read-only: the device reports it.
    Read,
    /// Read-write: the platform may also set it.
    ReadWrite,
}

/// A property: a value the device reports and, if `rw`, the platform sets.
#[derive(Debug, Clone, PartialEq)]
pub struct Property {
    /// Unique among properties; the key in reports.
    pub identifier: String,
    /// Human name.
    pub name: String,
    /// `r` or `rw`.
    pub access_mode: AccessMode,
    /// TSL's `required` flag (standard-category properties).
    pub required: bool,
    /// Optional description, kept for export.
    pub desc: Option<String>,
    /// Type and constraints of the value.
    pub data_type: DataType,
}

/// Severity of an event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventType {
    /// Informational.
    Info,
    /// Needs attention.
    Alert,
    /// A fault.
    Error,
}

impl EventType {
    /// The TSL spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Info => "info",
            Self::Alert => "alert",
            Self::Error => "error",
        }
    }
}

/// An event the device raises with output arguments.
#[derive(Debug, Clone, PartialEq)]
pub struct Event {
    /// Unique among events; part of the topic `thing/event/{identifier}/post`.
    pub identifier: String,
    /// Human name.
    pub name: String,
    /// Severity.
    pub event_type: EventType,
    /// Optional description.
    pub desc: Option<String>,
    /// The arguments carried in `params.value`.
    pub output_data: Vec<Param>,
}

/// How the platform waits for a service's result.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CallType {
    /// The caller waits (RRPC, bounded timeout).
    Sync,
    /// The caller gets a call id; the reply arrives later.
    Async,
}

/// A service the platform calls on the device.
#[derive(Debug, Clone, PartialEq)]
pub struct Service {
    /// Unique among services; part of the topic `thing/service/{identifier}`.
    pub identifier: String,
    /// Human name.
    pub name: String,
    /// Sync or async.
    pub call_type: CallType,
    /// Optional description.
    pub desc: Option<String>,
    /// Arguments sent to the device.
    pub input_data: Vec<Param>,
    /// Arguments the device replies with.
    pub output_data: Vec<Param>,
}

/// A named, typed argument: a struct member, or an event's / service's input or output.
#[derive(Debug, Clone, PartialEq)]
pub struct Param {
    /// Unique within its list.
    pub identifier: String,
    /// Human name.
    pub name: String,
    /// Type and constraints.
    pub data_type: DataType,
}

/// Constraints of `int`, `float` and `double`.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct NumberSpecs {
    /// Smallest allowed value.
    pub min: Option<f64>,
    /// Largest allowed value.
    pub max: Option<f64>,
    /// Values must be `min + k * step` (or `k * step` without `min`).
    pub step: Option<f64>,
    /// Unit symbol, e.g. `°C`.
    pub unit: Option<String>,
    /// Unit name, e.g. `摄氏度`.
    pub unit_name: Option<String>,
}

/// A TSL data type with its specs.
#[derive(Debug, Clone, PartialEq)]
pub enum DataType {
    /// 32-bit signed integer.
    Int(NumberSpecs),
    /// Single precision.
    Float(NumberSpecs),
    /// Double precision.
    Double(NumberSpecs),
    /// UTF-8 string of at most `length` bytes.
    Text {
        /// Maximum length in bytes.
        length: Option<u32>,
    },
    /// UTC milliseconds, sent as a string of digits (a JSON integer is accepted too).
    Date,
    /// 0 / 1 with names for both.
    Bool {
        /// Name of 0.
        false_name: String,
        /// Name of 1.
        true_name: String,
    },
    /// One of the listed integer values.
    Enum(BTreeMap<i64, String>),
    /// An object with these members.
    Struct(Vec<Param>),
    /// A list of at most `size` items of one type.
    Array {
        /// Maximum number of items.
        size: u32,
        /// Type of every item.
        item: Box<DataType>,
    },
}

impl DataType {
    /// The TSL `type` name.
    pub fn type_name(&self) -> &'static str {
        match self {
            Self::Int(_) => "int",
            Self::Float(_) => "float",
            Self::Double(_) => "double",
            Self::Text { .. } => "text",
            Self::Date => "date",
            Self::Bool { .. } => "bool",
            Self::Enum(_) => "enum",
            Self::Struct(_) => "struct",
            Self::Array { .. } => "array",
        }
    }

    /// The TSL JSON of this type (`{"type":…,"specs":…}`), specs numbers written as strings as
    /// Alibaba's console does.
    pub fn to_json(&self) -> Value {
        let specs = match self {
            Self::Int(s) | Self::Float(s) | Self::Double(s) => {
                let mut m = Map::new();
                let num = |v: f64| {
                    if v.fract() == 0.0 && v.abs() < 1e15 {
                        format!("{}", v as i64)
                    } else {
                        format!("{v}")
                    }
                };
                for (k, v) in [("min", s.min), ("max", s.max), ("step", s.step)] {
                    if let Some(v) = v {
                        m.insert(k.into(), Value::String(num(v)));
                    }
                }
                if let Some(u) = &s.unit {
                    m.insert("unit".into(), Value::String(u.clone()));
                }
                if let Some(u) = &s.unit_name {
                    m.insert("unitName".into(), Value::String(u.clone()));
                }
                Value::Object(m)
            }
            Self::Text { length } => match length {
                Some(l) => json!({ "length": l.to_string() }),
                None => json!({}),
            },
            Self::Date => json!({}),
            Self::Bool {
                false_name,
                true_name,
            } => json!({ "0": false_name, "1": true_name }),
            Self::Enum(values) => Value::Object(
                values
                    .iter()
                    .map(|(k, v)| (k.to_string(), Value::String(v.clone())))
                    .collect(),
            ),
            Self::Struct(members) => Value::Array(members.iter().map(Param::to_json).collect()),
            Self::Array { size, item } => {
                json!({ "size": size.to_string(), "item": item.to_json() })
            }
        };
        json!({ "type": self.type_name(), "specs": specs })
    }
}

impl Param {
    /// The TSL JSON of this argument.
    pub fn to_json(&self) -> Value {
        json!({ "identifier": self.identifier, "name": self.name, "dataType": self.data_type.to_json() })
    }
}

impl ThingModel {
    /// Parses and validates a TSL JSON document.
    pub fn from_json(text: &str) -> Result<Self, ModelError> {
        let value: Value = serde_json::from_str(text).map_err(|e| ModelError {
            path: "$".into(),
            message: format!("not valid JSON: {e}"),
        })?;
        Self::from_value(&value)
    }

    /// Validates an already parsed TSL JSON value.
    pub fn from_value(value: &Value) -> Result<Self, ModelError> {
        parse::model(value)
    }

    /// The TSL JSON document, including the derived `post` event and `set` / `get` services.
    pub fn to_json(&self) -> Value {
        let mut doc = Map::new();
        if let Some(schema) = &self.schema {
            doc.insert("schema".into(), Value::String(schema.clone()));
        }
        if let Some(pk) = &self.product_key {
            doc.insert("profile".into(), json!({ "productKey": pk }));
        }
        let properties = self
            .properties
            .iter()
            .map(|p| {
                let mut m = json!({
                    "identifier": p.identifier,
                    "name": p.name,
                    "accessMode": match p.access_mode { AccessMode::Read => "r", AccessMode::ReadWrite => "rw" },
                    "required": p.required,
                    "dataType": p.data_type.to_json(),
                });
                if let Some(d) = &p.desc {
                    m["desc"] = Value::String(d.clone());
                }
                m
            })
            .collect();
        doc.insert("properties".into(), Value::Array(properties));
        let params = |ps: &[Param]| Value::Array(ps.iter().map(Param::to_json).collect());
        let mut events = vec![json!({
            "identifier": "post",
            "name": "post",
            "type": "info",
            "required": true,
            "method": "thing.event.property.post",
            "outputData": params(&self.post_event_output()),
        })];
        for e in &self.events {
            let mut m = json!({
                "identifier": e.identifier,
                "name": e.name,
                "type": e.event_type.as_str(),
                "required": false,
                "method": format!("thing.event.{}.post", e.identifier),
                "outputData": params(&e.output_data),
            });
            if let Some(d) = &e.desc {
                m["desc"] = Value::String(d.clone());
            }
            events.push(m);
        }
        doc.insert("events".into(), Value::Array(events));
        let rw: Vec<Param> = self
            .properties
            .iter()
            .filter(|p| p.access_mode == AccessMode::ReadWrite)
            .map(Property::as_param)
            .collect();
        let ids: Vec<Value> = self
            .properties
            .iter()
            .map(|p| Value::String(p.identifier.clone()))
            .collect();
        let mut services = vec![
            json!({
                "identifier": "set", "name": "set", "callType": "async", "required": true,
                "method": "thing.service.property.set", "inputData": params(&rw), "outputData": [],
            }),
            json!({
                "identifier": "get", "name": "get", "callType": "async", "required": true,
                "method": "thing.service.property.get", "inputData": ids,
                "outputData": params(&self.post_event_output()),
            }),
        ];
        for s in &self.services {
            let mut m = json!({
                "identifier": s.identifier,
                "name": s.name,
                "callType": match s.call_type { CallType::Sync => "sync", CallType::Async => "async" },
                "required": false,
                "method": format!("thing.service.{}", s.identifier),
                "inputData": params(&s.input_data),
                "outputData": params(&s.output_data),
            });
            if let Some(d) = &s.desc {
                m["desc"] = Value::String(d.clone());
            }
            services.push(m);
        }
        doc.insert("services".into(), Value::Array(services));
        Value::Object(doc)
    }

    /// The property with this identifier.
    pub fn property(&self, identifier: &str) -> Option<&Property> {
        self.properties.iter().find(|p| p.identifier == identifier)
    }

    /// The user-defined event with this identifier.
    pub fn event(&self, identifier: &str) -> Option<&Event> {
        self.events.iter().find(|e| e.identifier == identifier)
    }

    /// The user-defined service with this identifier.
    pub fn service(&self, identifier: &str) -> Option<&Service> {
        self.services.iter().find(|s| s.identifier == identifier)
    }

    /// Output of the built-in `post` event: every property.
    pub fn post_event_output(&self) -> Vec<Param> {
        self.properties.iter().map(Property::as_param).collect()
    }
}

impl Property {
    /// The property as an argument of the built-in `post` / `set` / `get`.
    pub fn as_param(&self) -> Param {
        Param {
            identifier: self.identifier.clone(),
            name: self.name.clone(),
            data_type: self.data_type.clone(),
        }
    }
}

#[cfg(test)]
mod tests;
