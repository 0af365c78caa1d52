use serde_json::{json, Map, Value};

use super::*;

fn model() -> ThingModel {
    ThingModel::from_value(&json!({
        "properties": [
            {"identifier": "i", "accessMode": "rw", "dataType": {"type": "int", "specs": {"min": "0", "max": "100", "step": "5"}}},
            {"identifier": "f", "accessMode": "rw", "dataType": {"type": "float", "specs": {"min": "-1.5", "max": "1.5", "step": "0.5"}}},
            {"identifier": "d", "accessMode": "r", "dataType": {"type": "double", "specs": {"min": "-40", "max": "85.5", "step": "0.1"}}},
            {"identifier": "t", "accessMode": "rw", "dataType": {"type": "text", "specs": {"length": "4"}}},
            {"identifier": "dt", "accessMode": "rw", "dataType": {"type": "date"}},
            {"identifier": "b", "accessMode": "rw", "dataType": {"type": "bool", "specs": {"0": "off", "1": "on"}}},
            {"identifier": "e", "accessMode": "rw", "dataType": {"type": "enum", "specs": {"0": "eco", "2": "boost"}}},
            {"identifier": "s", "accessMode": "rw", "dataType": {"type": "struct", "specs": [
                {"identifier": "r", "dataType": {"type": "int", "specs": {"min": "0", "max": "255"}}},
                {"identifier": "name", "dataType": {"type": "text", "specs": {"length": "3"}}}
            ]}},
            {"identifier": "a", "accessMode": "rw", "dataType": {"type": "array", "specs": {"size": "2", "item": {"type": "int", "specs": {"min": "0", "max": "9"}}}}}
        ],
        "events": [
            {"identifier": "overheat", "type": "alert", "outputData": [
                {"identifier": "temp", "dataType": {"type": "double", "specs": {"min": "0", "max": "200"}}},
                {"identifier": "zone", "dataType": {"type": "text", "specs": {"length": "8"}}}
            ]}
        ],
        "services": [
            {"identifier": "blink", "callType": "sync",
             "inputData": [{"identifier": "times", "dataType": {"type": "int", "specs": {"min": "1", "max": "10"}}}],
             "outputData": [{"identifier": "done", "dataType": {"type": "bool"}}]}
        ]
    }))
    .unwrap()
}

fn one(id: &str, v: Value) -> Map<String, Value> {
    let mut m = Map::new();
    m.insert(id.into(), v);
    m
}

/// (identifier, value, rule broken, is it a type rule that weak mode checks too?)
fn violations() -> Vec<(&'static str, Value, Rule, bool)> {
    vec![
        (
            "i",
            json!("7"),
            Rule::WrongType {
                expected: "int (32-bit integer)",
            },
            true,
        ),
        (
            "i",
            json!(7.5),
            Rule::WrongType {
                expected: "int (32-bit integer)",
            },
            true,
        ),
        (
            "i",
            json!(3_000_000_000u64),
            Rule::WrongType {
                expected: "int (32-bit integer)",
            },
            true,
        ),
        ("i", json!(-5), Rule::BelowMin(0.0), false),
        ("i", json!(105), Rule::AboveMax(100.0), false),
        ("i", json!(7), Rule::OffStep(5.0), false),
        (
            "f",
            json!("1.0"),
            Rule::WrongType { expected: "float" },
            true,
        ),
        ("f", json!(-2.0), Rule::BelowMin(-1.5), false),
        ("f", json!(2.0), Rule::AboveMax(1.5), false),
        ("f", json!(0.25), Rule::OffStep(0.5), false),
        (
            "d",
            json!(true),
            Rule::WrongType { expected: "double" },
            true,
        ),
        ("d", json!(-40.5), Rule::BelowMin(-40.0), false),
        ("d", json!(90.0), Rule::AboveMax(85.5), false),
        ("d", json!(21.55), Rule::OffStep(0.1), false),
        ("t", json!(12), Rule::WrongType { expected: "text" }, true),
        ("t", json!("héllo"), Rule::TooLong(4), false),
        (
            "dt",
            json!("yesterday"),
            Rule::WrongType {
                expected: "date (UTC milliseconds as a string of digits)",
            },
            true,
        ),
        (
            "dt",
            json!(-1),
            Rule::WrongType {
                expected: "date (UTC milliseconds as a string of digits)",
            },
            true,
        ),
        (
            "b",
            json!(2),
            Rule::WrongType {
                expected: "bool (0 or 1)",
            },
            true,
        ),
        (
            "b",
            json!("1"),
            Rule::WrongType {
                expected: "bool (0 or 1)",
            },
            true,
        ),
        (
            "e",
            json!("eco"),
            Rule::WrongType {
                expected: "enum (integer)",
            },
            true,
        ),
        ("e", json!(1), Rule::NotInEnum, false),
        (
            "s",
            json!([1]),
            Rule::WrongType {
                expected: "struct (object)",
            },
            true,
        ),
        (
            "a",
            json!({"0": 1}),
            Rule::WrongType { expected: "array" },
            true,
        ),
        ("a", json!([1, 2, 3]), Rule::TooManyItems(2), false),
        ("nope", json!(1), Rule::UnknownIdentifier, true),
    ]
}

