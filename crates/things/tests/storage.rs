//! One storage test suite, run against SQLite, PostgreSQL and MariaDB/MySQL.
//!
//! SQLite always runs (a temp file). PostgreSQL and MySQL need servers: `scripts/test` starts
//! them on loopback through `scripts/test-databases` and exports
//! `THINGMQ_TEST_POSTGRES_URL` / `THINGMQ_TEST_MYSQL_URL`. Without those variables these tests
//! FAIL, saying how to run them, unless `THINGMQ_TEST_SKIP_EXTERNAL_DB=1` is set, in which case
//! they print that they were skipped. Each test works in a fresh database
//! (`thingmq_t_<random>`) so tests run in parallel without seeing each other.

use std::time::Duration;

use serde_json::json;
use sqlx::Executor;
use thingmq_things::registry::{Device, NodeType, Product};
use thingmq_things::shadow::Shadow;
use thingmq_things::store::{
    days_ms, Backend, HistoryWriter, Record, ServiceCallRecord, StatusChange, Store, StoreError,
    StoredEvent, WriterConfig,
};
use thingmq_things::tsl::ThingModel;
use thingmq_things::validate::ValidationMode;

#[derive(Debug, Clone, Copy)]
enum Target {
    Sqlite,
    Postgres,
    MySql,
}

/// Keeps the SQLite temp dir alive for the test.
struct Db {
    store: Store,
    /// Where `store` is connected, to open a second connection (an upgrade, raw SQL).
    url: String,
    _dir: Option<tempfile::TempDir>,
}

fn external_url(var: &str) -> Option<String> {
    match std::env::var(var) {
        Ok(url) if !url.is_empty() => Some(url),
        _ if std::env::var("THINGMQ_TEST_SKIP_EXTERNAL_DB").as_deref() == Ok("1") => {
            eprintln!("SKIPPED: {var} is not set and THINGMQ_TEST_SKIP_EXTERNAL_DB=1");
            None
        }
        _ => panic!(
            "{var} is not set. Run `scripts/test-databases cargo test -p thingmq-things` (it starts \
             PostgreSQL and MariaDB on loopback and sets the URLs), or set \
             THINGMQ_TEST_SKIP_EXTERNAL_DB=1 to skip the PostgreSQL/MySQL runs explicitly."
        ),
    }
}

fn random_name() -> String {
    use rand::Rng;
    format!("thingmq_t_{:016x}", rand::thread_rng().gen::<u64>())
}

/// Opens a fresh database on `target`, or `None` when explicitly skipped.
async fn open(target: Target) -> Option<Db> {
    open_at(target, i64::MAX).await
}

/// Opens a fresh database with the schema migrated up to `version`.
async fn open_at(target: Target, version: i64) -> Option<Db> {
    match target {
        Target::Sqlite => {
            let dir = tempfile::tempdir().unwrap();
            let url = format!("sqlite://{}/things.db?mode=rwc", dir.path().display());
            let store = Store::connect_at_version(&url, version).await.unwrap();
            assert_eq!(store.backend(), Backend::Sqlite);
            Some(Db {
                store,
                url,
                _dir: Some(dir),
            })
        }
        Target::Postgres | Target::MySql => {
            let (var, create) = match target {
                Target::Postgres => ("THINGMQ_TEST_POSTGRES_URL", "CREATE DATABASE {}"),
                _ => (
                    "THINGMQ_TEST_MYSQL_URL",
                    "CREATE DATABASE {} CHARACTER SET utf8mb4",
                ),
            };
            let admin_url = external_url(var)?;
            let name = random_name();
            sqlx::any::install_default_drivers();
            let admin = sqlx::AnyPool::connect(&admin_url)
                .await
                .unwrap_or_else(|e| panic!("cannot connect to {var}={admin_url}: {e}"));
            admin
                .execute(create.replace("{}", &name).as_str())
                .await
                .unwrap();
            admin.close().await;
            let (base, _) = admin_url
                .rsplit_once('/')
                .expect("URL with a database path");
            let url = format!("{base}/{name}");
            let store = Store::connect_at_version(&url, version).await.unwrap();
            Some(Db {
                store,
                url,
                _dir: None,
            })
        }
    }
}

