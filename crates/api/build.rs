//! Builds the web console (`web/`, Vite) into `$OUT_DIR/web`, which `src/console.rs` embeds.
//!
//! Runs `npm ci` when `web/node_modules` is missing or older than `package-lock.json`, then
//! `npm run build`. Cargo reruns this only when the console's sources change. Nothing built
//! is checked in, so the binary always serves the console its sources describe.

use std::path::{Path, PathBuf};
use std::process::Command;

fn main() {
    let manifest = PathBuf::from(std::env::var_os("CARGO_MANIFEST_DIR").expect("cargo sets it"));
    let web = manifest.join("../../web");
    let web = web.canonicalize().unwrap_or(web);
    let out = PathBuf::from(std::env::var_os("OUT_DIR").expect("cargo sets it")).join("web");
    for watched in [
        "src",
        "index.html",
        "package.json",
        "package-lock.json",
        "vite.config.ts",
        "tsconfig.json",
    ] {
        println!("cargo:rerun-if-changed={}", web.join(watched).display());
    }
    if !web.join("package.json").exists() {
        fail(&format!(
            "the console sources are missing: {} has no package.json",
            web.display()
        ));
    }
    let installed = web.join("node_modules/.package-lock.json");
    if modified(&installed) < modified(&web.join("package-lock.json")) {
        npm(&web, &["ci", "--no-audit", "--no-fund"]);
    }
    npm(
        &web,
        &[
            "run",
            "build",
            "--",
            "--outDir",
            out.to_str().expect("OUT_DIR is UTF-8"),
            "--emptyOutDir",
        ],
    );
    if !out.join("index.html").exists() {
        fail("`npm run build` produced no index.html");
    }
}

fn modified(path: &Path) -> Option<std::time::SystemTime> {
    std::fs::metadata(path).and_then(|m| m.modified()).ok()
}

fn npm(dir: &Path, args: &[&str]) {
    let status = Command::new("npm").args(args).current_dir(dir).status();
    match status {
        Ok(s) if s.success() => {}
        Ok(s) => fail(&format!("`npm {}` in {} failed ({s})", args.join(" "), dir.display())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => fail(
            "npm was not found: building thingmq builds its web console, which needs Node.js 20.19+ and npm \
             (Debian: apt-get install nodejs npm)",
        ),
        Err(e) => fail(&format!("cannot run npm: {e}")),
    }
}

fn fail(message: &str) -> ! {
    eprintln!("error: {message}");
    panic!("{message}");
}
