//! The schema, one list of migrations written once with per-backend type tokens.
//!
//! Each migration is a list of statements; `things_schema.version` records how many have run.
//! Never edit a released migration: add a new one.

use super::Backend;

/// Migrations in order; index + 1 is the schema version after running it.
const MIGRATIONS: &[&[&str]] = &[V1, V2, V3];

/// The first schema.
const V1: &[&str] = &[
    "CREATE TABLE products (
        product_key VARCHAR(64) NOT NULL PRIMARY KEY,
        name VARCHAR(255) NOT NULL,
        node_type VARCHAR(16) NOT NULL,
        validation VARCHAR(16) NOT NULL,
        tsl {TEXT} NOT NULL,
        created_ms BIGINT NOT NULL)",
    "CREATE TABLE devices (
        product_key VARCHAR(64) NOT NULL,
        device_name VARCHAR(64) NOT NULL,
        secret VARCHAR(128) NOT NULL,
        enabled BIGINT NOT NULL,
        tags {TEXT} NOT NULL,
        created_ms BIGINT NOT NULL,
        last_online_ms BIGINT NULL,
        last_ip VARCHAR(64) NULL,
        gateway VARCHAR(130) NULL,
        PRIMARY KEY (product_key, device_name))",
    "CREATE TABLE shadows (
        product_key VARCHAR(64) NOT NULL,
        device_name VARCHAR(64) NOT NULL,
        doc {TEXT} NOT NULL,
        version BIGINT NOT NULL,
        PRIMARY KEY (product_key, device_name))",
    "CREATE TABLE property_history (
        id {ID},
        product_key VARCHAR(64) NOT NULL,
        device_name VARCHAR(64) NOT NULL,
        identifier VARCHAR(64) NOT NULL,
        ts BIGINT NOT NULL,
        value_num {DOUBLE} NULL,
        value_json {TEXT} NOT NULL)",
    "CREATE INDEX property_history_device ON property_history (product_key, device_name, identifier, ts)",
    "CREATE INDEX property_history_ts ON property_history (ts)",
    "CREATE TABLE events (
        id {ID},
        product_key VARCHAR(64) NOT NULL,
        device_name VARCHAR(64) NOT NULL,
        identifier VARCHAR(64) NOT NULL,
        event_type VARCHAR(8) NOT NULL,
        ts BIGINT NOT NULL,
        output {TEXT} NOT NULL)",
    "CREATE INDEX events_device ON events (product_key, device_name, ts)",
    "CREATE INDEX events_ts ON events (ts)",
    "CREATE TABLE status_changes (
        id {ID},
        product_key VARCHAR(64) NOT NULL,
        device_name VARCHAR(64) NOT NULL,
        ts BIGINT NOT NULL,
        online BIGINT NOT NULL,
        reason VARCHAR(64) NOT NULL,
        ip VARCHAR(64) NULL)",
    "CREATE INDEX status_changes_device ON status_changes (product_key, device_name, ts)",
    "CREATE INDEX status_changes_ts ON status_changes (ts)",
    "CREATE TABLE service_calls (
        id {ID},
        product_key VARCHAR(64) NOT NULL,
        device_name VARCHAR(64) NOT NULL,
        call_id VARCHAR(64) NOT NULL,
        service VARCHAR(64) NOT NULL,
        input {TEXT} NOT NULL,
        output {TEXT} NULL,
        status VARCHAR(16) NOT NULL,
        code BIGINT NULL,
        started_ms BIGINT NOT NULL,
        latency_ms BIGINT NULL)",
    "CREATE INDEX service_calls_device ON service_calls (product_key, device_name, started_ms)",
    "CREATE INDEX service_calls_ts ON service_calls (started_ms)",
];

/// Property history as one row per report: `doc` holds the report's values by identifier
/// (`{"temp":21.5,"hum":40}`) at one time. A row per value cost three B-tree inserts per
/// value, each repeating the device's and the property's names; at 10,000 devices × 6
/// properties a second that was more than one core could store (docs/benchmarks.md).
/// Existing rows are carried over, one value per report.
const V2: &[&str] = &[
    "CREATE TABLE property_reports (
        id {ID},
        product_key VARCHAR(64) NOT NULL,
        device_name VARCHAR(64) NOT NULL,
        ts BIGINT NOT NULL,
        doc {TEXT} NOT NULL)",
    "CREATE INDEX property_reports_device ON property_reports (product_key, device_name, ts)",
    "CREATE INDEX property_reports_ts ON property_reports (ts)",
    "INSERT INTO property_reports (product_key, device_name, ts, doc)
        SELECT product_key, device_name, ts, {ONE_VALUE_DOC} FROM property_history ORDER BY id",
    "DROP TABLE property_history",
];

/// Products whose devices gateways may register (`thing/sub/register`).
const V3: &[&str] = &["ALTER TABLE products ADD COLUMN dynamic_register BIGINT NOT NULL DEFAULT 0"];

/// The schema version this build writes.
pub(crate) const CURRENT_VERSION: i64 = MIGRATIONS.len() as i64;

/// The statements of migration `index` for `backend`.
pub(crate) fn migration(backend: Backend, index: usize) -> Vec<String> {
    let (id, double, text) = match backend {
        Backend::Sqlite => ("INTEGER PRIMARY KEY AUTOINCREMENT", "REAL", "TEXT"),
        Backend::Postgres => ("BIGSERIAL PRIMARY KEY", "DOUBLE PRECISION", "TEXT"),
        // TEXT is 64 KiB in MySQL; thing models and payloads may be larger.
        Backend::MySql => ("BIGINT AUTO_INCREMENT PRIMARY KEY", "DOUBLE", "MEDIUMTEXT"),
    };
    // `value_json` is already JSON; the identifier is quoted by the database (under
    // validation mode "none" it is whatever key the device sent).
    let one_value_doc = match backend {
        Backend::Sqlite => "'{' || json_quote(identifier) || ':' || value_json || '}'",
        Backend::Postgres => "'{' || to_json(identifier)::text || ':' || value_json || '}'",
        Backend::MySql => "CONCAT('{', JSON_QUOTE(identifier), ':', value_json, '}')",
    };
    MIGRATIONS[index]
        .iter()
        .map(|s| {
            s.replace("{ID}", id)
                .replace("{DOUBLE}", double)
                .replace("{TEXT}", text)
                .replace("{ONE_VALUE_DOC}", one_value_doc)
        })
        .collect()
}

/// Postgres numbers its placeholders; the SQL is written with `?` for SQLite and MySQL.
pub(crate) fn placeholders(backend: Backend, sql: &str) -> String {
    if backend != Backend::Postgres {
        return sql.to_string();
    }
    let mut out = String::with_capacity(sql.len() + 8);
    let mut n = 0;
    for c in sql.chars() {
        if c == '?' {
            n += 1;
            out.push('$');
            out.push_str(&n.to_string());
        } else {
            out.push(c);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn postgres_gets_numbered_placeholders() {
        assert_eq!(
            placeholders(Backend::Postgres, "a = ? AND b = ?"),
            "a = $1 AND b = $2"
        );
        assert_eq!(placeholders(Backend::MySql, "a = ?"), "a = ?");
    }

    #[test]
    fn every_token_is_replaced_for_every_backend() {
        for b in [Backend::Sqlite, Backend::Postgres, Backend::MySql] {
            for i in 0..MIGRATIONS.len() {
                for s in migration(b, i) {
                    for token in ["{ID}", "{DOUBLE}", "{TEXT}", "{ONE_VALUE_DOC}"] {
                        assert!(!s.contains(token), "{s}");
                    }
                }
            }
        }
    }
}
