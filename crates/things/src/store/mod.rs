//! Storage of the registry, shadows and history through `sqlx`: SQLite (the embedded default),
//! PostgreSQL and MySQL/MariaDB, chosen by the database URL.
//!
//! - [`Store`]: connect + migrate, registry CRUD, shadows, history queries, retention.
//! - [`HistoryWriter`]: the batching writer in front of the history tables; a bounded queue
//!   that drops and counts when full so a burst of reports never blocks the broker.
//!
//! Queries are built at run time (no `sqlx` macros, so building needs no database) and go
//! through `sqlx::Any`, so one code path serves the three backends; the few SQL differences
//! (types in DDL, upserts, integer division, placeholders) are chosen by [`Backend`].
//! Times are UTC milliseconds in `BIGINT` columns, which every backend stores the same way.

mod schema;
mod writer;

use std::collections::{BTreeMap, HashMap};
use std::str::FromStr;

use serde_json::Value;
use sqlx::any::{AnyConnectOptions, AnyPoolOptions, AnyRow};
use sqlx::{AnyPool, Row};

use crate::device_auth::{CredentialSnapshot, DeviceCredential};
use crate::registry::{Device, NodeType, Product};
use crate::shadow::Shadow;
use crate::tsl::ThingModel;
use crate::validate::ValidationMode;

pub use writer::{HistoryWriter, WriterConfig, WriterStats};

/// A storage failure.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// The URL names no supported backend.
    #[error("unsupported database URL {0:?} (use sqlite:, postgres:// or mysql://)")]
    UnsupportedUrl(String),
    /// The database refused or failed.
    #[error("database error: {0}")]
    Database(#[from] sqlx::Error),
    /// The database holds something this build cannot read.
    #[error("corrupt row: {0}")]
    Corrupt(String),
    /// The database was written by a newer thingmq.
    #[error("database schema version {found} is newer than this build's {supported}")]
    SchemaTooNew {
        /// What the database says.
        found: i64,
        /// What this build knows.
        supported: i64,
    },
    /// An insert collided with an existing key.
    #[error("already exists: {0}")]
    AlreadyExists(String),
    /// A query would read more rows than a request may (a chart over too long a range).
    #[error("{0}")]
    TooLarge(String),
}

type Result<T> = std::result::Result<T, StoreError>;

/// Which database the URL named.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    /// `sqlite:` URLs.
    Sqlite,
    /// `postgres://` / `postgresql://`.
    Postgres,
    /// `mysql://` / `mariadb://` (MariaDB speaks the MySQL protocol).
    MySql,
}

impl Backend {
    /// The backend a URL names.
    pub fn of_url(url: &str) -> Option<Self> {
        let scheme = url.split(':').next()?;
        match scheme {
            "sqlite" => Some(Self::Sqlite),
            "postgres" | "postgresql" => Some(Self::Postgres),
            "mysql" | "mariadb" => Some(Self::MySql),
            _ => None,
        }
    }
}

/// One reported property value as stored.
#[derive(Debug, Clone, PartialEq)]
pub struct PropertyPoint {
    /// UTC ms.
    pub time: i64,
    /// The value.
    pub value: Value,
}

/// One downsampling bucket of numeric property values.
#[derive(Debug, Clone, PartialEq)]
pub struct Bucket {
    /// Start of the bucket, UTC ms (a multiple of the bucket width).
    pub start: i64,
    /// How many values fell in it.
    pub count: i64,
    /// Mean.
    pub avg: f64,
    /// Minimum.
    pub min: f64,
    /// Maximum.
    pub max: f64,
}

/// A stored event.
#[derive(Debug, Clone, PartialEq)]
pub struct StoredEvent {
    /// Event identifier.
    pub identifier: String,
    /// `info`, `alert` or `error`.
    pub event_type: String,
    /// UTC ms.
    pub time: i64,
    /// The output arguments.
    pub output: Value,
}

/// An online/offline transition.
#[derive(Debug, Clone, PartialEq)]
pub struct StatusChange {
    /// UTC ms.
    pub time: i64,
    /// Online after the change.
    pub online: bool,
    /// Why: `connect`, `disconnect`, `keepalive-timeout`, `takeover`, …
    pub reason: String,
    /// Peer address when it went online.
    pub ip: Option<String>,
}

/// One service call as logged.
#[derive(Debug, Clone, PartialEq)]
pub struct ServiceCallRecord {
    /// The call's id (the Alink message id).
    pub call_id: String,
    /// Service identifier (`set` / `get` for properties).
    pub service: String,
    /// Arguments sent.
    pub input: Value,
    /// Reply data, when there was a reply.
    pub output: Option<Value>,
    /// `ok`, `error`, `timeout`, …
    pub status: String,
    /// The reply's Alink code.
    pub code: Option<i64>,
    /// When the call was sent, UTC ms.
    pub started_ms: i64,
    /// Time to the reply.
    pub latency_ms: Option<i64>,
}