const TSL: &str = r#"{
  "properties": [
    {"identifier": "temp", "name": "Temperature", "accessMode": "r",
     "dataType": {"type": "double", "specs": {"min": "-40", "max": "125", "unit": "°C"}}},
    {"identifier": "power", "name": "Power", "accessMode": "rw", "dataType": {"type": "bool", "specs": {"0": "off", "1": "on"}}}
  ],
  "events": [{"identifier": "overheat", "type": "alert", "outputData": [
    {"identifier": "temp", "dataType": {"type": "double", "specs": {"min": "0", "max": "200"}}}]}]
}"#;

fn product(pk: &str) -> Product {
    Product {
        product_key: pk.into(),
        name: "Thermometer «ü»".into(),
        node_type: NodeType::Direct,
        validation: ValidationMode::Weak,
        model: ThingModel::from_json(TSL).unwrap(),
        dynamic_register: false,
        created_ms: 1_700_000_000_000,
    }
}

const T0: i64 = 1_700_000_000_000;

fn prop(dn: &str, id: &str, time: i64, value: serde_json::Value) -> Record {
    Record::Property {
        product_key: "pk1".into(),
        device_name: dn.into(),
        identifier: id.into(),
        time,
        value,
    }
}

async fn migrations_are_recorded_and_rerun_safely(t: Target) {
    let Some(db) = open(t).await else { return };
    assert_eq!(db.store.schema_version().await.unwrap(), SCHEMA_VERSION);
    // Connecting again to the same database runs no migration twice.
    let again = Store::connect(&db.url).await.unwrap();
    assert_eq!(again.schema_version().await.unwrap(), SCHEMA_VERSION);
    again.close().await;
}

/// The schema version this build writes: 1 the tables, 2 one row per property report,
/// 3 `products.dynamic_register`.
const SCHEMA_VERSION: i64 = 3;

/// A second, raw connection to the test database.
async fn raw(db: &Db) -> sqlx::AnyPool {
    sqlx::any::install_default_drivers();
    sqlx::AnyPool::connect(&db.url).await.unwrap()
}

async fn count(pool: &sqlx::AnyPool, sql: &str) -> i64 {
    use sqlx::Row;
    sqlx::query(sql)
        .fetch_one(pool)
        .await
        .unwrap()
        .try_get::<i64, _>(0)
        .unwrap()
}

