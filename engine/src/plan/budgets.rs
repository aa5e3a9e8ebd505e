//! Budget responses: the notifications a budget calls for, the deny-new-workspaces policy on
//! a project's environment-management role (put or lifted), and stopping its workspaces.

use std::collections::BTreeMap;
use std::sync::Arc;

use cedar_policy::{Entity, EntityUid};
use serde_json::{json, Value};

use super::actual::ActualState;
use super::attrs::attr_uid;
use super::decider::{item, materialize, Decider, Verdict};
use super::index::GraphIndex;
use super::{role_parts, Change, Inputs, PlanItem, PlanSettings, BUDGET_DENY_POLICY};

/// A budget and one of its response decisions.
type BudgetDecision = (EntityUid, Arc<Verdict>);

/// Per project: its account and each budget's deny-new-workspaces decision.
type DenyByProject = BTreeMap<String, (String, Vec<BudgetDecision>)>;

/// A budget with the project it belongs to.
struct Budget {
    uid: EntityUid,
    project: EntityUid,
    project_id: String,
    /// The project's account, empty when the settings do not name one.
    account: String,
}

/// What budget planning reads.
struct BudgetPlanner<'a> {
    /// The service that asks for budget responses.
    service: EntityUid,
    index: &'a GraphIndex,
    actual: &'a ActualState,
    settings: &'a PlanSettings,
}

/// Plans every budget's responses, then each project's deny-new-workspaces policy.
pub(super) fn plan_budgets(inputs: &Inputs, decider: &mut Decider, items: &mut Vec<PlanItem>) {
    let Ok(service) = crate::entities::uid_from_parts("Tre::Service", "tregov") else {
        return;
    };
    let planner = BudgetPlanner {
        service,
        index: inputs.index,
        actual: inputs.actual,
        settings: inputs.settings,
    };
    let mut deny_by_project = DenyByProject::new();
    for b in &inputs.index.budgets {
        planner.budget_responses(b, decider, &mut deny_by_project, items);
    }
    for (project_id, (account, decisions)) in &deny_by_project {
        items.extend(planner.deny_change(project_id, account, decisions, decider));
    }
}

impl BudgetPlanner<'_> {
    fn budget_responses(
        &self,
        b: &Entity,
        decider: &mut Decider,
        deny_by_project: &mut DenyByProject,
        items: &mut Vec<PlanItem>,
    ) {
        let uid = b.uid();
        let Some(project) = attr_uid(b, "project") else {
            return;
        };
        let project_id = project.id().unescaped().to_string();
        let account = self.settings.account_of(&project);
        let budget = Budget {
            uid,
            project,
            project_id,
            account,
        };

        items.extend(self.notification(&budget, decider));

        // A project's budgets are weighed together below: one over its threshold is enough.
        let deny = decider.decide(&self.service, "budgetDenyNewWorkspaces", &budget.uid);
        deny_by_project
            .entry(budget.project_id.clone())
            .or_insert_with(|| (budget.account.clone(), Vec::new()))
            .1
            .push((budget.uid.clone(), deny));

        self.stops(&budget, decider, items);
    }

    /// The notification the budget calls for, unless it was already sent this period.
    fn notification(&self, budget: &Budget, decider: &mut Decider) -> Option<PlanItem> {
        let Budget {
            uid, project_id, ..
        } = budget;
        let notify = decider.decide(&self.service, "budgetNotify", uid);
        if !notify.allows() {
            return None;
        }
        let mark = format!(
            "budget-notify/{}/{}",
            uid.id().unescaped(),
            self.settings.period
        );
        if self.actual.marks.contains(&mark) {
            return None;
        }
        let Some(topic) = self.settings.notify_topics.get(project_id) else {
            decider.warnings.push(format!(
                "budget `{uid}` calls for a notification but project `{project_id}` has no `notify_topic`"
            ));
            return None;
        };
        Some(item(
            Change::Notify {
                account: budget.account.clone(),
                topic_arn: topic.clone(),
                subject: format!("TRE budget alert: project {project_id}"),
                message: format!(
                    "Spend on project {project_id} has reached a notification threshold ({}).",
                    notify.reasons().join(", ")
                ),
                mark,
            },
            format!("budget `{uid}` reached a notification threshold"),
            vec![notify.justification()],
        ))
    }

    /// Stops of the project's running workspaces, when the budget calls for them.
    fn stops(&self, budget: &Budget, decider: &mut Decider, items: &mut Vec<PlanItem>) {
        let stop = decider.decide(&self.service, "budgetStopWorkspaces", &budget.uid);
        if !stop.allows() {
            return;
        }
        for w in &self.index.workspaces {
            if attr_uid(w, "project").as_ref() != Some(&budget.project) {
                continue;
            }
            let Some(change) = super::lifetimes::stop_change(w, self.settings) else {
                continue;
            };
            items.push(item(
                change,
                format!(
                    "budget `{}` reached the threshold for stopping workspaces",
                    budget.uid
                ),
                vec![stop.justification()],
            ));
        }
    }

    /// The project's deny-new-workspaces policy: put when any budget is over its threshold,
    /// deleted when every one is known to be back under.
    fn deny_change(
        &self,
        project_id: &str,
        account: &str,
        decisions: &[BudgetDecision],
        decider: &mut Decider,
    ) -> Option<PlanItem> {
        let breached: Vec<&(EntityUid, Arc<Verdict>)> =
            decisions.iter().filter(|(_, d)| d.allows()).collect();
        // Lifted only when every budget of the project is known to be back under.
        let all_under = decisions.iter().all(|(_, d)| d.denies());
        let Some(env_role) = self.settings.environment_roles.get(project_id) else {
            if let Some((uid, _)) = breached.first() {
                decider.warnings.push(format!(
                    "budget `{uid}` calls for denying new workspaces but project `{project_id}` has no `environment_role_arn`"
                ));
            }
            return None;
        };
        let present = self
            .actual
            .roles
            .get(env_role)
            .is_some_and(|r| r["inlinePolicies"].get(BUDGET_DENY_POLICY).is_some());
        let env_account = role_parts(env_role)
            .map(|(a, _)| a.to_string())
            .unwrap_or_else(|| account.to_string());
        if !breached.is_empty() && !present {
            let names: Vec<String> = breached.iter().map(|(u, _)| format!("`{u}`")).collect();
            Some(item(
                Change::PutRolePolicy {
                    account: env_account,
                    role_arn: env_role.clone(),
                    policy_name: BUDGET_DENY_POLICY.into(),
                    document: budget_deny_document(),
                },
                format!(
                    "budget {} reached the threshold for denying new workspaces",
                    names.join(", ")
                ),
                materialize(breached.iter().map(|(_, d)| d)),
            ))
        } else if all_under && present {
            Some(item(
                Change::DeleteRolePolicy {
                    account: env_account,
                    role_arn: env_role.clone(),
                    policy_name: BUDGET_DENY_POLICY.into(),
                },
                format!(
                    "every budget of project `{project_id}` is back under the threshold for denying new workspaces"
                ),
                materialize(decisions.iter().map(|(_, d)| d)),
            ))
        } else {
            None
        }
    }
}

pub(super) fn budget_deny_document() -> Value {
    json!({"Version": "2012-10-17", "Statement": [{
        "Sid": "TregovBudgetDenyNewWorkspaces",
        "Effect": "Deny",
        "Action": ["servicecatalog:ProvisionProduct"],
        "Resource": ["*"]
    }]})
}
