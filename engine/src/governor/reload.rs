//! Reloading the policies directory through the gate (every `.cedar` file under it, strict
//! validation, its own policy tests), then the widening gate: a set that allows anything the
//! running one does not waits for an IT admin's approval. A set that fails is reported once,
//! and the last good set keeps deciding.

use serde_json::json;

use crate::policies::{read_policy_dir, version_of, PolicyBundle};
use crate::policy_gate::load_gated;
use crate::store::ParkedKind;
use crate::widening::{parked_item_id, WideningGate, PARKED_PREFIX};

use super::Governor;

/// Whether a gated set may start deciding.
enum Verdict {
    Adopt,
    /// Parked for approval (or rejected): the running set keeps deciding.
    HeldBack,
}

impl Governor {
    /// Loads the policies directory if its content changed since the last attempt, or if a
    /// set held back for approval was approved since; `true` when a new set now decides.
    pub async fn reload_policies(&mut self) -> bool {
        let Some(dir) = self.settings.policies_dir.clone() else {
            return false;
        };
        let version = match read_policy_dir(&dir) {
            Ok((schema, sources)) => version_of(Some(&schema), &sources),
            Err(e) => return self.refuse(&e.one_line(), None),
        };
        if version == self.engine.base_bundle().version {
            self.policy_attempt = Some(version);
            self.expire_held_back(None);
            return false;
        }
        if self.policy_attempt.as_deref() == Some(version.as_str()) && !self.approved(&version) {
            return false;
        }
        self.policy_attempt = Some(version.clone());
        let bundle = match load_gated(&dir) {
            Ok(b) => b,
            Err(e) => return self.refuse(&e.one_line(), Some(&version)),
        };
        if let Verdict::HeldBack = self.widening_verdict(&bundle).await {
            return false;
        }
        self.adopt(bundle)
    }

    fn adopt(&mut self, bundle: PolicyBundle) -> bool {
        let version = bundle.version.clone();
        if let Err(e) = self.engine.set_policies(bundle) {
            // Not the files' fault (the log or store could not be written): try again on
            // the next change or SIGHUP.
            self.policy_attempt = None;
            self.metrics.reloaded(false);
            tracing::error!(error = %e, "policy reload failed; the last good policies keep deciding");
            return false;
        }
        if let Ok(store) = self.store() {
            let _ = store.decide_parked(&parked_item_id(&version), "applied", "tregov", None);
        }
        self.expire_held_back(Some(&version));
        self.metrics.reloaded(true);
        tracing::info!(policy_version = %version, "policies reloaded");
        if let Some(share) = &self.on_policies {
            share(self.engine.base_bundle());
        }
        true
    }

    /// Whether an IT admin approved the set `version` that was held back.
    fn approved(&self, version: &str) -> bool {
        self.store()
            .and_then(|s| s.parked_item(&parked_item_id(version)))
            .is_ok_and(|item| item.is_some_and(|(status, _)| status == "approved"))
    }

    /// A set held back for approval is no longer waited on once another set decides.
    fn expire_held_back(&self, keep: Option<&str>) {
        if let Ok(store) = self.store() {
            let result = match keep {
                Some(v) => store.expire_pending_except(PARKED_PREFIX, &parked_item_id(v)),
                None => store.expire_pending(PARKED_PREFIX),
            };
            if let Err(e) = result {
                tracing::warn!(error = %e, "cannot expire policy sets held back for approval");
            }
        }
    }

    async fn widening_verdict(&mut self, proposed: &PolicyBundle) -> Verdict {
        let WideningGate::Park(check) = &self.settings.widening else {
            return Verdict::Adopt;
        };
        if self.approved(&proposed.version) {
            return Verdict::Adopt;
        }
        // The base sets are compared: the store's template links are on both sides alike.
        let running = self.engine.base_bundle();
        let widenings = match check.widenings(running, proposed).await {
            Ok(w) if w.is_empty() => return Verdict::Adopt,
            Ok(w) => json!(w),
            // Fail closed: a set that cannot be shown not to widen is held back like one
            // that does.
            Err(e) => {
                json!([{ "error": format!("cannot prove the new set allows nothing more: {e}") }])
            }
        };
        let item = parked_item_id(&proposed.version);
        let body = json!({
            "change": { "kind": ParkedKind::AcceptPolicies.as_str(), "target": proposed.version },
            "from": running.version,
            "widenings": widenings,
            "affects": [],
        });
        match self
            .store()
            .and_then(|s| s.park(&item, ParkedKind::AcceptPolicies, &body))
        {
            Ok(status) => {
                tracing::warn!(
                    item = %item,
                    status = %status,
                    policy_version = %running.version,
                    widenings = %widenings,
                    "the new policy set allows more than the running one; it waits for an IT admin's approval (`tregov approve {item}`)"
                );
            }
            Err(e) => {
                self.metrics.reloaded(false);
                tracing::error!(error = %e, "cannot park a widening policy set; the running set keeps deciding");
            }
        }
        Verdict::HeldBack
    }

    fn refuse(&self, diagnostic: &str, version: Option<&str>) -> bool {
        self.metrics.reloaded(false);
        tracing::error!(
            error = %diagnostic,
            refused_version = version.unwrap_or("unreadable"),
            policy_version = %self.engine.base_bundle().version,
            "policy change rejected; the last good policies keep deciding"
        );
        false
    }
}
