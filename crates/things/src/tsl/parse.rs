//! TSL JSON → [`ThingModel`], checking the model as it goes so every error carries its path.

use std::collections::{BTreeMap, HashSet};

use serde_json::{Map, Value};

use super::{
    AccessMode, CallType, DataType, Event, EventType, ModelError, NumberSpecs, Param, Property,
    Service, ThingModel, MAX_ARRAY_SIZE, MAX_TEXT_LENGTH,
};

type Result<T> = std::result::Result<T, ModelError>;

fn err<T>(path: &str, message: impl Into<String>) -> Result<T> {
    Err(ModelError {
        path: path.to_string(),
        message: message.into(),
    })
}

fn join(path: &str, key: &str) -> String {
    if path.is_empty() {
        key.to_string()
    } else {
        format!("{path}.{key}")
    }
}

fn object<'a>(v: &'a Value, path: &str) -> Result<&'a Map<String, Value>> {
    v.as_object()
        .map_or_else(|| err(path, "must be an object"), Ok)
}

fn array<'a>(obj: &'a Map<String, Value>, key: &str, path: &str) -> Result<&'a [Value]> {
    match obj.get(key) {
        None | Some(Value::Null) => Ok(&[]),
        Some(Value::Array(a)) => Ok(a),
        Some(_) => err(&join(path, key), "must be an array"),
    }
}

fn string(obj: &Map<String, Value>, key: &str, path: &str) -> Result<String> {
    match obj.get(key) {
        Some(Value::String(s)) => Ok(s.clone()),
        None | Some(Value::Null) => err(&join(path, key), "is required"),
        Some(_) => err(&join(path, key), "must be a string"),
    }
}

fn opt_string(obj: &Map<String, Value>, key: &str, path: &str) -> Result<Option<String>> {
    match obj.get(key) {
        Some(Value::String(s)) => Ok(Some(s.clone())),
        None | Some(Value::Null) => Ok(None),
        Some(_) => err(&join(path, key), "must be a string"),
    }
}

/// TSL writes numbers in specs as strings (`"min":"0"`); plain JSON numbers are accepted too.
fn opt_number(obj: &Map<String, Value>, key: &str, path: &str) -> Result<Option<f64>> {
    let p = join(path, key);
    match obj.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Number(n)) => Ok(n.as_f64()),
        Some(Value::String(s)) if s.trim().is_empty() => Ok(None),
        Some(Value::String(s)) => match s.trim().parse::<f64>() {
            Ok(v) if v.is_finite() => Ok(Some(v)),
            _ => err(&p, format!("must be a number, got {s:?}")),
        },
        Some(_) => err(&p, "must be a number"),
    }
}

fn opt_u32(obj: &Map<String, Value>, key: &str, path: &str) -> Result<Option<u32>> {
    match opt_number(obj, key, path)? {
        None => Ok(None),
        Some(v) if v.fract() == 0.0 && (0.0..=f64::from(u32::MAX)).contains(&v) => {
            Ok(Some(v as u32))
        }
        Some(_) => err(&join(path, key), "must be a non-negative integer"),
    }
}

/// Identifiers: 1–50 characters of letters, digits and `_`, not starting with a digit.
fn identifier(obj: &Map<String, Value>, path: &str) -> Result<String> {
    let id = string(obj, "identifier", path)?;
    let p = join(path, "identifier");
    if id.is_empty() || id.len() > 50 {
        return err(&p, "must be 1 to 50 characters");
    }
    if !id.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
        || id.starts_with(|c: char| c.is_ascii_digit())
    {
        return err(
            &p,
            format!("{id:?} must be letters, digits and _ and not start with a digit"),
        );
    }
    Ok(id)
}

fn unique(seen: &mut HashSet<String>, id: &str, path: &str) -> Result<()> {
    if seen.insert(id.to_string()) {
        Ok(())
    } else {
        err(
            &join(path, "identifier"),
            format!("duplicate identifier {id:?}"),
        )
    }
}

pub(super) fn model(v: &Value) -> Result<ThingModel> {
    let doc = object(v, "$")?;
    let schema = opt_string(doc, "schema", "")?;
    let product_key = match doc.get("profile") {
        None | Some(Value::Null) => None,
        Some(p) => opt_string(object(p, "profile")?, "productKey", "profile")?,
    };
    let mut properties = Vec::new();
    let mut seen = HashSet::new();
    for (i, p) in array(doc, "properties", "")?.iter().enumerate() {
        let path = format!("properties[{i}]");
        let prop = property(p, &path)?;
        unique(&mut seen, &prop.identifier, &path)?;
        properties.push(prop);
    }
    let mut events = Vec::new();
    let mut seen = HashSet::new();
    for (i, e) in array(doc, "events", "")?.iter().enumerate() {
        let path = format!("events[{i}]");
        // The built-in `post` event is derived from the properties, so it is not imported.
        if object(e, &path)?.get("identifier").and_then(Value::as_str) == Some("post") {
            continue;
        }
        let ev = event(e, &path)?;
        unique(&mut seen, &ev.identifier, &path)?;
        events.push(ev);
    }
    let mut services = Vec::new();
    let mut seen = HashSet::new();
    for (i, s) in array(doc, "services", "")?.iter().enumerate() {
        let path = format!("services[{i}]");
        if matches!(
            object(s, &path)?.get("identifier").and_then(Value::as_str),
            Some("set" | "get")
        ) {
            continue;
        }
        let sv = service(s, &path)?;
        unique(&mut seen, &sv.identifier, &path)?;
        services.push(sv);
    }
    Ok(ThingModel {
        schema,
        product_key,
        properties,
        events,
        services,
    })
}