/// One history row for the [`HistoryWriter`].
#[derive(Debug, Clone, PartialEq)]
pub enum Record {
    /// An accepted property value.
    Property {
        /// Device.
        product_key: String,
        /// Device.
        device_name: String,
        /// Property identifier.
        identifier: String,
        /// UTC ms.
        time: i64,
        /// The value.
        value: Value,
    },
    /// An accepted event.
    Event {
        /// Device.
        product_key: String,
        /// Device.
        device_name: String,
        /// The event.
        event: StoredEvent,
    },
    /// An online/offline change.
    Status {
        /// Device.
        product_key: String,
        /// Device.
        device_name: String,
        /// The change.
        change: StatusChange,
    },
    /// A finished (or failed) service call.
    ServiceCall {
        /// Device.
        product_key: String,
        /// Device.
        device_name: String,
        /// The call.
        call: ServiceCallRecord,
    },
}

/// Rows removed by [`Store::apply_retention`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RetentionReport {
    /// Property reports (each one or more values of a device at one time).
    pub properties: u64,
    /// From `events`.
    pub events: u64,
    /// From `status_changes`.
    pub status_changes: u64,
    /// From `service_calls`.
    pub service_calls: u64,
}

/// A connection pool to one database.
#[derive(Debug, Clone)]
pub struct Store {
    pool: AnyPool,
    /// Where history rows and shadows go. On SQLite a connection of its own with
    /// `synchronous = NORMAL`: in WAL mode a commit then skips its fsync (a power cut may lose
    /// the last history batches, never corrupt the file), which at 10,000 devices was the
    /// difference between keeping up and dropping rows. Registry writes stay on `pool`
    /// (`synchronous = FULL`), and their fsync of the WAL also covers the history frames
    /// before them. Other backends share `pool`.
    bulk: AnyPool,
    backend: Backend,
}

/// Reads a text column. MySQL reports `TEXT` columns as blobs through `sqlx::Any`.
fn text(row: &AnyRow, col: &str) -> Result<String> {
    Ok(opt_text(row, col)?.unwrap_or_default())
}

fn opt_text(row: &AnyRow, col: &str) -> Result<Option<String>> {
    match row.try_get::<Option<String>, _>(col) {
        Ok(v) => Ok(v),
        Err(_) => match row.try_get::<Option<Vec<u8>>, _>(col)? {
            None => Ok(None),
            Some(b) => String::from_utf8(b)
                .map(Some)
                .map_err(|_| StoreError::Corrupt(format!("{col} is not UTF-8"))),
        },
    }
}

fn json(row: &AnyRow, col: &str) -> Result<Value> {
    serde_json::from_str(&text(row, col)?).map_err(|e| StoreError::Corrupt(format!("{col}: {e}")))
}

impl Store {
    /// Connects to `url` (`sqlite:///path/things.db?mode=rwc`, `postgres://…`,
    /// `mysql://…`) and brings the schema up to date.
    pub async fn connect(url: &str) -> Result<Self> {
        Self::connect_at_version(url, schema::CURRENT_VERSION).await
    }

    /// Connects and migrates the schema only up to `version`: for tests that upgrade a
    /// database written by an older build. Not for use outside tests.
    #[doc(hidden)]
    pub async fn connect_at_version(url: &str, version: i64) -> Result<Self> {
        let backend =
            Backend::of_url(url).ok_or_else(|| StoreError::UnsupportedUrl(url.to_string()))?;
        sqlx::any::install_default_drivers();
        let options = AnyConnectOptions::from_str(url)?;
        // One SQLite file has one writer at a time anyway; more connections only add lock
        // contention.
        let max = if backend == Backend::Sqlite { 4 } else { 8 };
        let pool = AnyPoolOptions::new()
            .max_connections(max)
            .connect_with(options.clone())
            .await?;
        let mut store = Self {
            bulk: pool.clone(),
            pool,
            backend,
        };
        store.migrate(version.min(schema::CURRENT_VERSION)).await?;
        // An in-memory SQLite database exists once per connection: it cannot have a second pool.
        if backend == Backend::Sqlite && !url.contains("memory") {
            store.bulk = AnyPoolOptions::new()
                .max_connections(1)
                .after_connect(|conn, _| {
                    Box::pin(async move {
                        // A history batch of 20,000 rows touches more pages than SQLite's
                        // default 2 MB cache: it then spilled pages and its statement journals
                        // to disk mid-transaction (~20 % of the broker's CPU in pwrite under
                        // 10,000 devices). 64 MB of cache and journals in memory keep a batch
                        // in memory until its commit.
                        for pragma in [
                            "PRAGMA synchronous = NORMAL",
                            "PRAGMA cache_size = -65536",
                            "PRAGMA temp_store = MEMORY",
                        ] {
                            sqlx::query(pragma).execute(&mut *conn).await?;
                        }
                        Ok(())
                    })
                })
                .connect_with(options)
                .await?;
        }
        Ok(store)
    }

