//! `thingmq product …` and `thingmq device …`: the device registry from the command line,
//! working on the device database directly (the embedded SQLite file in the data directory,
//! or `--database-url`). A running server loads the registry at start and again on SIGHUP
//! (`thingmq reload`), so changes made here take effect then (the REST API changes it live).

use anyhow::{bail, Context};
use std::path::PathBuf;
use thingmq_things::now_ms;
use thingmq_things::store::Store;
use thingmq_things::{NodeType, Product, ThingModel, ValidationMode};

/// Where the device database is.
#[derive(Debug, clap::Args)]
pub(crate) struct Database {
    /// Data directory of the embedded database (as `serve --data-dir`).
    #[arg(long, value_name = "DIR", default_value = "data")]
    data_dir: PathBuf,
    /// A database URL instead (`sqlite://…`, `postgres://…`, `mysql://…`), as
    /// `things.database_url`.
    #[arg(long, value_name = "URL")]
    database_url: Option<String>,
}

impl Database {
    async fn open(&self) -> anyhow::Result<Store> {
        let url = match &self.database_url {
            Some(url) => url.clone(),
            None => {
                std::fs::create_dir_all(&self.data_dir).with_context(|| {
                    format!("cannot create data directory {}", self.data_dir.display())
                })?;
                format!(
                    "sqlite://{}?mode=rwc",
                    self.data_dir.join("things.db").display()
                )
            }
        };
        Store::connect(&url)
            .await
            .with_context(|| "cannot open the device database".to_string())
    }
}

#[derive(Debug, clap::Subcommand)]
pub(crate) enum ProductCommand {
    /// Create or replace a product from a thing model (TSL JSON) file.
    Add {
        /// The TSL file.
        #[arg(long)]
        tsl: PathBuf,
        /// Product key (default: the TSL's `profile.productKey`).
        #[arg(long)]
        key: Option<String>,
        /// Display name (default: the product key).
        #[arg(long)]
        name: Option<String>,
        /// `strict`, `weak` or `none`.
        #[arg(long, default_value = "strict")]
        validation: String,
        /// `direct`, `gateway` or `sub-device`.
        #[arg(long, default_value = "direct")]
        node_type: String,
        /// Let gateways register devices of this product with `thing/sub/register`.
        #[arg(long)]
        dynamic_register: bool,
        #[command(flatten)]
        db: Database,
    },
    /// List products.
    List {
        #[command(flatten)]
        db: Database,
    },
}

#[derive(Debug, clap::Subcommand)]
pub(crate) enum DeviceCommand {
    /// Register a device; prints its identity and secret as JSON.
    Add {
        /// Its product's key.
        product_key: String,
        /// Its name, unique within the product.
        device_name: String,
        #[command(flatten)]
        db: Database,
    },
    /// List a product's devices (without secrets).
    List {
        /// The product's key.
        product_key: String,
        #[command(flatten)]
        db: Database,
    },
    /// Let a disabled device connect again.
    Enable {
        /// Its product's key.
        product_key: String,
        /// Its name.
        device_name: String,
        #[command(flatten)]
        db: Database,
    },
    /// Refuse a device's connections (a running server disconnects it on `thingmq reload`).
    Disable {
        /// Its product's key.
        product_key: String,
        /// Its name.
        device_name: String,
        #[command(flatten)]
        db: Database,
    },
    /// Delete a device (its history stays until retention removes it).
    Delete {
        /// Its product's key.
        product_key: String,
        /// Its name.
        device_name: String,
        #[command(flatten)]
        db: Database,
    },
}

/// Printed after a change: a running server reads the database only at start and on reload.
const RELOAD_HINT: &str =
    "a running server applies this on SIGHUP (`thingmq reload --pid-file F`) or at its next start";

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")
}

