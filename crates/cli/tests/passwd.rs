//! `thingmq passwd` run as a binary, with `--stdin` so no terminal is needed.

use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Command, Output, Stdio};

use thingmq_auth::PasswordFile;

/// Runs `thingmq passwd <args> <file> <user>` with `stdin` piped in.
fn passwd(args: &[&str], file: &Path, user: &str, stdin: &str) -> Output {
    let mut child = Command::new(env!("CARGO_BIN_EXE_thingmq"))
        .arg("passwd")
        .args(args)
        .arg(file)
        .arg(user)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // The process may exit before reading (e.g. on a bad file); a broken pipe is fine then.
    let _ = child.stdin.take().unwrap().write_all(stdin.as_bytes());
    child.wait_with_output().unwrap()
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn assert_ok(out: &Output) {
    assert!(out.status.success(), "stderr: {}", stderr(out));
}

fn assert_fails_with(out: &Output, needle: &str) {
    assert!(!out.status.success(), "unexpected success");
    assert!(
        stderr(out).contains(needle),
        "wanted {needle:?} in: {}",
        stderr(out)
    );
}

#[test]
fn create_add_update_and_delete_users() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("passwd");

    let out = passwd(&["-c", "--stdin"], &path, "alice", "first secret\n");
    assert_ok(&out);
    let mode = std::fs::metadata(&path).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o600, "mode {mode:o}");

    assert_ok(&passwd(&["--stdin"], &path, "bob", "bob's pw\r\n"));
    let file = PasswordFile::load(&path).unwrap();
    assert_eq!(file.users().collect::<Vec<_>>(), ["alice", "bob"]);
    assert!(file.verify("alice", b"first secret"));
    assert!(file.verify("bob", b"bob's pw"));

    assert_ok(&passwd(&["-D"], &path, "bob", ""));
    let file = PasswordFile::load(&path).unwrap();
    assert_eq!(file.users().collect::<Vec<_>>(), ["alice"]);

    assert_fails_with(&passwd(&["-D"], &path, "bob", ""), "user `bob` not found");

    // -c starts over.
    assert_ok(&passwd(&["-c", "--stdin"], &path, "bob", "carol pw\n"));
    let file = PasswordFile::load(&path).unwrap();
    assert_eq!(file.users().collect::<Vec<_>>(), ["bob"]);
    assert!(file.verify("bob", b"carol pw"));

    let leftovers: Vec<_> = std::fs::read_dir(dir.path()).unwrap().collect();
    assert_eq!(
        leftovers.len(),
        1,
        "temporary files left behind: {leftovers:?}"
    );
}

#[test]
fn errors_are_clear_and_never_echo_the_password() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("missing");
    let out = passwd(&["--stdin"], &missing, "alice", "hunter2\n");
    assert_fails_with(&out, "does not exist (use -c to create it)");

    let plain = dir.path().join("plain");
    std::fs::write(&plain, "alice:hunter2\n").unwrap();
    let out = passwd(&["--stdin"], &plain, "bob", "hunter3\n");
    assert_fails_with(&out, "line 1");
    assert_fails_with(&out, "thingmq passwd");
    for text in [
        stderr(&out),
        String::from_utf8_lossy(&out.stdout).into_owned(),
    ] {
        assert!(!text.contains("hunter"), "password echoed: {text}");
    }

    let path = dir.path().join("p");
    assert_fails_with(
        &passwd(&["-c", "--stdin"], &path, "alice", "\n"),
        "empty password",
    );
    assert!(!path.exists());
}

#[test]
fn invalid_usernames_are_refused_before_anything_is_written() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("p");
    let out = Command::new(env!("CARGO_BIN_EXE_thingmq"))
        .args(["passwd", "-c", "--stdin"])
        .arg(&path)
        .arg("a:b")
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert_fails_with(&out, "invalid username");
    assert!(!path.exists());
}

#[test]
fn without_stdin_flag_or_terminal_it_says_to_use_stdin() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("p");
    let out = Command::new(env!("CARGO_BIN_EXE_thingmq"))
        .args(["passwd", "-c"])
        .arg(&path)
        .arg("alice")
        .stdin(Stdio::null())
        .stderr(Stdio::piped())
        .output()
        .unwrap();
    assert_fails_with(&out, "--stdin");
    assert!(!path.exists());
}
