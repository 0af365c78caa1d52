use serde_json::json;

use super::*;

fn model_with_property(data_type: serde_json::Value) -> Result<ThingModel, ModelError> {
    ThingModel::from_value(&json!({
        "properties": [
            {"identifier": "ok", "name": "ok", "accessMode": "r", "dataType": {"type": "bool", "specs": {"0": "off", "1": "on"}}},
            {"identifier": "x", "name": "x", "accessMode": "rw", "dataType": data_type},
        ]
    }))
}

fn error_of(data_type: serde_json::Value) -> String {
    model_with_property(data_type).unwrap_err().to_string()
}

const FULL: &str = r#"{
  "schema": "https://iotx-tsl.oss-ap-southeast-1.aliyuncs.com/schema.json",
  "profile": {"productKey": "a1Lamp"},
  "properties": [
    {"identifier": "power", "name": "Power", "accessMode": "rw", "required": false,
     "dataType": {"type": "bool", "specs": {"0": "off", "1": "on"}}},
    {"identifier": "brightness", "name": "Brightness", "accessMode": "rw",
     "dataType": {"type": "int", "specs": {"min": "0", "max": "100", "step": "1", "unit": "%", "unitName": "percent"}}},
    {"identifier": "temp", "name": "Temperature", "accessMode": "r",
     "dataType": {"type": "double", "specs": {"min": "-40", "max": "85.5", "step": "0.1"}}},
    {"identifier": "label", "name": "Label", "accessMode": "rw", "dataType": {"type": "text", "specs": {"length": "32"}}},
    {"identifier": "since", "name": "Since", "accessMode": "r", "dataType": {"type": "date", "specs": {}}},
    {"identifier": "mode", "name": "Mode", "accessMode": "rw", "dataType": {"type": "enum", "specs": {"0": "eco", "1": "comfort"}}},
    {"identifier": "color", "name": "Color", "accessMode": "rw", "dataType": {"type": "struct", "specs": [
      {"identifier": "r", "name": "R", "dataType": {"type": "int", "specs": {"min": "0", "max": "255"}}},
      {"identifier": "g", "name": "G", "dataType": {"type": "int", "specs": {"min": "0", "max": "255"}}}
    ]}},
    {"identifier": "levels", "name": "Levels", "accessMode": "r", "dataType": {"type": "array", "specs": {"size": "4", "item": {"type": "float"}}}}
  ],
  "events": [
    {"identifier": "post", "name": "post", "type": "info", "outputData": []},
    {"identifier": "overheat", "name": "Overheat", "type": "alert", "outputData": [
      {"identifier": "temp", "name": "t", "dataType": {"type": "double", "specs": {"min": "0", "max": "200"}}}]}
  ],
  "services": [
    {"identifier": "set", "name": "set", "callType": "async", "inputData": [], "outputData": []},
    {"identifier": "get", "name": "get", "callType": "async", "inputData": ["power"], "outputData": []},
    {"identifier": "blink", "name": "Blink", "callType": "sync",
     "inputData": [{"identifier": "times", "name": "n", "dataType": {"type": "int", "specs": {"min": "1", "max": "10"}}}],
     "outputData": [{"identifier": "done", "name": "d", "dataType": {"type": "bool", "specs": {"0": "no", "1": "yes"}}}]}
  ]
}"#;

#[test]
fn full_model_parses_with_builtins_skipped() {
    let m = ThingModel::from_json(FULL).unwrap();
    assert_eq!(m.product_key.as_deref(), Some("a1Lamp"));
    assert_eq!(m.properties.len(), 8);
    assert_eq!(m.events.len(), 1, "post is derived, not imported");
    assert_eq!(m.services.len(), 1, "set/get are derived, not imported");
    assert_eq!(m.services[0].call_type, CallType::Sync);
    assert_eq!(m.property("temp").unwrap().access_mode, AccessMode::Read);
    let DataType::Double(specs) = &m.property("temp").unwrap().data_type else {
        panic!("temp is a double")
    };
    assert_eq!(specs.max, Some(85.5));
    assert_eq!(specs.step, Some(0.1));
}