async fn version_1_property_history_is_carried_into_reports(t: Target) {
    let Some(old) = open_at(t, 1).await else {
        return;
    };
    assert_eq!(old.store.schema_version().await.unwrap(), 1);
    let pool = raw(&old).await;
    // Rows as a version-1 build wrote them: one per value; a key from a device under
    // validation mode "none" may be any text.
    for (i, (id, ts, num, json)) in [
        ("temp", T0, Some(20.5), "20.5"),
        ("temp", T0 + 1000, Some(21.0), "21.0"),
        ("power", T0, Some(1.0), "true"),
        ("we\"ird", T0 + 2000, None, r#"{"a":[1,2]}"#),
    ]
    .into_iter()
    .enumerate()
    {
        sqlx::query(&format!(
            "INSERT INTO property_history (product_key, device_name, identifier, ts, value_num, value_json) VALUES ('pk1', 'd1', '{}', {ts}, {}, '{json}')",
            id.replace('\'', "''"),
            num.map_or("NULL".to_string(), |n: f64| n.to_string()),
        ))
        .execute(&pool)
        .await
        .unwrap_or_else(|e| panic!("row {i}: {e}"));
    }
    pool.close().await;
    old.store.close().await;

    let store = Store::connect(&old.url).await.unwrap();
    assert_eq!(store.schema_version().await.unwrap(), SCHEMA_VERSION);
    let temp = store
        .property_history("pk1", "d1", "temp", T0, T0 + 10_000, 10)
        .await
        .unwrap();
    let temp: Vec<_> = temp
        .iter()
        .map(|p| (p.time - T0, p.value.clone()))
        .collect();
    assert_eq!(temp, [(0, json!(20.5)), (1000, json!(21.0))]);
    let power = store
        .property_history("pk1", "d1", "power", T0, T0 + 10_000, 10)
        .await
        .unwrap();
    assert_eq!(power[0].value, json!(true));
    let weird = store
        .property_history("pk1", "d1", "we\"ird", T0, T0 + 10_000, 10)
        .await
        .unwrap();
    assert_eq!(weird[0].value, json!({"a": [1, 2]}));
    let buckets = store
        .property_buckets("pk1", "d1", "temp", T0, T0 + 10_000, 10_000)
        .await
        .unwrap();
    assert_eq!(buckets.len(), 1);
    assert_eq!((buckets[0].count, buckets[0].avg), (2, 20.75));
    // The old table is gone.
    let pool = raw(&old).await;
    assert!(sqlx::query("SELECT COUNT(*) FROM property_history")
        .fetch_one(&pool)
        .await
        .is_err());
    pool.close().await;
    store.close().await;
}

async fn a_report_is_one_row_and_every_value_survives(t: Target) {
    let Some(db) = open(t).await else { return };
    let s = &db.store;
    let mut records = vec![
        prop("d1", "temp", T0, json!(20.0)),
        prop("d1", "hum", T0, json!(40)),
        prop("d1", "a_b", T0, json!(1)),
        // The same identifier twice at one time (two reports in one millisecond).
        prop("d1", "temp", T0, json!(20.5)),
        // Another device and another time are rows of their own.
        prop("d2", "temp", T0, json!(30.0)),
        prop("d1", "temp", T0 + 1, json!(21.0)),
    ];
    // A struct whose member has a property's name, at times between the property's values:
    // the text search finds it, the value check leaves it out.
    for i in 0..5 {
        records.push(prop(
            "d1",
            "cfg",
            T0 + 10 + i,
            json!({"temp": -1, "axb": 2}),
        ));
    }
    records.push(prop("d1", "temp", T0 + 20, json!(22.0)));
    s.write_records(&records).await.unwrap();

    let pool = raw(&db).await;
    assert_eq!(
        count(
            &pool,
            "SELECT COUNT(*) FROM property_reports WHERE device_name = 'd1' AND ts = 1700000000000"
        )
        .await,
        2
    );
    assert_eq!(
        count(&pool, "SELECT COUNT(*) FROM property_reports").await,
        10
    );
    pool.close().await;

    let temp = s
        .property_history("pk1", "d1", "temp", T0, T0 + 100, 100)
        .await
        .unwrap();
    let temp: Vec<_> = temp
        .iter()
        .map(|p| (p.time - T0, p.value.clone()))
        .collect();
    assert_eq!(
        temp,
        [
            (0, json!(20.0)),
            (0, json!(20.5)),
            (1, json!(21.0)),
            (20, json!(22.0))
        ]
    );
    // A limit counts this property's values, not the reports scanned for them.
    let limited = s
        .property_history("pk1", "d1", "temp", T0 + 1, T0 + 100, 2)
        .await
        .unwrap();
    assert_eq!(
        limited.iter().map(|p| p.time - T0).collect::<Vec<_>>(),
        [1, 20]
    );
    // `_` in an identifier is not a LIKE wildcard: `a_b` is not `axb`, which only exists
    // inside the struct.
    let ab = s
        .property_history("pk1", "d1", "a_b", T0, T0 + 100, 100)
        .await
        .unwrap();
    assert_eq!(ab.len(), 1);
    let axb = s
        .property_history("pk1", "d1", "axb", T0, T0 + 100, 100)
        .await
        .unwrap();
    assert!(axb.is_empty());
    let hum = s
        .property_history("pk1", "d1", "hum", T0, T0 + 100, 100)
        .await
        .unwrap();
    assert_eq!(hum[0].value, json!(40));
    let buckets = s
        .property_buckets("pk1", "d1", "temp", T0, T0 + 100, 10)
        .await
        .unwrap();
    let summary: Vec<_> = buckets
        .iter()
        .map(|b| (b.start - T0, b.count, b.min, b.max))
        .collect();
    assert_eq!(summary, [(0, 3, 20.0, 21.0), (20, 1, 22.0, 22.0)]);
}

async fn products_round_trip_with_their_thing_model(t: Target) {
    let Some(db) = open(t).await else { return };
    let s = &db.store;
    assert!(s.product("pk1").await.unwrap().is_none());
    let mut p = product("pk1");
    s.put_product(&p).await.unwrap();
    s.put_product(&product("pk0")).await.unwrap();
    assert_eq!(s.product("pk1").await.unwrap().unwrap(), p);
    p.name = "Renamed".into();
    p.validation = ValidationMode::Strict;
    p.node_type = NodeType::Gateway;
    p.dynamic_register = true;
    s.put_product(&p).await.unwrap();
    assert_eq!(s.product("pk1").await.unwrap().unwrap(), p);
    let keys: Vec<String> = s
        .products()
        .await
        .unwrap()
        .into_iter()
        .map(|p| p.product_key)
        .collect();
    assert_eq!(keys, ["pk0", "pk1"]);
    s.put_device(&Device::new("pk1", "d1", T0)).await.unwrap();
    assert!(s.delete_product("pk1").await.unwrap());
    assert!(!s.delete_product("pk1").await.unwrap());
    assert!(
        s.device("pk1", "d1").await.unwrap().is_none(),
        "devices go with their product"
    );
}

async fn devices_round_trip_and_feed_credentials(t: Target) {
    let Some(db) = open(t).await else { return };
    let s = &db.store;
    s.put_product(&product("pk1")).await.unwrap();
    let mut d = Device::new("pk1", "d1", T0);
    d.tags.insert("room".into(), "kitchen".into());
    d.gateway = Some(("gw".into(), "hub-1".into()));
    s.insert_device(&d).await.unwrap();
    assert!(matches!(
        s.insert_device(&d).await,
        Err(StoreError::AlreadyExists(_))
    ));
    s.insert_device(&Device::new("pk1", "d0", T0))
        .await
        .unwrap();
    assert_eq!(s.device("pk1", "d1").await.unwrap().unwrap(), d);
    let names: Vec<String> = s
        .devices("pk1")
        .await
        .unwrap()
        .into_iter()
        .map(|d| d.device_name)
        .collect();
    assert_eq!(names, ["d0", "d1"]);

    s.mark_online("pk1", "d1", T0 + 5, Some("127.0.0.1"))
        .await
        .unwrap();
    let got = s.device("pk1", "d1").await.unwrap().unwrap();
    assert_eq!(got.last_online_ms, Some(T0 + 5));
    assert_eq!(got.last_ip.as_deref(), Some("127.0.0.1"));

    d.enabled = false;
    d.last_online_ms = got.last_online_ms;
    d.last_ip = got.last_ip.clone();
    s.put_device(&d).await.unwrap();
    let creds = s.credentials().await.unwrap();
    let c = &creds[&("pk1".to_string(), "d1".to_string())];
    assert!(!c.enabled);
    assert_eq!(c.secret, d.device_secret);
    assert!(creds[&("pk1".to_string(), "d0".to_string())].enabled);

    assert!(s.delete_device("pk1", "d0").await.unwrap());
    assert!(s.device("pk1", "d0").await.unwrap().is_none());
}

async fn shadows_round_trip(t: Target) {
    let Some(db) = open(t).await else { return };
    let s = &db.store;
    assert_eq!(s.shadow("pk1", "d1").await.unwrap(), Shadow::default());
    let mut sh = Shadow::default();
    sh.apply_reported([("temp", &json!(21.5), T0), ("label", &json!("ünïcode"), T0)]);
    sh.set_desired("power", json!(1), None, T0).unwrap();
    s.put_shadow("pk1", "d1", &sh).await.unwrap();
    assert_eq!(s.shadow("pk1", "d1").await.unwrap(), sh);
    sh.apply_reported([("temp", &json!(22.0), T0 + 1)]);
    s.put_shadow("pk1", "d1", &sh).await.unwrap();
    assert_eq!(
        s.shadow("pk1", "d1").await.unwrap().reported["temp"].value,
        json!(22.0)
    );
    // several at once, in one transaction (inserts and updates)
    let mut other = Shadow::default();
    other.apply_reported([("power", &json!(1), T0)]);
    s.put_shadows(&[
        ("pk1".into(), "d1".into(), other.clone()),
        ("pk1".into(), "d2".into(), sh.clone()),
    ])
    .await
    .unwrap();
    assert_eq!(s.shadow("pk1", "d1").await.unwrap(), other);
    assert_eq!(s.shadow("pk1", "d2").await.unwrap(), sh);
    s.put_shadows(&[]).await.unwrap();

    // More shadows than one statement takes, new and existing ones mixed.
    let mut many: Vec<(String, String, Shadow)> = (0..450)
        .map(|i| {
            let mut x = Shadow::default();
            x.apply_reported([("temp", &serde_json::json!(i), 1_000 + i64::from(i))]);
            ("pk1".to_string(), format!("m{i}"), x)
        })
        .collect();
    many.push(("pk1".into(), "d1".into(), sh.clone()));
    s.put_shadows(&many).await.unwrap();
    for i in [0, 199, 200, 449] {
        let got = s.shadow("pk1", &format!("m{i}")).await.unwrap();
        assert_eq!(got.reported["temp"].value, serde_json::json!(i), "m{i}");
    }
    assert_eq!(s.shadow("pk1", "d1").await.unwrap(), sh);
}

async fn property_history_and_downsampling(t: Target) {
    let Some(db) = open(t).await else { return };
    let s = &db.store;
    // values at T0 + 0..10 s, one per second: 0, 1, …, 9; buckets of 5 s
    let bucket_start = T0 - T0 % 5000;
    let mut records: Vec<Record> = (0..10)
        .map(|i| prop("d1", "temp", bucket_start + i * 1000, json!(i as f64)))
        .collect();
    records.push(prop("d1", "label", bucket_start, json!("hello")));
    records.push(prop("d2", "temp", bucket_start, json!(100.0)));
    records.push(prop("d1", "power", bucket_start, json!(true)));
    s.write_records(&records).await.unwrap();

    let points = s
        .property_history(
            "pk1",
            "d1",
            "temp",
            bucket_start + 2000,
            bucket_start + 5000,
            100,
        )
        .await
        .unwrap();
    let values: Vec<_> = points
        .iter()
        .map(|p| (p.time - bucket_start, p.value.clone()))
        .collect();
    assert_eq!(
        values,
        [(2000, json!(2.0)), (3000, json!(3.0)), (4000, json!(4.0))]
    );
    let limited = s
        .property_history("pk1", "d1", "temp", bucket_start, bucket_start + 10_000, 2)
        .await
        .unwrap();
    assert_eq!(limited.len(), 2);
    let label = s
        .property_history("pk1", "d1", "label", bucket_start, bucket_start + 1, 10)
        .await
        .unwrap();
    assert_eq!(label[0].value, json!("hello"));

    let buckets = s
        .property_buckets(
            "pk1",
            "d1",
            "temp",
            bucket_start,
            bucket_start + 10_000,
            5000,
        )
        .await
        .unwrap();
    assert_eq!(buckets.len(), 2);
    assert_eq!(buckets[0].start, bucket_start);
    assert_eq!(
        (
            buckets[0].count,
            buckets[0].avg,
            buckets[0].min,
            buckets[0].max
        ),
        (5, 2.0, 0.0, 4.0)
    );
    assert_eq!(buckets[1].start, bucket_start + 5000);
    assert_eq!(
        (
            buckets[1].count,
            buckets[1].avg,
            buckets[1].min,
            buckets[1].max
        ),
        (5, 7.0, 5.0, 9.0)
    );
    // text values have no numeric form and make no buckets; booleans count as 0/1
    assert!(s
        .property_buckets(
            "pk1",
            "d1",
            "label",
            bucket_start,
            bucket_start + 10_000,
            5000
        )
        .await
        .unwrap()
        .is_empty());
    let power = s
        .property_buckets(
            "pk1",
            "d1",
            "power",
            bucket_start,
            bucket_start + 10_000,
            5000,
        )
        .await
        .unwrap();
    assert_eq!(power[0].max, 1.0);
}

async fn events_are_queried_by_type_and_time(t: Target) {
    let Some(db) = open(t).await else { return };
    let s = &db.store;
    let ev = |id: &str, ty: &str, time: i64| Record::Event {
        product_key: "pk1".into(),
        device_name: "d1".into(),
        event: StoredEvent {
            identifier: id.into(),
            event_type: ty.into(),
            time,
            output: json!({"temp": time - T0}),
        },
    };
    s.write_records(&[
        ev("overheat", "alert", T0 + 1),
        ev("boot", "info", T0 + 2),
        ev("overheat", "alert", T0 + 3),
        ev("fault", "error", T0 + 10),
    ])
    .await
    .unwrap();
    let alerts = s
        .events("pk1", "d1", Some("alert"), T0, T0 + 100, 100)
        .await
        .unwrap();
    assert_eq!(alerts.len(), 2);
    assert_eq!(
        alerts[1],
        StoredEvent {
            identifier: "overheat".into(),
            event_type: "alert".into(),
            time: T0 + 3,
            output: json!({"temp": 3})
        }
    );
    let early = s.events("pk1", "d1", None, T0, T0 + 5, 100).await.unwrap();
    assert_eq!(
        early
            .iter()
            .map(|e| e.identifier.as_str())
            .collect::<Vec<_>>(),
        ["overheat", "boot", "overheat"]
    );
    assert!(s
        .events("pk1", "d2", None, T0, T0 + 100, 100)
        .await
        .unwrap()
        .is_empty());
}

async fn status_changes_and_service_calls_are_logged(t: Target) {
    let Some(db) = open(t).await else { return };
    let s = &db.store;
    let status = |time: i64, online: bool, reason: &str, ip: Option<&str>| Record::Status {
        product_key: "pk1".into(),
        device_name: "d1".into(),
        change: StatusChange {
            time,
            online,
            reason: reason.into(),
            ip: ip.map(str::to_string),
        },
    };
    let call = ServiceCallRecord {
        call_id: "42".into(),
        service: "blink".into(),
        input: json!({"times": 3}),
        output: Some(json!({"done": 1})),
        status: "ok".into(),
        code: Some(200),
        started_ms: T0 + 2,
        latency_ms: Some(15),
    };
    let timeout = ServiceCallRecord {
        call_id: "43".into(),
        output: None,
        status: "timeout".into(),
        code: None,
        latency_ms: None,
        started_ms: T0 + 3,
        ..call.clone()
    };
    s.write_records(&[
        status(T0, true, "connect", Some("10.0.0.7")),
        status(T0 + 5, false, "keepalive-timeout", None),
        Record::ServiceCall {
            product_key: "pk1".into(),
            device_name: "d1".into(),
            call: call.clone(),
        },
        Record::ServiceCall {
            product_key: "pk1".into(),
            device_name: "d1".into(),
            call: timeout.clone(),
        },
    ])
    .await
    .unwrap();
    let changes = s.status_changes("pk1", "d1", T0, T0 + 10).await.unwrap();
    assert_eq!(changes.len(), 2);
    assert!(changes[0].online);
    assert_eq!(changes[0].ip.as_deref(), Some("10.0.0.7"));
    assert_eq!(changes[1].reason, "keepalive-timeout");
    assert_eq!(
        s.service_calls("pk1", "d1", T0, T0 + 10).await.unwrap(),
        [call, timeout]
    );
}

async fn retention_deletes_only_old_history(t: Target) {
    let Some(db) = open(t).await else { return };
    let s = &db.store;
    let now = T0 + days_ms(30);
    let old = now - days_ms(8);
    let recent = now - days_ms(6);
    let ev = |time| Record::Event {
        product_key: "pk1".into(),
        device_name: "d1".into(),
        event: StoredEvent {
            identifier: "e".into(),
            event_type: "info".into(),
            time,
            output: json!({}),
        },
    };
    let st = |time| Record::Status {
        product_key: "pk1".into(),
        device_name: "d1".into(),
        change: StatusChange {
            time,
            online: true,
            reason: "connect".into(),
            ip: None,
        },
    };
    let call = |started_ms| Record::ServiceCall {
        product_key: "pk1".into(),
        device_name: "d1".into(),
        call: ServiceCallRecord {
            call_id: "1".into(),
            service: "s".into(),
            input: json!({}),
            output: None,
            status: "ok".into(),
            code: None,
            started_ms,
            latency_ms: None,
        },
    };
    s.write_records(&[
        prop("d1", "temp", old, json!(1.0)),
        prop("d1", "temp", recent, json!(2.0)),
        ev(old),
        ev(recent),
        st(old),
        st(recent),
        call(old),
        call(recent),
    ])
    .await
    .unwrap();
    let report = s.apply_retention(now - days_ms(7)).await.unwrap();
    assert_eq!(
        (
            report.properties,
            report.events,
            report.status_changes,
            report.service_calls
        ),
        (1, 1, 1, 1)
    );
    let left = s
        .property_history("pk1", "d1", "temp", 0, i64::MAX, 10)
        .await
        .unwrap();
    assert_eq!(left.len(), 1);
    assert_eq!(left[0].time, recent);
    assert_eq!(
        s.events("pk1", "d1", None, 0, i64::MAX, 10)
            .await
            .unwrap()
            .len(),
        1
    );
    assert_eq!(
        s.apply_retention(now - days_ms(7))
            .await
            .unwrap()
            .properties,
        0
    );
}

async fn wait_for(what: &str, mut cond: impl FnMut() -> bool) {
    for _ in 0..500 {
        if cond() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("timed out waiting for {what}");
}

async fn writer_drops_and_counts_when_the_queue_is_full(t: Target) {
    let Some(db) = open(t).await else { return };
    let config = WriterConfig {
        queue_capacity: 3,
        batch_rows: 100,
        flush_interval: Duration::from_secs(3600),
        ..WriterConfig::default()
    };
    let (writer, task) = HistoryWriter::spawn(db.store.clone(), config);
    // The test runtime is single-threaded: the writer task cannot run (and drain the queue)
    // until we await, so exactly 3 fit.
    let accepted = (0..10)
        .filter(|i| writer.submit(prop("d1", "temp", T0 + i, json!(*i))))
        .count();
    assert_eq!(accepted, 3);
    assert_eq!(
        writer
            .stats()
            .dropped
            .load(std::sync::atomic::Ordering::Relaxed),
        7
    );
    writer.flush().await;
    assert_eq!(
        writer
            .stats()
            .written
            .load(std::sync::atomic::Ordering::Relaxed),
        3
    );
    let rows = db
        .store
        .property_history("pk1", "d1", "temp", T0, T0 + 100, 100)
        .await
        .unwrap();
    assert_eq!(
        rows.iter().map(|p| p.time - T0).collect::<Vec<_>>(),
        [0, 1, 2]
    );
    drop(writer);
    tokio::time::timeout(Duration::from_secs(10), task)
        .await
        .unwrap()
        .unwrap();
}

async fn writer_flushes_by_row_count_and_by_interval(t: Target) {
    use std::sync::atomic::Ordering::Relaxed;
    let Some(db) = open(t).await else { return };
    // by rows: the interval is an hour, so only the row count can trigger the write
    let (writer, task) = HistoryWriter::spawn(
        db.store.clone(),
        WriterConfig {
            queue_capacity: 100,
            batch_rows: 4,
            flush_interval: Duration::from_secs(3600),
            ..WriterConfig::default()
        },
    );
    for i in 0..4 {
        assert!(writer.submit(prop("d1", "rows", T0 + i, json!(i))));
    }
    wait_for("a 4-row batch", || {
        writer.stats().written.load(Relaxed) == 4
    })
    .await;
    assert_eq!(writer.stats().batches.load(Relaxed), 1);
    drop(writer);
    tokio::time::timeout(Duration::from_secs(10), task)
        .await
        .unwrap()
        .unwrap();

    // by interval: one row, a large batch size, 50 ms interval
    let (writer, task) = HistoryWriter::spawn(
        db.store.clone(),
        WriterConfig {
            queue_capacity: 100,
            batch_rows: 1000,
            flush_interval: Duration::from_millis(50),
            ..WriterConfig::default()
        },
    );
    assert!(writer.submit(prop("d1", "interval", T0, json!(1))));
    wait_for("the interval flush", || {
        writer.stats().written.load(Relaxed) == 1
    })
    .await;
    // what is queued when the last handle goes is still written
    assert!(writer.submit(prop("d1", "interval", T0 + 1, json!(2))));
    drop(writer);
    tokio::time::timeout(Duration::from_secs(10), task)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        db.store
            .property_history("pk1", "d1", "interval", T0, T0 + 10, 10)
            .await
            .unwrap()
            .len(),
        2
    );
    assert_eq!(
        db.store
            .property_history("pk1", "d1", "rows", T0, T0 + 10, 10)
            .await
            .unwrap()
            .len(),
        4
    );
}

async fn writer_batches_grow_with_the_queue_up_to_their_maximum(t: Target) {
    use std::sync::atomic::Ordering::Relaxed;
    let Some(db) = open(t).await else { return };
    let (writer, task) = HistoryWriter::spawn(
        db.store.clone(),
        WriterConfig {
            queue_capacity: 1_000,
            batch_rows: 4,
            flush_interval: Duration::from_secs(3600),
            max_batch_rows: 20,
        },
    );
    // The test runtime is single-threaded: all 50 are waiting when the writer first runs, so
    // its batches take 20, 20 and then the 10 left (which reach the 4-row threshold).
    for i in 0..50 {
        assert!(writer.submit(prop("d1", "deep", T0 + i, json!(i))));
    }
    writer.flush().await;
    assert_eq!(writer.stats().written.load(Relaxed), 50);
    assert_eq!(writer.stats().batches.load(Relaxed), 3);
    drop(writer);
    tokio::time::timeout(Duration::from_secs(10), task)
        .await
        .unwrap()
        .unwrap();
    let stored = db
        .store
        .property_history("pk1", "d1", "deep", T0, T0 + 100, 100)
        .await
        .unwrap();
    assert_eq!(stored.len(), 50);
    assert_eq!(stored[49].value, json!(49));
}

macro_rules! suite {
    ($($test:ident),* $(,)?) => {
        mod sqlite { $( #[tokio::test] async fn $test() { super::$test(super::Target::Sqlite).await } )* }
        mod postgres { $( #[tokio::test] async fn $test() { super::$test(super::Target::Postgres).await } )* }
        mod mysql { $( #[tokio::test] async fn $test() { super::$test(super::Target::MySql).await } )* }
    };
}

suite!(
    migrations_are_recorded_and_rerun_safely,
    products_round_trip_with_their_thing_model,
    devices_round_trip_and_feed_credentials,
    shadows_round_trip,
    property_history_and_downsampling,
    version_1_property_history_is_carried_into_reports,
    a_report_is_one_row_and_every_value_survives,
    events_are_queried_by_type_and_time,
    status_changes_and_service_calls_are_logged,
    retention_deletes_only_old_history,
    writer_drops_and_counts_when_the_queue_is_full,
    writer_flushes_by_row_count_and_by_interval,
    writer_batches_grow_with_the_queue_up_to_their_maximum,
);

#[tokio::test]
async fn unknown_url_schemes_are_refused() {
    assert!(matches!(
        Store::connect("redis://x").await,
        Err(StoreError::UnsupportedUrl(_))
    ));
}