    /// The backend in use.
    pub fn backend(&self) -> Backend {
        self.backend
    }

    fn sql(&self, sql: &str) -> String {
        schema::placeholders(self.backend, sql)
    }

    /// The schema version the database is at.
    pub async fn schema_version(&self) -> Result<i64> {
        let row = sqlx::query("SELECT version FROM things_schema")
            .fetch_optional(&self.pool)
            .await?;
        Ok(match row {
            Some(r) => r.try_get::<i64, _>(0)?,
            None => 0,
        })
    }

    async fn migrate(&self, target: i64) -> Result<()> {
        if self.backend == Backend::Sqlite {
            // WAL lets readers (API queries) run while the history writer writes.
            sqlx::query("PRAGMA journal_mode=WAL")
                .execute(&self.pool)
                .await?;
        }
        sqlx::query("CREATE TABLE IF NOT EXISTS things_schema (version BIGINT NOT NULL)")
            .execute(&self.pool)
            .await?;
        let mut version = self.schema_version().await?;
        if version > schema::CURRENT_VERSION {
            return Err(StoreError::SchemaTooNew {
                found: version,
                supported: schema::CURRENT_VERSION,
            });
        }
        if version == 0 {
            sqlx::query("INSERT INTO things_schema (version) VALUES (0)")
                .execute(&self.pool)
                .await?;
        }
        while version < target {
            // One transaction per migration, so a crash part-way runs it again from the
            // start (SQLite and PostgreSQL; MySQL commits each DDL statement by itself).
            let mut tx = self.pool.begin().await?;
            for stmt in schema::migration(self.backend, version as usize) {
                sqlx::query(&stmt).execute(&mut *tx).await?;
            }
            version += 1;
            sqlx::query(&self.sql("UPDATE things_schema SET version = ?"))
                .bind(version)
                .execute(&mut *tx)
                .await?;
            tx.commit().await?;
        }
        Ok(())
    }

