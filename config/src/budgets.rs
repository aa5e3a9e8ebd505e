//! `[budgets]`: the spend, in whole percent of a budget's limit, at which each response
//! starts (the TREEHOOSE defaults: notify at 80 % actual or 90 % forecast, deny new
//! workspaces at 99 %).

use serde::Deserialize;

use crate::key_path::KeyPath;
use crate::validate::{Problems, Validate};

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BudgetThresholds {
    #[serde(default = "pct80")]
    pub notify_actual_percent: i64,
    #[serde(default = "pct90")]
    pub notify_forecast_percent: i64,
    #[serde(default = "pct99")]
    pub deny_new_workspaces_percent: i64,
    #[serde(default = "pct100")]
    pub stop_workspaces_percent: i64,
}

fn pct80() -> i64 {
    80
}
fn pct90() -> i64 {
    90
}
fn pct99() -> i64 {
    99
}
fn pct100() -> i64 {
    100
}

impl Default for BudgetThresholds {
    fn default() -> Self {
        Self {
            notify_actual_percent: pct80(),
            notify_forecast_percent: pct90(),
            deny_new_workspaces_percent: pct99(),
            stop_workspaces_percent: pct100(),
        }
    }
}

impl Validate for BudgetThresholds {
    fn validate(&self, at: &KeyPath, problems: &mut Problems) {
        for (key, v) in [
            ("notify_actual_percent", self.notify_actual_percent),
            ("notify_forecast_percent", self.notify_forecast_percent),
            (
                "deny_new_workspaces_percent",
                self.deny_new_workspaces_percent,
            ),
            ("stop_workspaces_percent", self.stop_workspaces_percent),
        ] {
            problems.check((1..=1000).contains(&v), at.key(key), || {
                format!("must be 1..1000 (percent), not {v}")
            });
        }
    }
}
