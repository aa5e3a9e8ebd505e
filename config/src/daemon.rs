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
    /// How long before a stored date (an agreement's expiry, a training's lapse, a project's
    /// end) its warning goes out. Default 14 days.
    #[serde(default = "default_expiry_warning_seconds")]
    pub expiry_warning_seconds: u64,
    /// The SNS topic warned before a date passes. Default: `[safety] alert_topic_arn`.
    #[serde(default)]
    pub expiry_topic_arn: Option<String>,
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
fn default_expiry_warning_seconds() -> u64 {
    14 * 86_400
}

impl Default for DaemonConfig {
    fn default() -> Self {
        Self {
            poll_seconds: default_poll_seconds(),
            resync_seconds: default_resync_seconds(),
            metrics_listen: default_metrics_listen(),
            expiry_warning_seconds: default_expiry_warning_seconds(),
            expiry_topic_arn: None,
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

    pub fn expiry_warning(&self) -> std::time::Duration {
        std::time::Duration::from_secs(self.expiry_warning_seconds)
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
        if let Some(arn) = &self.expiry_topic_arn {
            problems.check(
                arn.starts_with("arn:aws:sns:"),
                at.key("expiry_topic_arn"),
                || format!("`{arn}` is not an SNS topic ARN"),
            );
        }
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