fn property(v: &Value, path: &str) -> Result<Property> {
    let o = object(v, path)?;
    let identifier = identifier(o, path)?;
    let access_mode = match opt_string(o, "accessMode", path)?.as_deref() {
        Some("r") => AccessMode::Read,
        Some("rw") | None => AccessMode::ReadWrite,
        Some(other) => {
            return err(
                &join(path, "accessMode"),
                format!("must be \"r\" or \"rw\", got {other:?}"),
            )
        }
    };
    let required = match o.get("required") {
        None | Some(Value::Null) => false,
        Some(Value::Bool(b)) => *b,
        Some(_) => return err(&join(path, "required"), "must be a boolean"),
    };
    Ok(Property {
        name: opt_string(o, "name", path)?.unwrap_or_else(|| identifier.clone()),
        identifier,
        access_mode,
        required,
        desc: opt_string(o, "desc", path)?,
        data_type: data_type(o.get("dataType"), &join(path, "dataType"), 0)?,
    })
}

fn event(v: &Value, path: &str) -> Result<Event> {
    let o = object(v, path)?;
    let identifier = identifier(o, path)?;
    if identifier == "property" {
        return err(
            &join(path, "identifier"),
            "\"property\" is reserved by thing/event/property/post",
        );
    }
    let event_type = match string(o, "type", path)?.as_str() {
        "info" => EventType::Info,
        "alert" => EventType::Alert,
        "error" => EventType::Error,
        other => {
            return err(
                &join(path, "type"),
                format!("must be info, alert or error, got {other:?}"),
            )
        }
    };
    Ok(Event {
        name: opt_string(o, "name", path)?.unwrap_or_else(|| identifier.clone()),
        identifier,
        event_type,
        desc: opt_string(o, "desc", path)?,
        output_data: params(o, "outputData", path)?,
    })
}

fn service(v: &Value, path: &str) -> Result<Service> {
    let o = object(v, path)?;
    let identifier = identifier(o, path)?;
    if identifier == "property" {
        return err(
            &join(path, "identifier"),
            "\"property\" is reserved by thing/service/property/set",
        );
    }
    let call_type = match opt_string(o, "callType", path)?.as_deref() {
        Some("sync") => CallType::Sync,
        Some("async") | None => CallType::Async,
        Some(other) => {
            return err(
                &join(path, "callType"),
                format!("must be sync or async, got {other:?}"),
            )
        }
    };
    Ok(Service {
        name: opt_string(o, "name", path)?.unwrap_or_else(|| identifier.clone()),
        identifier,
        call_type,
        desc: opt_string(o, "desc", path)?,
        input_data: params(o, "inputData", path)?,
        output_data: params(o, "outputData", path)?,
    })
}

fn params(o: &Map<String, Value>, key: &str, path: &str) -> Result<Vec<Param>> {
    let list = join(path, key);
    param_list(array(o, key, path)?, &list, 0)
}

fn param_list(items: &[Value], path: &str, depth: u8) -> Result<Vec<Param>> {
    let mut out = Vec::new();
    let mut seen = HashSet::new();
    for (i, p) in items.iter().enumerate() {
        let path = format!("{path}[{i}]");
        let o = object(p, &path)?;
        let identifier = identifier(o, &path)?;
        unique(&mut seen, &identifier, &path)?;
        out.push(Param {
            name: opt_string(o, "name", &path)?.unwrap_or_else(|| identifier.clone()),
            identifier,
            data_type: data_type(o.get("dataType"), &join(&path, "dataType"), depth)?,
        });
    }
    Ok(out)
}

