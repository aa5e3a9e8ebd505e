//! The TRE's OpenID Provider for the web app's tests: panva's `oidc-provider` (OpenID
//! Certified, from the npm registry; `scripts/install-oidc-provider`), on a free loopback
//! port, with one public PKCE client. Its development login form takes any login name, which
//! becomes the ID token's `sub`. Stopped when the test ends.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use crate::workspace_root;

/// The provider's start script, installed once per test run.
pub fn provider_script() -> PathBuf {
    static SCRIPT: OnceLock<PathBuf> = OnceLock::new();
    SCRIPT
        .get_or_init(|| {
            let out = Command::new(workspace_root().join("scripts/install-oidc-provider"))
                .stderr(Stdio::inherit())
                .output()
                .expect("scripts/install-oidc-provider runs");
            assert!(out.status.success(), "installing oidc-provider failed");
            PathBuf::from(String::from_utf8_lossy(&out.stdout).trim().to_string())
        })
        .clone()
}

pub struct Provider {
    child: Child,
    pub issuer: String,
}

impl Provider {
    /// Starts the provider with client `client_id` that may return to `redirect_uri`.
    pub fn start(client_id: &str, redirect_uri: &str) -> Self {
        let port = crate::free_port();
        let child = Command::new("node")
            .arg(provider_script())
            .args([&port.to_string(), client_id, redirect_uri])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("node starts");
        let provider = Self {
            child,
            issuer: format!("http://127.0.0.1:{port}"),
        };
        let discovery = format!("127.0.0.1:{port}");
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            if std::net::TcpStream::connect(&discovery).is_ok() {
                return provider;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        panic!("oidc-provider did not listen on {discovery} within 30 s");
    }

    pub fn jwks_url(&self) -> String {
        format!("{}/jwks", self.issuer)
    }
}

impl Drop for Provider {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
