//! `[datalake]`: the account whose Glue catalog and Lake Formation hold the datasets, and the
//! principals tregov must never revoke.

use serde::Deserialize;

use crate::key_path::KeyPath;
use crate::validate::{check_account_id, check_role_arn, is_account_id, Problems, Validate};

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DataLakeConfig {
    /// The account whose Glue catalog and Lake Formation hold the datasets.
    pub account_id: String,
    #[serde(default)]
    pub role_arn: Option<String>,
    /// Lake Formation principals whose grants tregov never plans to revoke, whatever the
    /// policies say: ETL and crawler roles, say. The data lake administrators (from the data
    /// lake settings) and tregov's own roles are protected without being listed.
    #[serde(default)]
    pub protected_principals: Vec<String>,
}

impl Validate for DataLakeConfig {
    fn validate(&self, at: &KeyPath, problems: &mut Problems) {
        check_account_id(&self.account_id, at.key("account_id"), problems);
        check_role_arn(self.role_arn.as_deref(), at.key("role_arn"), problems);
        for (i, p) in self.protected_principals.iter().enumerate() {
            problems.check(
                is_lake_formation_principal(p),
                at.key("protected_principals").index(i),
                || format!("`{p}` is not a Lake Formation principal (an IAM ARN, an account id or `IAM_ALLOWED_PRINCIPALS`)"),
            );
        }
    }
}

fn is_lake_formation_principal(p: &str) -> bool {
    p.starts_with("arn:aws") || is_account_id(p) || p == "IAM_ALLOWED_PRINCIPALS"
}