#[test]
fn export_then_import_gives_the_same_model() {
    let m = ThingModel::from_json(FULL).unwrap();
    let exported = m.to_json();
    let again = ThingModel::from_value(&exported).unwrap();
    assert_eq!(m, again);
    // and the text form too
    let again = ThingModel::from_json(&serde_json::to_string_pretty(&exported).unwrap()).unwrap();
    assert_eq!(m, again);
}

#[test]
fn export_generates_post_event_and_set_get_services() {
    let m = ThingModel::from_json(FULL).unwrap();
    let doc = m.to_json();
    let post = &doc["events"][0];
    assert_eq!(post["identifier"], "post");
    assert_eq!(post["method"], "thing.event.property.post");
    assert_eq!(post["outputData"].as_array().unwrap().len(), 8);
    let set = &doc["services"][0];
    assert_eq!(set["identifier"], "set");
    // only rw properties can be set: power, brightness, label, mode, color
    let ids: Vec<&str> = set["inputData"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["identifier"].as_str().unwrap())
        .collect();
    assert_eq!(ids, ["power", "brightness", "label", "mode", "color"]);
    assert_eq!(doc["services"][1]["identifier"], "get");
    assert_eq!(doc["services"][2]["method"], "thing.service.blink");
}

#[test]
fn max_below_min_is_reported_with_its_path() {
    assert_eq!(
        error_of(json!({"type": "int", "specs": {"min": "10", "max": "5"}})),
        "properties[1].dataType.specs.max: must be >= min"
    );
}

#[test]
fn bad_specs_are_reported_with_their_paths() {
    let cases = [
        (json!({"type": "int", "specs": {"min": "1.5"}}), "properties[1].dataType.specs.min: must be an int32 for an int property"),
        (json!({"type": "float", "specs": {"min": "abc"}}), "properties[1].dataType.specs.min: must be a number, got \"abc\""),
        (json!({"type": "double", "specs": {"step": "0"}}), "properties[1].dataType.specs.step: must be > 0"),
        (json!({"type": "double", "specs": {"min": "0", "max": "1", "step": "2"}}), "properties[1].dataType.specs.step: must be <= max - min"),
        (json!({"type": "text", "specs": {"length": "0"}}), "properties[1].dataType.specs.length: must be 1 to 10240"),
        (json!({"type": "text", "specs": {"length": "20000"}}), "properties[1].dataType.specs.length: must be 1 to 10240"),
        (json!({"type": "bool", "specs": {"2": "maybe"}}), "properties[1].dataType.specs.2: bool specs may only name \"0\" and \"1\""),
        (json!({"type": "enum", "specs": {}}), "properties[1].dataType.specs: an enum needs at least one value"),
        (json!({"type": "enum", "specs": {"a": "x"}}), "properties[1].dataType.specs.a: enum values must be integers"),
        (json!({"type": "struct", "specs": []}), "properties[1].dataType.specs: a struct needs at least one member"),
        (json!({"type": "struct", "specs": {}}), "properties[1].dataType.specs: struct specs must be an array of members"),
        (json!({"type": "struct", "specs": [{"identifier": "a", "dataType": {"type": "struct", "specs": [{"identifier": "b", "dataType": {"type": "int"}}]}}]}),
         "properties[1].dataType.specs[0].dataType: a struct cannot be nested in a struct or array of structs"),
        (json!({"type": "struct", "specs": [{"identifier": "a", "dataType": {"type": "int"}}, {"identifier": "a", "dataType": {"type": "int"}}]}),
         "properties[1].dataType.specs[1].identifier: duplicate identifier \"a\""),
        (json!({"type": "array", "specs": {"size": "513", "item": {"type": "int"}}}), "properties[1].dataType.specs.size: must be 1 to 512"),
        (json!({"type": "array", "specs": {"item": {"type": "int"}}}), "properties[1].dataType.specs.size: is required"),
        (json!({"type": "array", "specs": {"size": "3", "item": {"type": "bool"}}}), "properties[1].dataType.specs.item.type: array items must be int, float, double, text or struct, not bool"),
        (json!({"type": "array", "specs": {"size": "3", "item": {"type": "array", "specs": {"size": "2", "item": {"type": "int"}}}}}), "properties[1].dataType.specs.item.type: array items must be int, float, double, text or struct, not array"),
        (json!({"type": "struct", "specs": [{"identifier": "a", "dataType": {"type": "array", "specs": {"size": "2", "item": {"type": "int"}}}}]}),
         "properties[1].dataType.specs[0].dataType: an array cannot be nested in a struct or array"),
        (json!({"type": "number"}), "properties[1].dataType.type: unknown type \"number\" (int, float, double, text, date, bool, enum, struct, array)"),
        (json!({"specs": {}}), "properties[1].dataType.type: is required"),
    ];
    for (dt, expected) in cases {
        assert_eq!(error_of(dt.clone()), expected, "for {dt}");
    }
}