/// `depth` counts enclosing structs / arrays: TSL allows no struct in a struct and no array of
/// arrays, which keeps values shallow and validation simple.
fn data_type(v: Option<&Value>, path: &str, depth: u8) -> Result<DataType> {
    let Some(v) = v else {
        return err(path, "is required");
    };
    let o = object(v, path)?;
    let ty = string(o, "type", path)?;
    let specs_path = join(path, "specs");
    let empty = Value::Object(Map::new());
    let specs = match o.get("specs") {
        None | Some(Value::Null) => &empty,
        Some(s) => s,
    };
    match ty.as_str() {
        "int" | "float" | "double" => {
            let n = number_specs(object(specs, &specs_path)?, &specs_path, ty == "int")?;
            Ok(match ty.as_str() {
                "int" => DataType::Int(n),
                "float" => DataType::Float(n),
                _ => DataType::Double(n),
            })
        }
        "text" => {
            let s = object(specs, &specs_path)?;
            let length = opt_u32(s, "length", &specs_path)?;
            if let Some(l) = length {
                if l == 0 || l > MAX_TEXT_LENGTH {
                    return err(
                        &join(&specs_path, "length"),
                        format!("must be 1 to {MAX_TEXT_LENGTH}"),
                    );
                }
            }
            Ok(DataType::Text { length })
        }
        "date" => Ok(DataType::Date),
        "bool" => {
            let s = object(specs, &specs_path)?;
            for k in s.keys() {
                if k != "0" && k != "1" {
                    return err(
                        &join(&specs_path, k),
                        "bool specs may only name \"0\" and \"1\"",
                    );
                }
            }
            let name = |k: &str, default: &str| -> Result<String> {
                Ok(opt_string(s, k, &specs_path)?.unwrap_or_else(|| default.to_string()))
            };
            Ok(DataType::Bool {
                false_name: name("0", "false")?,
                true_name: name("1", "true")?,
            })
        }
        "enum" => {
            let s = object(specs, &specs_path)?;
            if s.is_empty() {
                return err(&specs_path, "an enum needs at least one value");
            }
            let mut values = BTreeMap::new();
            for (k, name) in s {
                let p = join(&specs_path, k);
                let key: i64 = k
                    .parse()
                    .map_err(|_| ModelError {
                        path: p.clone(),
                        message: "enum values must be integers".into(),
                    })
                    .and_then(|v: i64| {
                        i32::try_from(v).map(i64::from).map_err(|_| ModelError {
                            path: p.clone(),
                            message: "enum values must fit in int32".into(),
                        })
                    })?;
                let Value::String(name) = name else {
                    return err(&p, "must be a string");
                };
                values.insert(key, name.clone());
            }
            Ok(DataType::Enum(values))
        }
        "struct" => {
            if depth > 0 {
                return err(
                    path,
                    "a struct cannot be nested in a struct or array of structs",
                );
            }
            let Value::Array(members) = specs else {
                return err(&specs_path, "struct specs must be an array of members");
            };
            if members.is_empty() {
                return err(&specs_path, "a struct needs at least one member");
            }
            Ok(DataType::Struct(param_list(
                members,
                &specs_path,
                depth + 1,
            )?))
        }
        "array" => {
            if depth > 0 {
                return err(path, "an array cannot be nested in a struct or array");
            }
            let s = object(specs, &specs_path)?;
            let size = opt_u32(s, "size", &specs_path)?
                .map_or_else(|| err(&join(&specs_path, "size"), "is required"), Ok)?;
            if size == 0 || size > MAX_ARRAY_SIZE {
                return err(
                    &join(&specs_path, "size"),
                    format!("must be 1 to {MAX_ARRAY_SIZE}"),
                );
            }
            let item_path = join(&specs_path, "item");
            let item = data_type(s.get("item"), &item_path, depth)?;
            match item {
                DataType::Int(_)
                | DataType::Float(_)
                | DataType::Double(_)
                | DataType::Text { .. }
                | DataType::Struct(_) => {}
                ref other => {
                    return err(
                        &join(&item_path, "type"),
                        format!(
                            "array items must be int, float, double, text or struct, not {}",
                            other.type_name()
                        ),
                    )
                }
            }
            Ok(DataType::Array {
                size,
                item: Box::new(item),
            })
        }
        other => err(
            &join(path, "type"),
            format!(
                "unknown type {other:?} (int, float, double, text, date, bool, enum, struct, array)"
            ),
        ),
    }
}

fn number_specs(s: &Map<String, Value>, path: &str, integer: bool) -> Result<NumberSpecs> {
    let n = NumberSpecs {
        min: opt_number(s, "min", path)?,
        max: opt_number(s, "max", path)?,
        step: opt_number(s, "step", path)?,
        unit: opt_string(s, "unit", path)?,
        unit_name: opt_string(s, "unitName", path)?,
    };
    if integer {
        for (k, v) in [("min", n.min), ("max", n.max), ("step", n.step)] {
            if let Some(v) = v {
                if v.fract() != 0.0 || v < f64::from(i32::MIN) || v > f64::from(i32::MAX) {
                    return err(&join(path, k), "must be an int32 for an int property");
                }
            }
        }
    }
    if let (Some(min), Some(max)) = (n.min, n.max) {
        if max < min {
            return err(&join(path, "max"), "must be >= min");
        }
    }
    if let Some(step) = n.step {
        if step <= 0.0 {
            return err(&join(path, "step"), "must be > 0");
        }
        if let (Some(min), Some(max)) = (n.min, n.max) {
            if step > max - min && max > min {
                return err(&join(path, "step"), "must be <= max - min");
            }
        }
    }
    Ok(n)
}