pub(crate) fn product(cmd: ProductCommand) -> anyhow::Result<()> {
    runtime()?.block_on(async move {
        match cmd {
            ProductCommand::Add {
                tsl,
                key,
                name,
                validation,
                node_type,
                dynamic_register,
                db,
            } => {
                let text = std::fs::read_to_string(&tsl)
                    .with_context(|| format!("cannot read {}", tsl.display()))?;
                let model = ThingModel::from_json(&text)
                    .with_context(|| format!("{} is not a valid thing model", tsl.display()))?;
                let Some(product_key) = key.or_else(|| model.product_key.clone()) else {
                    bail!("no product key: pass --key or set profile.productKey in the TSL");
                };
                if !thingmq_things::registry::valid_name(&product_key) {
                    bail!("product key {product_key:?}: 1-64 letters, digits or -_.@:");
                }
                let Some(validation) = ValidationMode::parse(&validation) else {
                    bail!("--validation {validation:?}: use strict, weak or none");
                };
                let Some(node_type) = NodeType::parse(&node_type) else {
                    bail!("--node-type {node_type:?}: use direct, gateway or sub-device");
                };
                let store = db.open().await?;
                let product = Product {
                    name: name.unwrap_or_else(|| product_key.clone()),
                    product_key,
                    node_type,
                    validation,
                    model,
                    dynamic_register,
                    created_ms: now_ms(),
                };
                store.put_product(&product).await?;
                println!("product {} saved; {RELOAD_HINT}", product.product_key);
                Ok(())
            }
            ProductCommand::List { db } => {
                let store = db.open().await?;
                for p in store.products().await? {
                    println!(
                        "{}\t{}\t{}\t{}",
                        p.product_key,
                        p.node_type.as_str(),
                        p.validation.as_str(),
                        p.name
                    );
                }
                Ok(())
            }
        }
    })
}

pub(crate) fn device(cmd: DeviceCommand) -> anyhow::Result<()> {
    let enable = matches!(cmd, DeviceCommand::Enable { .. });
    runtime()?.block_on(async move {
        match cmd {
            DeviceCommand::Add {
                product_key,
                device_name,
                db,
            } => {
                if !thingmq_things::registry::valid_name(&device_name) {
                    bail!("device name {device_name:?}: 1-64 letters, digits or -_.@:");
                }
                let store = db.open().await?;
                if store.product(&product_key).await?.is_none() {
                    bail!("no product {product_key:?}: add it first with `thingmq product add`");
                }
                if store.device(&product_key, &device_name).await?.is_some() {
                    bail!("device {device_name}&{product_key} exists");
                }
                let device = thingmq_things::Device::new(&product_key, &device_name, now_ms());
                store.insert_device(&device).await?;
                println!(
                    "{}",
                    serde_json::json!({
                        "productKey": device.product_key,
                        "deviceName": device.device_name,
                        "deviceSecret": device.device_secret,
                    })
                );
                Ok(())
            }
            DeviceCommand::Enable {
                product_key,
                device_name,
                db,
            }
            | DeviceCommand::Disable {
                product_key,
                device_name,
                db,
            } => {
                let enabled = enable;
                let store = db.open().await?;
                let Some(mut device) = store.device(&product_key, &device_name).await? else {
                    bail!("no device {device_name}&{product_key}");
                };
                device.enabled = enabled;
                store.put_device(&device).await?;
                let state = if enabled { "enabled" } else { "disabled" };
                println!("device {device_name}&{product_key} {state}; {RELOAD_HINT}");
                Ok(())
            }
            DeviceCommand::Delete {
                product_key,
                device_name,
                db,
            } => {
                let store = db.open().await?;
                if !store.delete_device(&product_key, &device_name).await? {
                    bail!("no device {device_name}&{product_key}");
                }
                println!("device {device_name}&{product_key} deleted; {RELOAD_HINT}");
                Ok(())
            }
            DeviceCommand::List { product_key, db } => {
                let store = db.open().await?;
                for d in store.devices(&product_key).await? {
                    println!(
                        "{}\t{}\t{}",
                        d.device_name,
                        if d.enabled { "enabled" } else { "disabled" },
                        d.last_online_ms
                            .map_or("never online".into(), |t| t.to_string())
                    );
                }
                Ok(())
            }
        }
    })
}
