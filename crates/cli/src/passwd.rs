//! `thingmq passwd`: create and edit password files (argon2id hashes).

use std::io::{BufRead, Write};
use std::path::{Path, PathBuf};

use anyhow::{bail, Context};
use thingmq_auth::{validate_username, PasswordFile};

/// Arguments of `thingmq passwd`.
#[derive(Debug, clap::Args)]
pub(crate) struct PasswdArgs {
    /// Create the file, replacing any existing one.
    #[arg(short = 'c', long = "create", conflicts_with = "delete")]
    create: bool,
    /// Delete the user instead of setting a password.
    #[arg(short = 'D', long = "delete", conflicts_with = "stdin")]
    delete: bool,
    /// Read the password from one line of standard input instead of asking twice on the
    /// terminal (for scripts).
    #[arg(long)]
    stdin: bool,
    /// The password file.
    file: PathBuf,
    /// The user to add, update or delete.
    user: String,
}

/// Runs the subcommand. Passwords are never printed, not even in errors.
pub(crate) fn run(args: PasswdArgs) -> anyhow::Result<()> {
    if args.delete {
        let mut file = load(&args.file)?;
        if !file.remove(&args.user) {
            bail!("user `{}` not found in {}", args.user, args.file.display());
        }
        return write_atomically(&args.file, &file.to_text());
    }
    validate_username(&args.user)?;
    // Load before asking, so a bad file fails before the user types anything.
    let mut file = if args.create {
        PasswordFile::default()
    } else {
        load(&args.file)?
    };
    let password = if args.stdin {
        read_stdin_password()?
    } else {
        ask_password()?
    };
    if password.is_empty() {
        bail!("empty password refused");
    }
    file.set(&args.user, password.as_bytes())?;
    write_atomically(&args.file, &file.to_text())
}

fn load(path: &Path) -> anyhow::Result<PasswordFile> {
    if !path.exists() {
        bail!(
            "password file {} does not exist (use -c to create it)",
            path.display()
        );
    }
    Ok(PasswordFile::load(path)?)
}

pub(crate) fn read_stdin_password() -> anyhow::Result<String> {
    let mut line = String::new();
    std::io::stdin()
        .lock()
        .read_line(&mut line)
        .context("cannot read the password from standard input")?;
    let password = line.strip_suffix('\n').unwrap_or(&line);
    Ok(password.strip_suffix('\r').unwrap_or(password).to_owned())
}

pub(crate) fn ask_password() -> anyhow::Result<String> {
    // Without a terminal the prompt could not be answered (or would go to some other
    // terminal than the one feeding stdin); scripts say --stdin explicitly.
    if !std::io::IsTerminal::is_terminal(&std::io::stdin()) {
        bail!("standard input is not a terminal: use --stdin to read the password from it");
    }
    let read = |prompt: &str| {
        rpassword::prompt_password(prompt)
            .context("cannot read the password from the terminal (use --stdin in scripts)")
    };
    let first = read("Password: ")?;
    let second = read("Reenter password: ")?;
    if first != second {
        bail!("passwords differ");
    }
    Ok(first)
}

/// Writes `text` to a temporary file beside `path` with mode 0600, then renames it over
/// `path`, so a crash or a full disk never leaves a half-written password file.
pub(crate) fn write_atomically(path: &Path, text: &str) -> anyhow::Result<()> {
    let dir = match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir,
        _ => Path::new("."),
    };
    let fail = || format!("cannot write {}", path.display());
    let mut tmp = tempfile::Builder::new()
        .prefix(".thingmq-passwd")
        .permissions(owner_only())
        .tempfile_in(dir)
        .with_context(fail)?;
    tmp.write_all(text.as_bytes()).with_context(fail)?;
    tmp.as_file().sync_all().with_context(fail)?;
    tmp.persist(path).map_err(|e| e.error).with_context(fail)?;
    Ok(())
}

fn owner_only() -> std::fs::Permissions {
    use std::os::unix::fs::PermissionsExt;
    std::fs::Permissions::from_mode(0o600)
}
