//! Tests of the `trail` binary as an operator runs it: real processes, real signals, real files.
#![allow(clippy::unwrap_used, reason = "tests fail loudly on purpose")]

mod alerts;
mod archive;
mod browser;
mod cli;
mod console;
mod crash;
mod embed;
mod export;
mod flood;
mod mfa;
mod postgres;
mod sink;
mod sso;
mod stream;
mod tamper;

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

pub const PASSWORD: &str = "operator-password-1";

pub fn trail() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_trail"));
    // Trail refuses unknown TRAIL_* settings; the tests' own knobs (TRAIL_CRASH_ROUNDS) must not leak.
    for (k, _) in std::env::vars().filter(|(k, _)| k.starts_with("TRAIL_")) {
        c.env_remove(k);
    }
    c.env_remove("TRAIL_LOG").env("TRAIL_ADMIN_PASSWORD", PASSWORD).current_dir(std::env::temp_dir());
    c
}

/// A `trail serve` child process and the address it printed.
#[allow(missing_debug_implementations, reason = "a test fixture")]
pub struct Served {
    pub child: Child,
    pub base: String,
    /// Lines printed on stdout before `listening on`.
    pub banner: Vec<String>,
}

impl Served {
    pub fn start(dir: &Path, extra_env: &[(&str, &str)]) -> Self {
        Self::start_at(dir, "127.0.0.1:0", extra_env)
    }

    /// Serves at `listen` (a port picked beforehand, when something must know it first).
    #[allow(clippy::zombie_processes, reason = "Drop for Served kills and waits for the child")]
    pub fn start_at(dir: &Path, listen: &str, extra_env: &[(&str, &str)]) -> Self {
        let mut cmd = trail();
        cmd.args(["serve", "--listen", listen, "--data-dir"]).arg(dir);
        for (k, v) in extra_env {
            cmd.env(k, v);
        }
        // TRAIL_TEST_SERVER_LOGS=1 shows the servers' logs when debugging a test.
        let logs = if std::env::var_os("TRAIL_TEST_SERVER_LOGS").is_some() {
            Stdio::inherit()
        } else {
            Stdio::null()
        };
        let mut child = cmd.stdout(Stdio::piped()).stderr(logs).spawn().unwrap();
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
        let mut banner = Vec::new();
        loop {
            let line = lines.next().expect("trail serve exited before listening").unwrap();
            if let Some(addr) = line.strip_prefix("listening on ") {
                let base = addr.to_string();
                // Keep draining stdout so the child never blocks on a full pipe.
                std::thread::spawn(move || lines.for_each(drop));
                return Self { child, base, banner };
            }
            banner.push(line);
        }
    }

    pub fn signal(&mut self, sig: &str) -> std::process::ExitStatus {
        Command::new("kill").args([sig, &self.child.id().to_string()]).status().unwrap();
        for _ in 0..200 {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!("trail serve did not exit after {sig}");
    }
}

impl Drop for Served {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Creates an API key with `trail admin create-key` and returns its secret.
pub fn create_key(dir: &Path, scopes: &str) -> String {
    let out = trail()
        .args(["admin", "create-key", "--org", "default", "--scopes", scopes, "--data-dir"])
        .arg(dir)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).unwrap().trim().to_string()
}
