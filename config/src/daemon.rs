//! `[daemon]`: how often `tregov daemon` looks again, and where it serves `/metrics`,
//! `/healthz` and `/readyz`.

use serde::Deserialize;

use crate::key_path::KeyPath;
use crate::validate::{Problems, Validate};

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DaemonConfig {
    /// Seconds between polls of the trail bucket for new log files (the fast path). Default 5.
    #[serde(default = "default_poll_seconds")]
    pub poll_seconds: u64,
    /// Seconds between full resyncs of every collector. Default 300.
    #[serde(default = "default_resync_seconds")]
    pub resync_seconds: u64,
    /// Address for `/metrics`, `/healthz` and `/readyz`. Default `127.0.0.1:9464`; another
    /// address is served only because it is written here.
    #[serde(default = "default_metrics_listen")]
    pub metrics_listen: String,
}

fn default_poll_seconds() -> u64 {
    5
}
fn default_resync_seconds() -> u64 {
    300
}
fn default_metrics_listen() -> String {
    "127.0.0.1:9464".into()
}

impl Default for DaemonConfig {
    fn default() -> Self {
        Self {
            poll_seconds: default_poll_seconds(),
            resync_seconds: default_resync_seconds(),
            metrics_listen: default_metrics_listen(),
        }
    }
}

impl DaemonConfig {
    pub fn poll(&self) -> std::time::Duration {
        std::time::Duration::from_secs(self.poll_seconds.max(1))
    }

    pub fn resync(&self) -> std::time::Duration {
        std::time::Duration::from_secs(self.resync_seconds.max(1))
    }
}

impl Validate for DaemonConfig {
    fn validate(&self, at: &KeyPath, problems: &mut Problems) {
        problems.check(self.poll_seconds >= 1, at.key("poll_seconds"), || {
            "must be at least 1".into()
        });
        problems.check(self.resync_seconds >= 1, at.key("resync_seconds"), || {
            "must be at least 1".into()
        });
        problems.check(
            self.metrics_listen.parse::<std::net::SocketAddr>().is_ok(),
            at.key("metrics_listen"),
            || {
                format!(
                    "`{}` is not an address like `127.0.0.1:9464`",
                    self.metrics_listen
                )
            },
        );
    }
}