#[test]
fn strict_rejects_every_type_and_spec_violation_naming_identifier_and_rule() {
    let m = model();
    for (id, value, rule, _) in violations() {
        let err = check_properties(&m, ValidationMode::Strict, &one(id, value.clone()))
            .expect_err(&format!("{id}={value} must be rejected"));
        assert_eq!(
            err,
            Violation {
                path: id.into(),
                rule: rule.clone()
            },
            "{id}={value}"
        );
        assert!(err.to_string().starts_with(&format!("{id}: ")));
    }
}

#[test]
fn weak_reports_type_violations_and_accepts_spec_violations() {
    let m = model();
    for (id, value, rule, type_rule) in violations() {
        let checked = check_properties(&m, ValidationMode::Weak, &one(id, value.clone())).unwrap();
        if type_rule {
            assert!(checked.accepted.is_empty(), "{id}={value}");
            assert_eq!(
                checked.failed,
                [Violation {
                    path: id.into(),
                    rule
                }],
                "{id}={value}"
            );
        } else {
            assert_eq!(checked.accepted, one(id, value.clone()), "{id}={value}");
            assert!(checked.failed.is_empty(), "{id}={value}");
        }
    }
}

#[test]
fn none_accepts_everything() {
    let m = model();
    for (id, value, _, _) in violations() {
        let checked = check_properties(&m, ValidationMode::None, &one(id, value.clone())).unwrap();
        assert_eq!(checked.accepted, one(id, value));
    }
}

#[test]
fn valid_values_pass_in_strict_mode() {
    let m = model();
    let report = json!({
        "i": 95, "f": -0.5, "d": 21.5, "t": "abcd", "dt": "1700000000000", "b": 1, "e": 2,
        "s": {"r": 255, "name": "abc"}, "a": [0, 9]
    });
    let report = report.as_object().unwrap();
    let checked = check_properties(&m, ValidationMode::Strict, report).unwrap();
    assert_eq!(&checked.accepted, report);
    assert!(checked.failed.is_empty());
    // -40 + 615 * 0.1 is not exact in binary; the step check tolerates that.
    assert!(check_properties(&m, ValidationMode::Strict, &one("d", json!(21.5))).is_ok());
    assert!(check_properties(&m, ValidationMode::Strict, &one("b", json!(true))).is_ok());
    assert!(check_properties(
        &m,
        ValidationMode::Strict,
        &one("dt", json!(1700000000000u64))
    )
    .is_ok());
}

#[test]
fn struct_and_array_members_are_checked_with_their_paths() {
    let m = model();
    let cases = [
        (
            json!({"r": 300, "name": "ab"}),
            "s.r",
            Rule::AboveMax(255.0),
            false,
        ),
        (
            json!({"r": "x", "name": "ab"}),
            "s.r",
            Rule::WrongType {
                expected: "int (32-bit integer)",
            },
            true,
        ),
        (
            json!({"r": 1, "name": "abcd"}),
            "s.name",
            Rule::TooLong(3),
            false,
        ),
        (json!({"r": 1}), "s.name", Rule::Missing, false),
        (
            json!({"r": 1, "name": "a", "g": 2}),
            "s.g",
            Rule::UnknownIdentifier,
            true,
        ),
    ];
    for (value, path, rule, type_rule) in cases {
        let err =
            check_properties(&m, ValidationMode::Strict, &one("s", value.clone())).unwrap_err();
        assert_eq!(
            err,
            Violation {
                path: path.into(),
                rule: rule.clone()
            },
            "{value}"
        );
        let weak = check_properties(&m, ValidationMode::Weak, &one("s", value.clone())).unwrap();
        assert_eq!(weak.failed.len(), usize::from(type_rule), "{value}");
    }
    let err = check_properties(&m, ValidationMode::Strict, &one("a", json!([1, 10]))).unwrap_err();
    assert_eq!(
        err,
        Violation {
            path: "a[1]".into(),
            rule: Rule::AboveMax(9.0)
        }
    );
    let weak = check_properties(&m, ValidationMode::Weak, &one("a", json!([1, "x"]))).unwrap();
    assert_eq!(weak.failed[0].path, "a[1]");
}

