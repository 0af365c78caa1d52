//! `thingmq api-key`: creates a REST API key. The key is printed once; the file keeps only
//! its SHA-256 digest, so a leaked file does not leak keys.

use anyhow::Context;
use std::io::Write;
use std::path::PathBuf;
use thingmq_api::keys::{generate, ApiKeys, Role};

#[derive(Debug, clap::Args)]
pub(crate) struct ApiKeyArgs {
    /// The key file (`http.api_keys_file`); created when missing.
    #[arg(long, short)]
    file: PathBuf,
    /// A name for the key, shown in logs (e.g. `grafana`).
    name: String,
    /// `admin` (everything) or `viewer` (read only).
    #[arg(long, default_value = "viewer")]
    role: String,
}

pub(crate) fn run(args: ApiKeyArgs) -> anyhow::Result<()> {
    let role = Role::parse(&args.role)
        .with_context(|| format!("unknown role {:?}: use admin or viewer", args.role))?;
    anyhow::ensure!(
        !args.name.is_empty() && !args.name.contains([':', '\n']),
        "the key name must be non-empty and contain no ':' or newline"
    );
    if args.file.exists() {
        // Refuse to append to a file the server could not read anyway.
        ApiKeys::load(&args.file)?;
    }
    let (key, line) = generate(&args.name, role);
    let mut file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&args.file)
        .with_context(|| format!("cannot open {}", args.file.display()))?;
    writeln!(file, "{line}").with_context(|| format!("cannot write {}", args.file.display()))?;
    println!("{key}");
    eprintln!(
        "API key {:?} ({}) added to {}; it is shown only now. Use it as `Authorization: Bearer <key>`.",
        args.name,
        role.as_str(),
        args.file.display()
    );
    Ok(())
}
