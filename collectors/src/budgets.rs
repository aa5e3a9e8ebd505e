//! AWS Budgets of each project account, as `Tre::Budget` entities with limit, actual and
//! forecast spend in cents, the time window, and the response thresholds from `[budgets]`.

use cedar_policy::{Entity, Schema};
use serde_json::json;
use tregov_config::aws::Aws;
use tregov_config::Config;
use tregov_engine::collect::{BoxFuture, CollectContext, Collector, Listing, RunReport, Source};
use tregov_engine::events::ObservationKind;

use crate::CollectError;

pub struct Budgets {
    config: Config,
    aws: Aws,
}

impl Budgets {
    pub fn new(config: &Config, aws: &Aws) -> Self {
        Self {
            config: config.clone(),
            aws: aws.clone(),
        }
    }
}

impl Collector for Budgets {
    fn source(&self) -> Source {
        Source::Budgets
    }

    fn answers(&self) -> &'static [ObservationKind] {
        &[ObservationKind::BudgetChange]
    }

    fn run<'a>(&'a self, ctx: &'a CollectContext<'a>) -> BoxFuture<'a, RunReport> {
        Box::pin(async move {
            let thresholds = self.config.budgets.clone().unwrap_or_default();
            let mut report = RunReport::new(Source::Budgets);
            let mut listing = Listing {
                complete: true,
                ..Default::default()
            };
            let read = |p| read_account(&self.aws, p, &thresholds, ctx.schema);
            for (found, errors, ok) in crate::per_project(&self.config, read).await {
                listing.entities.extend(found);
                report.errors.extend(errors);
                listing.complete &= ok;
            }
            if let Err(e) = ctx.write(Source::Budgets, listing, &mut report) {
                report.fail(e);
            }
            report
        })
    }
}

/// One account's budgets as entities, the problems met, and whether the listing completed.
async fn read_account(
    aws: &Aws,
    project: &tregov_config::ProjectConfig,
    thresholds: &tregov_config::BudgetThresholds,
    schema: &Schema,
) -> (Vec<Entity>, Vec<String>, bool) {
    let mut entities = Vec::new();
    let mut errors = Vec::new();
    let sdk = aws.for_role(project.role_arn.as_deref()).await;
    let client = aws_sdk_budgets::Client::new(&sdk);
    let mut token = None;
    loop {
        let out = match client
            .describe_budgets()
            .account_id(&project.account_id)
            .set_next_token(token.take())
            .send()
            .await
        {
            Ok(o) => o,
            Err(e) => {
                errors.push(
                    CollectError::aws("budgets:DescribeBudgets", &project.account_id, e)
                        .to_string(),
                );
                return (entities, errors, false);
            }
        };
        for b in out.budgets() {
            let name = b.budget_name();
            let cents =
                |s: Option<&aws_sdk_budgets::types::Spend>| s.and_then(|s| money_cents(s.amount()));
            let Some(limit) = cents(b.budget_limit()) else {
                errors.push(format!(
                    "budget `{name}` of `{}`: no usable limit",
                    project.id
                ));
                continue;
            };
            let spend = b.calculated_spend();
            let value = json!({
                "uid": {"type": "Tre::Budget", "id": format!("{}/{name}", project.id)},
                "attrs": {
                    "project": {"__entity": {"type": "Tre::Project", "id": project.id}},
                    "limitCents": limit,
                    "actualCents": cents(spend.and_then(|s| s.actual_spend())).unwrap_or(0),
                    "forecastCents": cents(spend.and_then(|s| s.forecasted_spend())).unwrap_or(0),
                    "timeWindow": b.time_unit().as_str(),
                    "notifyActualPercent": thresholds.notify_actual_percent,
                    "notifyForecastPercent": thresholds.notify_forecast_percent,
                    "denyNewWorkspacesPercent": thresholds.deny_new_workspaces_percent,
                    "stopWorkspacesPercent": thresholds.stop_workspaces_percent,
                },
                "parents": []
            });
            match Entity::from_json_value(value, Some(schema)) {
                Ok(e) => entities.push(e),
                Err(e) => errors.push(format!("budget `{name}`: {e}")),
            }
        }
        token = out.next_token().map(String::from);
        if token.is_none() {
            return (entities, errors, true);
        }
    }
}

/// `"1234.5"` → 123450 cents; amounts are decimal strings. Fractions of a cent round half
/// up; anything else (exponents, text) is not a usable amount.
pub fn money_cents(amount: &str) -> Option<i64> {
    let amount = amount.trim();
    let (negative, digits) = match amount.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, amount),
    };
    let (whole, frac) = digits.split_once('.').unwrap_or((digits, ""));
    if whole.is_empty() && frac.is_empty() {
        return None;
    }
    if !whole.bytes().all(|b| b.is_ascii_digit()) || !frac.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let whole: i64 = if whole.is_empty() {
        0
    } else {
        whole.parse().ok()?
    };
    let mut frac_digits = frac.bytes().map(|b| i64::from(b - b'0'));
    let tenths = frac_digits.next().unwrap_or(0);
    let hundredths = frac_digits.next().unwrap_or(0);
    let round = i64::from(frac_digits.next().unwrap_or(0) >= 5);
    let cents = whole
        .checked_mul(100)?
        .checked_add(tenths * 10 + hundredths + round)?;
    Some(if negative { -cents } else { cents })
}

#[cfg(test)]
mod tests {
    use super::money_cents;

    #[test]
    fn decimal_amounts_become_exact_cents() {
        assert_eq!(money_cents("1000.0"), Some(100_000));
        assert_eq!(money_cents("1234.56"), Some(123_456));
        assert_eq!(money_cents("0.005"), Some(1));
        assert_eq!(money_cents("12"), Some(1200));
        assert_eq!(money_cents("-3.5"), Some(-350));
    }

    #[test]
    fn anything_else_is_not_an_amount() {
        assert_eq!(money_cents("1e3"), None);
        assert_eq!(money_cents("USD"), None);
        assert_eq!(money_cents(""), None);
        assert_eq!(money_cents("."), None);
    }
}