#[test]
fn weak_stores_what_passes_and_lists_failures_as_check_failed_data() {
    let m = model();
    let sent = json!({"i": 500, "b": 7, "zzz": 1, "t": "ok"});
    let sent = sent.as_object().unwrap();
    let checked = check_properties(&m, ValidationMode::Weak, sent).unwrap();
    assert_eq!(
        checked.accepted,
        *json!({"i": 500, "t": "ok"}).as_object().unwrap()
    );
    let data = checked.check_failed_data(sent);
    assert_eq!(data["b"]["value"], 7);
    assert_eq!(data["b"]["code"], 460);
    assert_eq!(data["b"]["message"], "b: dataType must be bool (0 or 1)");
    assert_eq!(
        data["zzz"]["message"],
        "zzz: identifier not defined in the thing model"
    );
    assert_eq!(data.as_object().unwrap().len(), 2);
}

#[test]
fn property_set_refuses_read_only_properties_in_strict_and_weak() {
    let m = model();
    let err = check_property_set(&m, ValidationMode::Strict, &one("d", json!(20.0))).unwrap_err();
    assert_eq!(err.rule, Rule::ReadOnly);
    let weak = check_property_set(&m, ValidationMode::Weak, &one("d", json!(20.0))).unwrap();
    assert_eq!(weak.failed[0].rule, Rule::ReadOnly);
    assert!(check_property_set(&m, ValidationMode::Strict, &one("i", json!(20))).is_ok());
}

#[test]
fn event_output_is_checked_against_output_data() {
    let m = model();
    let ok = json!({"temp": 120.5, "zone": "kitchen"});
    assert!(check_event(
        &m,
        ValidationMode::Strict,
        "overheat",
        ok.as_object().unwrap()
    )
    .is_ok());
    let missing = json!({"temp": 120.5});
    let err = check_event(
        &m,
        ValidationMode::Strict,
        "overheat",
        missing.as_object().unwrap(),
    )
    .unwrap_err();
    assert_eq!(
        err,
        Violation {
            path: "zone".into(),
            rule: Rule::Missing
        }
    );
    assert!(check_event(
        &m,
        ValidationMode::Weak,
        "overheat",
        missing.as_object().unwrap()
    )
    .unwrap()
    .failed
    .is_empty());
    let high = json!({"temp": 250.0, "zone": "a"});
    let err = check_event(
        &m,
        ValidationMode::Strict,
        "overheat",
        high.as_object().unwrap(),
    )
    .unwrap_err();
    assert_eq!(err.to_string(), "temp: must be <= max 200");
    let bad_type = json!({"temp": "hot", "zone": "a"});
    let weak = check_event(
        &m,
        ValidationMode::Weak,
        "overheat",
        bad_type.as_object().unwrap(),
    )
    .unwrap();
    assert_eq!(weak.failed[0].path, "temp");
    assert_eq!(weak.accepted.len(), 1);
    for mode in [ValidationMode::Strict, ValidationMode::Weak] {
        let err = check_event(&m, mode, "explode", &Map::new()).unwrap_err();
        assert_eq!(err.rule, Rule::UnknownIdentifier);
    }
    assert!(check_event(&m, ValidationMode::None, "explode", &one("x", json!(1))).is_ok());
}

#[test]
fn service_input_and_output_are_checked() {
    let m = model();
    assert!(check_service(
        &m,
        ValidationMode::Strict,
        "blink",
        &one("times", json!(3)),
        false
    )
    .is_ok());
    let err = check_service(
        &m,
        ValidationMode::Strict,
        "blink",
        &one("times", json!(0)),
        false,
    )
    .unwrap_err();
    assert_eq!(err.to_string(), "times: must be >= min 1");
    let weak = check_service(
        &m,
        ValidationMode::Weak,
        "blink",
        &one("times", json!(0)),
        false,
    )
    .unwrap();
    assert!(weak.failed.is_empty());
    let weak = check_service(
        &m,
        ValidationMode::Weak,
        "blink",
        &one("times", json!("3")),
        false,
    )
    .unwrap();
    assert_eq!(weak.failed.len(), 1);
    assert!(check_service(
        &m,
        ValidationMode::Strict,
        "blink",
        &one("done", json!(1)),
        true
    )
    .is_ok());
    let err = check_service(
        &m,
        ValidationMode::Strict,
        "blink",
        &one("done", json!(5)),
        true,
    )
    .unwrap_err();
    assert_eq!(err.path, "done");
    let err = check_service(&m, ValidationMode::Weak, "reboot", &Map::new(), false).unwrap_err();
    assert_eq!(err.rule, Rule::UnknownIdentifier);
}
