//! `thingmq console-user` run as a binary, with `--stdin` so no terminal is needed.

use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Command, Output, Stdio};
use thingmq_api::keys::Role;
use thingmq_api::users::ConsoleUsers;

fn console_user(file: &Path, args: &[&str], stdin: &str) -> Output {
    let mut child = Command::new(env!("CARGO_BIN_EXE_thingmq"))
        .args(["console-user", "--file"])
        .arg(file)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // The process may exit before reading; a broken pipe is fine then.
    let _ = child.stdin.take().unwrap().write_all(stdin.as_bytes());
    child.wait_with_output().unwrap()
}

fn ok(out: &Output) -> String {
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn fails_with(out: &Output, needle: &str) {
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "unexpected success");
    assert!(err.contains(needle), "wanted {needle:?} in: {err}");
}

#[test]
fn users_are_added_listed_changed_and_deleted() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("console-users");
    ok(&console_user(
        &file,
        &["add", "alice", "--role", "admin", "--stdin"],
        "s3cret\n",
    ));
    ok(&console_user(
        &file,
        &["add", "bob", "--stdin"],
        "builder\n",
    ));
    let mode = std::fs::metadata(&file).unwrap().permissions().mode();
    assert_eq!(mode & 0o077, 0, "only the owner may read hashes: {mode:o}");
    assert_eq!(
        ok(&console_user(&file, &["list"], "")),
        "alice\tadmin\nbob\tviewer\n"
    );

    let users = ConsoleUsers::load(&file).unwrap();
    assert_eq!(users.verify("alice", b"s3cret"), Some(Role::Admin));
    assert_eq!(users.verify("bob", b"builder"), Some(Role::Viewer));
    assert!(!std::fs::read_to_string(&file).unwrap().contains("s3cret"));

    ok(&console_user(
        &file,
        &["add", "bob", "--role", "admin", "--stdin"],
        "new\n",
    ));
    let users = ConsoleUsers::load(&file).unwrap();
    assert_eq!(users.verify("bob", b"new"), Some(Role::Admin));
    ok(&console_user(&file, &["delete", "alice"], ""));
    assert_eq!(ok(&console_user(&file, &["list"], "")), "bob\tadmin\n");
    fails_with(&console_user(&file, &["delete", "alice"], ""), "not found");
}

#[test]
fn bad_input_is_refused_before_anything_is_written() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("console-users");
    fails_with(
        &console_user(&file, &["add", "a", "--role", "root", "--stdin"], "x\n"),
        "unknown role",
    );
    fails_with(
        &console_user(&file, &["add", "a:b", "--stdin"], "x\n"),
        "`:`",
    );
    fails_with(
        &console_user(&file, &["add", "a", "--stdin"], "\n"),
        "empty password",
    );
    assert!(!file.exists());
    std::fs::write(&file, "alice:admin:plaintext\n").unwrap();
    fails_with(
        &console_user(&file, &["add", "bob", "--stdin"], "x\n"),
        "line 1",
    );
}
