//! Shared harness for tregov's integration tests: the real `tregov` binary run in a fresh
//! data directory, with helpers to read its JSON output.

pub use tregov_collectors::testkit as cloudtrail;
pub mod browser;
pub mod faults;
pub mod governed;
pub mod http;
pub mod jwt;
pub mod moto;
pub mod oidc;
pub mod proxy;
pub mod served;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::OnceLock;

/// The workspace root (the directory holding `policies/`, `engine/`, ...).
pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from(".."))
}

/// A port free on 127.0.0.1 now (for a server that must be named before it starts).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

/// The `tregov` binary, built once per test run so tests never run a stale one.
pub fn tregov_bin() -> PathBuf {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| {
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let status = Command::new(cargo)
            // The same feature set as `cargo test --workspace`, so this is not a second build.
            .args(["build", "--quiet", "--workspace", "--bins", "--tests"])
            .current_dir(workspace_root())
            .status()
            .expect("cargo runs");
        assert!(status.success(), "building tregov failed");
        // Tests run from target/<profile>/deps/; the binary sits one level up.
        let exe = std::env::current_exe().expect("test executable path");
        let dir = exe
            .parent()
            .and_then(Path::parent)
            .expect("target profile directory");
        dir.join(format!("tregov{}", std::env::consts::EXE_SUFFIX))
    })
    .clone()
}

/// The SMT solver `policy diff|check` and the daemon's widening check run, installed once per
/// test run by `scripts/install-cvc5` (cvc5 1.3.1 from PyPI behind its SMT-LIB front-end).
pub fn cvc5() -> PathBuf {
    static CVC5: OnceLock<PathBuf> = OnceLock::new();
    CVC5.get_or_init(|| {
        let out = Command::new(workspace_root().join("scripts/install-cvc5"))
            .output()
            .expect("scripts/install-cvc5 runs");
        assert!(
            out.status.success(),
            "installing cvc5 failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        PathBuf::from(String::from_utf8_lossy(&out.stdout).trim())
    })
    .clone()
}

/// A scratch TRE: its own data directory, commands run from the workspace root.
pub struct Tre {
    pub dir: tempfile::TempDir,
}

impl Default for Tre {
    fn default() -> Self {
        Self::new()
    }
}

impl Tre {
    pub fn new() -> Self {
        Self {
            dir: tempfile::tempdir().expect("temp dir"),
        }
    }

    pub fn data_dir(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    /// Runs `tregov` with `--data-dir` set to this TRE's.
    pub fn run(&self, args: &[&str]) -> Output {
        Command::new(tregov_bin())
            .arg("--data-dir")
            .arg(self.data_dir())
            .args(args)
            .current_dir(workspace_root())
            .env_remove("TREGOV_POLICIES")
            .env("CVC5", cvc5())
            .output()
            .expect("tregov runs")
    }

    /// Imports `entities` (a JSON array) into this TRE's store with `tregov entities import`.
    pub fn import_entities(&self, entities: &serde_json::Value) {
        let path = self.dir.path().join("people.json");
        std::fs::write(&path, entities.to_string()).expect("entities");
        let out = self.run(&["entities", "import", path.to_str().expect("utf-8")]);
        assert!(out.status.success(), "import: {}", stderr(&out));
    }

    /// `tregov` with this TRE's data directory, the config file `config`, and (if given) the
    /// emulator's endpoint and credentials in the environment, ready to run or spawn.
    pub fn command(&self, emulator: Option<&moto::Moto>, config: &Path, args: &[&str]) -> Command {
        let mut cmd = Command::new(tregov_bin());
        cmd.arg("--data-dir")
            .arg(self.data_dir())
            .arg("--config")
            .arg(config)
            .args(args)
            .current_dir(workspace_root())
            .env("CVC5", cvc5());
        if let Some(m) = emulator {
            cmd.envs(m.env());
        }
        cmd
    }

    /// Runs `command(emulator, config, args)` to the end.
    pub fn run_with(&self, emulator: Option<&moto::Moto>, config: &Path, args: &[&str]) -> Output {
        self.command(emulator, config, args)
            .output()
            .expect("tregov runs")
    }

    /// Runs `tregov --output json ...` and parses stdout.
    pub fn json(&self, args: &[&str]) -> (i32, serde_json::Value) {
        let mut all = vec!["--output", "json"];
        all.extend_from_slice(args);
        let out = self.run(&all);
        let v = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
            panic!(
                "stdout is not JSON ({e}):\n{}\nstderr:\n{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            )
        });
        (out.status.code().unwrap_or(-1), v)
    }

    /// Loads the sample TRE (the demo) into the store.
    pub fn with_sample(self) -> Self {
        let out = self.run(&["demo"]);
        assert!(out.status.success(), "demo failed: {}", stderr(&out));
        self
    }

    /// The decision log's segment files, in order.
    pub fn segments(&self) -> Vec<PathBuf> {
        let mut v: Vec<PathBuf> = std::fs::read_dir(self.data_dir().join("log"))
            .expect("log dir")
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| {
                p.file_name()
                    .is_some_and(|n| n.to_string_lossy().starts_with("segment-"))
            })
            .collect();
        v.sort();
        v
    }
}

pub fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).to_string()
}

pub fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).to_string()
}

/// A copy of the default policies in a scratch directory, to edit in a test.
pub fn copy_policies(to: &Path) -> PathBuf {
    let dst = to.join("policies");
    std::fs::create_dir_all(&dst).expect("create policies dir");
    for entry in std::fs::read_dir(workspace_root().join("policies")).expect("policies dir") {
        let p = entry.expect("entry").path();
        let name = p
            .file_name()
            .map(|n| n.to_string_lossy().to_string())
            .unwrap_or_default();
        if name.ends_with(".cedar") || name.ends_with(".cedarschema") {
            std::fs::copy(&p, dst.join(&name)).expect("copy policy");
        }
    }
    dst
}

/// `copy_policies`, with the policy tests (`policies/tests/`) beside them: the gate a reload
/// passes runs them.
pub fn copy_policies_with_tests(to: &Path) -> PathBuf {
    let dst = copy_policies(to);
    copy_tree(&workspace_root().join("policies/tests"), &dst.join("tests"));
    dst
}

fn copy_tree(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).expect("create dir");
    for entry in std::fs::read_dir(from).expect("read dir") {
        let p = entry.expect("entry").path();
        let target = to.join(p.file_name().expect("name"));
        if p.is_dir() {
            copy_tree(&p, &target);
        } else {
            std::fs::copy(&p, &target).expect("copy");
        }
    }
}

/// A number from the environment (trial counts, seeds), or `default`.
pub fn env_number(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}
