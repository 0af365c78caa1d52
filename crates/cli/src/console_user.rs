//! `thingmq console-user`: manage the web console's users file (`http.users_file`):
//! `name:role:argon2id-hash` lines.

use crate::passwd::{ask_password, read_stdin_password, write_atomically};
use anyhow::{bail, Context};
use std::path::{Path, PathBuf};
use thingmq_api::keys::Role;
use thingmq_api::users::ConsoleUsers;

#[derive(Debug, clap::Args)]
pub(crate) struct ConsoleUserArgs {
    /// The users file (`http.users_file`).
    #[arg(long, short)]
    file: PathBuf,
    #[command(subcommand)]
    action: Action,
}

#[derive(Debug, clap::Subcommand)]
enum Action {
    /// Add a user or change their password and role (creates the file when missing).
    Add {
        /// The user name.
        name: String,
        /// `admin` (everything) or `viewer` (read only).
        #[arg(long, default_value = "viewer")]
        role: String,
        /// Read the password from one line of standard input (for scripts).
        #[arg(long)]
        stdin: bool,
    },
    /// Delete a user.
    Delete {
        /// The user name.
        name: String,
    },
    /// List users and roles.
    List,
}

fn load(path: &Path) -> anyhow::Result<ConsoleUsers> {
    if path.exists() {
        Ok(ConsoleUsers::load(path)?)
    } else {
        Ok(ConsoleUsers::default())
    }
}

pub(crate) fn run(args: ConsoleUserArgs) -> anyhow::Result<()> {
    match args.action {
        Action::Add { name, role, stdin } => {
            let role = Role::parse(&role)
                .with_context(|| format!("unknown role {role:?}: use admin or viewer"))?;
            thingmq_auth::validate_username(&name)?;
            // Load first, so a broken file fails before anyone types a password.
            let mut users = load(&args.file)?;
            let password = if stdin {
                read_stdin_password()?
            } else {
                ask_password()?
            };
            if password.is_empty() {
                bail!("empty password refused");
            }
            users.set(&name, role, password.as_bytes())?;
            write_atomically(&args.file, &users.to_text())?;
            eprintln!(
                "console user {name:?} ({}) saved in {}",
                role.as_str(),
                args.file.display()
            );
        }
        Action::Delete { name } => {
            let mut users = load(&args.file)?;
            if !users.remove(&name)? {
                bail!("user {name:?} not found in {}", args.file.display());
            }
            write_atomically(&args.file, &users.to_text())?;
        }
        Action::List => {
            for (name, role) in load(&args.file)?.list() {
                println!("{name}\t{}", role.as_str());
            }
        }
    }
    Ok(())
}