    /// Upsert clause: `ON CONFLICT … DO UPDATE` or MySQL's `ON DUPLICATE KEY UPDATE`.
    fn upsert(&self, keys: &str, cols: &[&str]) -> String {
        match self.backend {
            Backend::MySql => format!(
                " ON DUPLICATE KEY UPDATE {}",
                cols.iter()
                    .map(|c| format!("{c} = VALUES({c})"))
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
            _ => format!(
                " ON CONFLICT ({keys}) DO UPDATE SET {}",
                cols.iter()
                    .map(|c| format!("{c} = excluded.{c}"))
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        }
    }

    // ---- products ----

    /// Creates or replaces a product.
    pub async fn put_product(&self, p: &Product) -> Result<()> {
        let sql = format!(
            "INSERT INTO products (product_key, name, node_type, validation, tsl, created_ms, dynamic_register) VALUES (?, ?, ?, ?, ?, ?, ?){}",
            self.upsert(
                "product_key",
                &["name", "node_type", "validation", "tsl", "dynamic_register"]
            )
        );
        sqlx::query(&self.sql(&sql))
            .bind(&p.product_key)
            .bind(&p.name)
            .bind(p.node_type.as_str())
            .bind(p.validation.as_str())
            .bind(p.model.to_json().to_string())
            .bind(p.created_ms)
            .bind(i64::from(p.dynamic_register))
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    fn product_from_row(row: &AnyRow) -> Result<Product> {
        let pk = text(row, "product_key")?;
        let node = text(row, "node_type")?;
        let validation = text(row, "validation")?;
        Ok(Product {
            name: text(row, "name")?,
            node_type: NodeType::parse(&node)
                .ok_or_else(|| StoreError::Corrupt(format!("node type {node:?}")))?,
            validation: ValidationMode::parse(&validation)
                .ok_or_else(|| StoreError::Corrupt(format!("validation {validation:?}")))?,
            model: ThingModel::from_json(&text(row, "tsl")?)
                .map_err(|e| StoreError::Corrupt(format!("thing model of {pk}: {e}")))?,
            dynamic_register: row.try_get::<i64, _>("dynamic_register")? != 0,
            created_ms: row.try_get("created_ms")?,
            product_key: pk,
        })
    }

    /// A product by key.
    pub async fn product(&self, product_key: &str) -> Result<Option<Product>> {
        let row = sqlx::query(&self.sql("SELECT product_key, name, node_type, validation, tsl, created_ms, dynamic_register FROM products WHERE product_key = ?"))
            .bind(product_key)
            .fetch_optional(&self.pool)
            .await?;
        row.as_ref().map(Self::product_from_row).transpose()
    }

    /// All products, by key.
    pub async fn products(&self) -> Result<Vec<Product>> {
        let rows = sqlx::query("SELECT product_key, name, node_type, validation, tsl, created_ms, dynamic_register FROM products ORDER BY product_key")
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(Self::product_from_row).collect()
    }

    /// Deletes a product with its devices and their shadows (history stays until retention
    /// removes it). Returns whether it existed.
    pub async fn delete_product(&self, product_key: &str) -> Result<bool> {
        let mut tx = self.pool.begin().await?;
        for table in ["devices", "shadows"] {
            sqlx::query(&self.sql(&format!("DELETE FROM {table} WHERE product_key = ?")))
                .bind(product_key)
                .execute(&mut *tx)
                .await?;
        }
        let n = sqlx::query(&self.sql("DELETE FROM products WHERE product_key = ?"))
            .bind(product_key)
            .execute(&mut *tx)
            .await?
            .rows_affected();
        tx.commit().await?;
        Ok(n > 0)
    }

    // ---- devices ----

    /// Registers a new device; [`StoreError::AlreadyExists`] if the name is taken (decided by
    /// the primary key, so two concurrent registrations cannot both succeed).
    pub async fn insert_device(&self, d: &Device) -> Result<()> {
        let sql = "INSERT INTO devices (product_key, device_name, secret, enabled, tags, created_ms, last_online_ms, last_ip, gateway) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)";
        match self
            .bind_device(&self.sql(sql), d)
            .execute(&self.pool)
            .await
        {
            Ok(_) => Ok(()),
            Err(sqlx::Error::Database(e)) if e.is_unique_violation() => Err(
                StoreError::AlreadyExists(format!("device {}/{}", d.product_key, d.device_name)),
            ),
            Err(e) => Err(e.into()),
        }
    }

    fn bind_device<'q>(
        &self,
        sql: &'q str,
        d: &'q Device,
    ) -> sqlx::query::Query<'q, sqlx::Any, sqlx::any::AnyArguments<'q>> {
        sqlx::query(sql)
            .bind(&d.product_key)
            .bind(&d.device_name)
            .bind(&d.device_secret)
            .bind(i64::from(d.enabled))
            .bind(serde_json::to_string(&d.tags).expect("string map serializes"))
            .bind(d.created_ms)
            .bind(d.last_online_ms)
            .bind(d.last_ip.clone())
            // `pk/dn`: neither may contain `/` (registry::valid_name).
            .bind(d.gateway.as_ref().map(|(pk, dn)| format!("{pk}/{dn}")))
    }

    /// Creates or replaces a device.
    pub async fn put_device(&self, d: &Device) -> Result<()> {
        let sql = format!(
            "INSERT INTO devices (product_key, device_name, secret, enabled, tags, created_ms, last_online_ms, last_ip, gateway) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?){}",
            self.upsert(
                "product_key, device_name",
                &["secret", "enabled", "tags", "last_online_ms", "last_ip", "gateway"]
            )
        );
        let sql = self.sql(&sql);
        self.bind_device(&sql, d).execute(&self.pool).await?;
        Ok(())
    }

    fn device_from_row(row: &AnyRow) -> Result<Device> {
        let tags: BTreeMap<String, String> = serde_json::from_str(&text(row, "tags")?)
            .map_err(|e| StoreError::Corrupt(format!("tags: {e}")))?;
        Ok(Device {
            product_key: text(row, "product_key")?,
            device_name: text(row, "device_name")?,
            device_secret: text(row, "secret")?,
            enabled: row.try_get::<i64, _>("enabled")? != 0,
            tags,
            created_ms: row.try_get("created_ms")?,
            last_online_ms: row.try_get("last_online_ms")?,
            last_ip: opt_text(row, "last_ip")?,
            gateway: opt_text(row, "gateway")?.and_then(|g| {
                g.split_once('/')
                    .map(|(pk, dn)| (pk.to_string(), dn.to_string()))
            }),
        })
    }

    /// A device by identity.
    pub async fn device(&self, product_key: &str, device_name: &str) -> Result<Option<Device>> {
        let row = sqlx::query(
            &self.sql("SELECT * FROM devices WHERE product_key = ? AND device_name = ?"),
        )
        .bind(product_key)
        .bind(device_name)
        .fetch_optional(&self.pool)
        .await?;
        row.as_ref().map(Self::device_from_row).transpose()
    }

    /// The devices of a product, by name.
    pub async fn devices(&self, product_key: &str) -> Result<Vec<Device>> {
        let rows = sqlx::query(
            &self.sql("SELECT * FROM devices WHERE product_key = ? ORDER BY device_name"),
        )
        .bind(product_key)
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(Self::device_from_row).collect()
    }

    /// Deletes a device and its shadow. Returns whether it existed.
    pub async fn delete_device(&self, product_key: &str, device_name: &str) -> Result<bool> {
        let mut tx = self.pool.begin().await?;
        sqlx::query(&self.sql("DELETE FROM shadows WHERE product_key = ? AND device_name = ?"))
            .bind(product_key)
            .bind(device_name)
            .execute(&mut *tx)
            .await?;
        let n =
            sqlx::query(&self.sql("DELETE FROM devices WHERE product_key = ? AND device_name = ?"))
                .bind(product_key)
                .bind(device_name)
                .execute(&mut *tx)
                .await?
                .rows_affected();
        tx.commit().await?;
        Ok(n > 0)
    }

    /// Records that a device came online (last online time and address).
    pub async fn mark_online(
        &self,
        product_key: &str,
        device_name: &str,
        now_ms: i64,
        ip: Option<&str>,
    ) -> Result<()> {
        sqlx::query(&self.sql(
            "UPDATE devices SET last_online_ms = ?, last_ip = ? WHERE product_key = ? AND device_name = ?",
        ))
        .bind(now_ms)
        .bind(ip.map(str::to_string))
        .bind(product_key)
        .bind(device_name)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// Credentials of every device, for [`crate::DeviceAuth`].
    pub async fn credentials(&self) -> Result<CredentialSnapshot> {
        let rows = sqlx::query("SELECT product_key, device_name, secret, enabled FROM devices")
            .fetch_all(&self.pool)
            .await?;
        let mut snap = CredentialSnapshot::new();
        for row in &rows {
            snap.insert(
                (text(row, "product_key")?, text(row, "device_name")?),
                DeviceCredential {
                    secret: text(row, "secret")?,
                    enabled: row.try_get::<i64, _>("enabled")? != 0,
                },
            );
        }
        Ok(snap)
    }

    // ---- shadows ----

    /// A device's shadow (empty if none was saved): its latest state.
    pub async fn shadow(&self, product_key: &str, device_name: &str) -> Result<Shadow> {
        let row = sqlx::query(
            &self.sql("SELECT doc FROM shadows WHERE product_key = ? AND device_name = ?"),
        )
        .bind(product_key)
        .bind(device_name)
        .fetch_optional(&self.pool)
        .await?;
        match row {
            None => Ok(Shadow::default()),
            Some(r) => serde_json::from_str(&text(&r, "doc")?)
                .map_err(|e| StoreError::Corrupt(format!("shadow: {e}"))),
        }
    }

    /// Saves a shadow.
    pub async fn put_shadow(
        &self,
        product_key: &str,
        device_name: &str,
        shadow: &Shadow,
    ) -> Result<()> {
        let sql = format!(
            "INSERT INTO shadows (product_key, device_name, doc, version) VALUES (?, ?, ?, ?){}",
            self.upsert("product_key, device_name", &["doc", "version"])
        );
        sqlx::query(&self.sql(&sql))
            .bind(product_key)
            .bind(device_name)
            .bind(serde_json::to_string(shadow).expect("shadow serializes"))
            .bind(i64::try_from(shadow.version).unwrap_or(i64::MAX))
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// Saves several shadows in one transaction.
    pub async fn put_shadows(&self, shadows: &[(String, String, Shadow)]) -> Result<()> {
        if shadows.is_empty() {
            return Ok(());
        }
        let mut tx = self.bulk.begin().await?;
        // Multi-row upserts: with 10,000 devices one statement per shadow held the database's
        // write lock for ~200 ms a second (docs/benchmarks.md). Keys in one batch are unique
        // (PostgreSQL refuses to update a row twice in one statement).
        for chunk in shadows.chunks(SHADOW_ROWS_PER_UPSERT) {
            let sql = self.sql(&format!(
                "INSERT INTO shadows (product_key, device_name, doc, version) VALUES {}{}",
                vec!["(?, ?, ?, ?)"; chunk.len()].join(", "),
                self.upsert("product_key, device_name", &["doc", "version"])
            ));
            let mut query = sqlx::query(&sql);
            for (pk, dn, shadow) in chunk {
                query = query
                    .bind(pk.as_str())
                    .bind(dn.as_str())
                    .bind(serde_json::to_string(shadow).expect("shadow serializes"))
                    .bind(i64::try_from(shadow.version).unwrap_or(i64::MAX));
            }
            query.execute(&mut *tx).await?;
        }
        tx.commit().await?;
        Ok(())
    }

    // ---- history ----

    /// Writes history rows in one transaction.
    pub async fn write_records(&self, records: &[Record]) -> Result<()> {
        let mut tx = self.bulk.begin().await?;
        let event_sql = self.sql("INSERT INTO events (product_key, device_name, identifier, event_type, ts, output) VALUES (?, ?, ?, ?, ?, ?)");
        let status_sql = self.sql("INSERT INTO status_changes (product_key, device_name, ts, online, reason, ip) VALUES (?, ?, ?, ?, ?, ?)");
        let call_sql = self.sql("INSERT INTO service_calls (product_key, device_name, call_id, service, input, output, status, code, started_ms, latency_ms) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)");
        // Property values are the bulk of history: grouped into one row per report (device
        // and time), in multi-row INSERTs that cost one statement per chunk, not per row.
        for chunk in group_reports(records).chunks(REPORT_ROWS_PER_INSERT) {
            let sql = self.sql(&format!(
                "INSERT INTO property_reports (product_key, device_name, ts, doc) VALUES {}",
                vec!["(?, ?, ?, ?)"; chunk.len()].join(", ")
            ));
            let mut q = sqlx::query(&sql);
            for r in chunk {
                q = q
                    .bind(r.product_key)
                    .bind(r.device_name)
                    .bind(r.time)
                    .bind(serde_json::to_string(&r.values).expect("JSON values serialize"));
            }
            q.execute(&mut *tx).await?;
        }
        for r in records {
            match r {
                Record::Property { .. } => {}
                Record::Event {
                    product_key,
                    device_name,
                    event,
                } => {
                    sqlx::query(&event_sql)
                        .bind(product_key)
                        .bind(device_name)
                        .bind(&event.identifier)
                        .bind(&event.event_type)
                        .bind(event.time)
                        .bind(event.output.to_string())
                        .execute(&mut *tx)
                        .await?;
                }
                Record::Status {
                    product_key,
                    device_name,
                    change,
                } => {
                    sqlx::query(&status_sql)
                        .bind(product_key)
                        .bind(device_name)
                        .bind(change.time)
                        .bind(i64::from(change.online))
                        .bind(&change.reason)
                        .bind(change.ip.clone())
                        .execute(&mut *tx)
                        .await?;
                }
                Record::ServiceCall {
                    product_key,
                    device_name,
                    call,
                } => {
                    sqlx::query(&call_sql)
                        .bind(product_key)
                        .bind(device_name)
                        .bind(&call.call_id)
                        .bind(&call.service)
                        .bind(call.input.to_string())
                        .bind(call.output.as_ref().map(Value::to_string))
                        .bind(&call.status)
                        .bind(call.code)
                        .bind(call.started_ms)
                        .bind(call.latency_ms)
                        .execute(&mut *tx)
                        .await?;
                }
            }
        }
        tx.commit().await?;
        Ok(())
    }

    /// Values of one property in `[from, to)`, oldest first, at most `limit`.
    pub async fn property_history(
        &self,
        product_key: &str,
        device_name: &str,
        identifier: &str,
        from: i64,
        to: i64,
        limit: i64,
    ) -> Result<Vec<PropertyPoint>> {
        let limit = usize::try_from(limit.max(0)).unwrap_or(usize::MAX);
        let mut points = Vec::new();
        self.scan_values(
            product_key,
            device_name,
            identifier,
            from,
            to,
            limit,
            usize::MAX,
            |time, value| points.push(PropertyPoint { time, value }),
        )
        .await?;
        Ok(points)
    }

    /// Numeric values of one property in `[from, to)` downsampled to buckets of `bucket_ms`
    /// (aligned to multiples of it), oldest first; empty buckets are left out. Booleans count
    /// as 0 and 1.
    ///
    /// Aggregated here rather than in SQL: the values sit in JSON documents, and the three
    /// backends' JSON functions disagree on types (MariaDB's JSON is text); a chart's range
    /// of one device is a bounded scan of its index either way.
    pub async fn property_buckets(
        &self,
        product_key: &str,
        device_name: &str,
        identifier: &str,
        from: i64,
        to: i64,
        bucket_ms: i64,
    ) -> Result<Vec<Bucket>> {
        let bucket_ms = bucket_ms.max(1);
        let mut buckets: Vec<Bucket> = Vec::new();
        self.scan_values(
            product_key,
            device_name,
            identifier,
            from,
            to,
            usize::MAX,
            MAX_BUCKET_SCAN,
            |ts, value| {
                let v = match value {
                    Value::Bool(b) => f64::from(u8::from(b)),
                    v => match v.as_f64() {
                        Some(n) => n,
                        None => return,
                    },
                };
                let start = ts.div_euclid(bucket_ms) * bucket_ms;
                match buckets.last_mut() {
                    Some(b) if b.start == start => {
                        // `avg` holds the running sum until the end.
                        b.count += 1;
                        b.avg += v;
                        b.min = b.min.min(v);
                        b.max = b.max.max(v);
                    }
                    _ => buckets.push(Bucket {
                        start,
                        count: 1,
                        avg: v,
                        min: v,
                        max: v,
                    }),
                }
            },
        )
        .await?;
        for b in &mut buckets {
            b.avg /= b.count as f64;
        }
        Ok(buckets)
    }

    /// Calls `visit(time, value)` for the values of one property in `[from, to)`, oldest
    /// first, at most `limit`; refuses (`TooLarge`) to read more than `max_rows` reports. Reads the device's reports in pages after `(ts, id)`: the text
    /// match in SQL can also hit a key nested in a struct value, so a page may hold fewer of
    /// this property's values than it has rows.
    #[allow(clippy::too_many_arguments)]
    async fn scan_values(
        &self,
        product_key: &str,
        device_name: &str,
        identifier: &str,
        from: i64,
        to: i64,
        limit: usize,
        max_rows: usize,
        mut visit: impl FnMut(i64, Value),
    ) -> Result<()> {
        let mut seen = 0;
        let mut read = 0usize;
        let mut after: Option<(i64, i64)> = None;
        while seen < limit {
            let page = (limit - seen).clamp(1, 10_000);
            let rows = self
                .reports(product_key, device_name, identifier, from, to, after, page)
                .await?;
            for row in &rows {
                let (ts, id, mut doc) = report_row(row)?;
                after = Some((ts, id));
                if let Some(value) = doc.remove(identifier) {
                    if seen == limit {
                        return Ok(());
                    }
                    seen += 1;
                    visit(ts, value);
                }
            }
            if rows.len() < page {
                break;
            }
            read += rows.len();
            if read >= max_rows {
                return Err(StoreError::TooLarge(format!(
                    "more than {max_rows} reports of {device_name}&{product_key} in the range: \
                     ask for a shorter one"
                )));
            }
        }
        Ok(())
    }

    /// A device's reports in `[from, to)` after `(ts, id)` whose document may hold
    /// `identifier`, by time; the caller parses them and checks.
    #[allow(clippy::too_many_arguments)]
    async fn reports(
        &self,
        product_key: &str,
        device_name: &str,
        identifier: &str,
        from: i64,
        to: i64,
        after: Option<(i64, i64)>,
        limit: usize,
    ) -> Result<Vec<AnyRow>> {
        let after_clause = if after.is_some() {
            " AND (ts > ? OR (ts = ? AND id > ?))"
        } else {
            ""
        };
        // `"identifier":` as JSON writes it; `!` escapes LIKE's wildcards (`_` is common in
        // identifiers), with the same meaning on all three backends.
        let key = serde_json::to_string(identifier).expect("a string serializes");
        let pattern = format!(
            "%{}:%",
            key.replace('!', "!!").replace('%', "!%").replace('_', "!_")
        );
        let sql = self.sql(&format!(
            "SELECT id, ts, doc FROM property_reports WHERE product_key = ? AND device_name = ? AND ts >= ? AND ts < ? AND doc LIKE ? ESCAPE '!'{after_clause} ORDER BY ts, id LIMIT ?"
        ));
        let mut q = sqlx::query(&sql)
            .bind(product_key.to_string())
            .bind(device_name.to_string())
            .bind(from)
            .bind(to)
            .bind(pattern);
        if let Some((ts, id)) = after {
            q = q.bind(ts).bind(ts).bind(id);
        }
        Ok(q.bind(i64::try_from(limit).unwrap_or(i64::MAX))
            .fetch_all(&self.pool)
            .await?)
    }

    /// Events of a device in `[from, to)`, optionally of one type, oldest first.
    pub async fn events(
        &self,
        product_key: &str,
        device_name: &str,
        event_type: Option<&str>,
        from: i64,
        to: i64,
        limit: i64,
    ) -> Result<Vec<StoredEvent>> {
        let type_clause = if event_type.is_some() {
            " AND event_type = ?"
        } else {
            ""
        };
        let sql = format!(
            "SELECT identifier, event_type, ts, output FROM events WHERE product_key = ? AND device_name = ? AND ts >= ? AND ts < ?{type_clause} ORDER BY ts, id LIMIT ?"
        );
        let sql = self.sql(&sql);
        let mut q = sqlx::query(&sql)
            .bind(product_key.to_string())
            .bind(device_name.to_string())
            .bind(from)
            .bind(to);
        if let Some(t) = event_type {
            q = q.bind(t.to_string());
        }
        let rows = q.bind(limit).fetch_all(&self.pool).await?;
        rows.iter()
            .map(|r| {
                Ok(StoredEvent {
                    identifier: text(r, "identifier")?,
                    event_type: text(r, "event_type")?,
                    time: r.try_get("ts")?,
                    output: json(r, "output")?,
                })
            })
            .collect()
    }

    /// Online/offline changes of a device in `[from, to)`, oldest first.
    pub async fn status_changes(
        &self,
        product_key: &str,
        device_name: &str,
        from: i64,
        to: i64,
    ) -> Result<Vec<StatusChange>> {
        let rows = sqlx::query(&self.sql(
            "SELECT ts, online, reason, ip FROM status_changes WHERE product_key = ? AND device_name = ? AND ts >= ? AND ts < ? ORDER BY ts, id",
        ))
        .bind(product_key)
        .bind(device_name)
        .bind(from)
        .bind(to)
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| {
                Ok(StatusChange {
                    time: r.try_get("ts")?,
                    online: r.try_get::<i64, _>("online")? != 0,
                    reason: text(r, "reason")?,
                    ip: opt_text(r, "ip")?,
                })
            })
            .collect()
    }

    /// Service calls to a device started in `[from, to)`, oldest first.
    pub async fn service_calls(
        &self,
        product_key: &str,
        device_name: &str,
        from: i64,
        to: i64,
    ) -> Result<Vec<ServiceCallRecord>> {
        let rows = sqlx::query(&self.sql(
            "SELECT call_id, service, input, output, status, code, started_ms, latency_ms FROM service_calls WHERE product_key = ? AND device_name = ? AND started_ms >= ? AND started_ms < ? ORDER BY started_ms, id",
        ))
        .bind(product_key)
        .bind(device_name)
        .bind(from)
        .bind(to)
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| {
                let output = opt_text(r, "output")?
                    .map(|s| serde_json::from_str(&s))
                    .transpose()
                    .map_err(|e| StoreError::Corrupt(format!("output: {e}")))?;
                Ok(ServiceCallRecord {
                    call_id: text(r, "call_id")?,
                    service: text(r, "service")?,
                    input: json(r, "input")?,
                    output,
                    status: text(r, "status")?,
                    code: r.try_get("code")?,
                    started_ms: r.try_get("started_ms")?,
                    latency_ms: r.try_get("latency_ms")?,
                })
            })
            .collect()
    }

    /// Deletes history older than `cutoff_ms` (the caller computes now − N days).
    pub async fn apply_retention(&self, cutoff_ms: i64) -> Result<RetentionReport> {
        let mut report = RetentionReport::default();
        for (table, col, slot) in [
            ("property_reports", "ts", &mut report.properties),
            ("events", "ts", &mut report.events),
            ("status_changes", "ts", &mut report.status_changes),
            ("service_calls", "started_ms", &mut report.service_calls),
        ] {
            *slot = sqlx::query(&self.sql(&format!("DELETE FROM {table} WHERE {col} < ?")))
                .bind(cutoff_ms)
                .execute(&self.pool)
                .await?
                .rows_affected();
        }
        Ok(report)
    }

    /// Closes the pool, waiting for connections to be returned.
    pub async fn close(&self) {
        self.bulk.close().await;
        self.pool.close().await;
    }
}

/// The most reports one downsampling query reads (about a month of one report a second);
/// aggregating runs in this process, so a longer range is refused rather than left to run.
const MAX_BUCKET_SCAN: usize = 3_000_000;

/// Reports per multi-row INSERT: 4 parameters each stays below every backend's parameter
/// limit (SQLite 32 766, PostgreSQL and MySQL 65 535).
const REPORT_ROWS_PER_INSERT: usize = 1_000;

/// One `property_reports` row to write: a device's values at one time.
struct ReportRow<'a> {
    product_key: &'a str,
    device_name: &'a str,
    time: i64,
    values: serde_json::Map<String, Value>,
}

/// Groups property records into reports: values of one device at one time share a row.
/// The device layer submits a report's values together, but grouping over the whole batch
/// also joins values that arrive apart. A value for an identifier the row already has (two
/// reports in the same millisecond) starts a new row, so none is lost.
fn group_reports(records: &[Record]) -> Vec<ReportRow<'_>> {
    let mut rows: Vec<ReportRow<'_>> = Vec::new();
    let mut open: HashMap<(&str, &str, i64), usize> = HashMap::new();
    for r in records {
        let Record::Property {
            product_key,
            device_name,
            identifier,
            time,
            value,
        } = r
        else {
            continue;
        };
        let key = (product_key.as_str(), device_name.as_str(), *time);
        match open.get(&key) {
            Some(&i) if !rows[i].values.contains_key(identifier) => {
                rows[i].values.insert(identifier.clone(), value.clone());
            }
            _ => {
                open.insert(key, rows.len());
                let mut values = serde_json::Map::new();
                values.insert(identifier.clone(), value.clone());
                rows.push(ReportRow {
                    product_key,
                    device_name,
                    time: *time,
                    values,
                });
            }
        }
    }
    rows
}

/// `(ts, id, values)` of a `property_reports` row.
fn report_row(row: &AnyRow) -> Result<(i64, i64, serde_json::Map<String, Value>)> {
    let doc = match json(row, "doc")? {
        Value::Object(m) => m,
        _ => {
            return Err(StoreError::Corrupt(
                "property report is not an object".into(),
            ))
        }
    };
    Ok((row.try_get("ts")?, row.try_get("id")?, doc))
}
/// Shadows per upsert statement (4 parameters each).
const SHADOW_ROWS_PER_UPSERT: usize = 200;

/// Milliseconds in `days` days, for retention cutoffs.
pub fn days_ms(days: u32) -> i64 {
    i64::from(days) * 24 * 3600 * 1000
}