#[test]
fn bad_members_are_reported_with_their_paths() {
    let cases = [
        (json!({"properties": [{"identifier": "1x", "dataType": {"type": "int"}}]}),
         "properties[0].identifier: \"1x\" must be letters, digits and _ and not start with a digit"),
        (json!({"properties": [{"identifier": "a-b", "dataType": {"type": "int"}}]}),
         "properties[0].identifier: \"a-b\" must be letters, digits and _ and not start with a digit"),
        (json!({"properties": [{"identifier": "a", "dataType": {"type": "int"}}, {"identifier": "a", "dataType": {"type": "int"}}]}),
         "properties[1].identifier: duplicate identifier \"a\""),
        (json!({"properties": [{"identifier": "a", "accessMode": "w", "dataType": {"type": "int"}}]}),
         "properties[0].accessMode: must be \"r\" or \"rw\", got \"w\""),
        (json!({"properties": [{"identifier": "a"}]}), "properties[0].dataType: is required"),
        (json!({"properties": {}}), "properties: must be an array"),
        (json!({"events": [{"identifier": "e", "type": "warning"}]}), "events[0].type: must be info, alert or error, got \"warning\""),
        (json!({"events": [{"identifier": "property", "type": "info"}]}), "events[0].identifier: \"property\" is reserved by thing/event/property/post"),
        (json!({"events": [{"identifier": "e", "type": "info", "outputData": [{"identifier": "v", "dataType": {"type": "int", "specs": {"min": 3, "max": 1}}}]}]}),
         "events[0].outputData[0].dataType.specs.max: must be >= min"),
        (json!({"services": [{"identifier": "s", "callType": "later"}]}), "services[0].callType: must be sync or async, got \"later\""),
        (json!({"services": [{"identifier": "s", "inputData": [{"identifier": "", "dataType": {"type": "int"}}]}]}),
         "services[0].inputData[0].identifier: must be 1 to 50 characters"),
        (json!([]), "$: must be an object"),
    ];
    for (doc, expected) in cases {
        assert_eq!(
            ThingModel::from_value(&doc).unwrap_err().to_string(),
            expected,
            "for {doc}"
        );
    }
    assert!(ThingModel::from_json("{")
        .unwrap_err()
        .to_string()
        .starts_with("$: not valid JSON"));
}

#[test]
fn specs_accept_json_numbers_as_well_as_strings() {
    let m =
        model_with_property(json!({"type": "float", "specs": {"min": -1.5, "max": 2}})).unwrap();
    let DataType::Float(s) = &m.properties[1].data_type else {
        panic!()
    };
    assert_eq!((s.min, s.max), (Some(-1.5), Some(2.0)));
}
