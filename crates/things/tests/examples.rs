//! Every thing model in `examples/things/` loads, validates, round-trips through export, and
//! accepts a realistic report while rejecting an out-of-range one.

use std::path::PathBuf;

use serde_json::{json, Value};
use thingmq_things::tsl::ThingModel;
use thingmq_things::validate::{check_properties, ValidationMode};

fn examples_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../examples/things")
}

fn load(name: &str) -> ThingModel {
    let path = examples_dir().join(name);
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    ThingModel::from_json(&text).unwrap_or_else(|e| panic!("{name}: {e}"))
}

#[test]
fn every_example_file_is_a_valid_model_that_round_trips() {
    let mut names: Vec<String> = std::fs::read_dir(examples_dir())
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .filter(|n| n.ends_with(".json"))
        .collect();
    names.sort();
    assert_eq!(
        names,
        [
            "door-sensor.json",
            "gateway.json",
            "light.json",
            "smart-plug.json",
            "thermostat.json"
        ]
    );
    for name in &names {
        let model = load(name);
        assert!(!model.properties.is_empty(), "{name}");
        let again = ThingModel::from_value(&model.to_json()).unwrap();
        assert_eq!(again, model, "{name}");
    }
}

fn accepts(model: &ThingModel, report: Value) {
    let report = report.as_object().unwrap();
    let checked = check_properties(model, ValidationMode::Strict, report).unwrap();
    assert_eq!(&checked.accepted, report);
}

fn rejects(model: &ThingModel, report: Value, expected: &str) {
    let err =
        check_properties(model, ValidationMode::Strict, report.as_object().unwrap()).unwrap_err();
    assert_eq!(err.to_string(), expected);
}

#[test]
fn realistic_reports_pass_and_broken_ones_fail() {
    let light = load("light.json");
    accepts(
        &light,
        json!({"LightSwitch": 1, "Brightness": 80, "ColorTemperature": 3000, "RGBColor": {"Red": 255, "Green": 120, "Blue": 0}, "WorkMode": 1}),
    );
    rejects(
        &light,
        json!({"ColorTemperature": 3050}),
        "ColorTemperature: must be a multiple of step 100",
    );

    let thermostat = load("thermostat.json");
    accepts(
        &thermostat,
        json!({"CurrentTemperature": 21.3, "TargetTemperature": 21.5, "Humidity": 45, "Mode": 1, "HeatingActive": 0, "Schedule": [18.0, 18.0, 21.5]}),
    );
    rejects(
        &thermostat,
        json!({"TargetTemperature": 40.0}),
        "TargetTemperature: must be <= max 35",
    );

    let plug = load("smart-plug.json");
    accepts(
        &plug,
        json!({"PowerSwitch": 1, "ActivePower": 1234.5, "Voltage": 231.2, "Current": 5.339, "TotalEnergy": 1532.004}),
    );
    rejects(
        &plug,
        json!({"ActivePower": "high"}),
        "ActivePower: dataType must be double",
    );

    let door = load("door-sensor.json");
    accepts(
        &door,
        json!({"ContactState": 1, "BatteryPercentage": 87, "TamperAlarm": 0, "LastOpened": "1700000000000"}),
    );
    rejects(
        &door,
        json!({"BatteryPercentage": 101}),
        "BatteryPercentage: must be <= max 100",
    );

    let gw = load("gateway.json");
    accepts(
        &gw,
        json!({"FirmwareVersion": "2.4.1", "SubDeviceCount": 12, "ZigbeeChannel": 15, "WiFiSignal": {"RSSI": -61, "SSID": "home"}}),
    );
    rejects(
        &gw,
        json!({"ZigbeeChannel": 27}),
        "ZigbeeChannel: must be <= max 26",
    );
}
