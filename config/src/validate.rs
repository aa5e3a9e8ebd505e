//! Validation that needs no AWS: each section checks itself and reports what is wrong at the
//! key path it is about.

use crate::key_path::KeyPath;

/// A problem with one key of the configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    pub path: KeyPath,
    pub message: String,
}

/// What validation found, in the order found.
#[derive(Debug, Default)]
pub struct Problems(Vec<Problem>);

impl Problems {
    /// Records a problem with the key at `path`.
    pub fn at(&mut self, path: KeyPath, message: impl Into<String>) {
        self.0.push(Problem {
            path,
            message: message.into(),
        });
    }

    /// Records a problem at `path` when `ok` is false.
    pub fn check(&mut self, ok: bool, path: KeyPath, message: impl FnOnce() -> String) {
        if !ok {
            self.at(path, message());
        }
    }

    pub fn into_vec(self) -> Vec<Problem> {
        self.0
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

/// A section of `tregov.toml` that checks itself. `at` is the section's own path, so a section
/// used in an array (`[[projects]]`) names the element (`projects[1]`).
pub trait Validate {
    fn validate(&self, at: &KeyPath, problems: &mut Problems);
}

impl<T: Validate> Validate for Option<T> {
    fn validate(&self, at: &KeyPath, problems: &mut Problems) {
        if let Some(section) = self {
            section.validate(at, problems);
        }
    }
}

pub fn is_account_id(s: &str) -> bool {
    s.len() == 12 && s.bytes().all(|b| b.is_ascii_digit())
}

pub fn is_role_arn(s: &str) -> bool {
    let parts: Vec<&str> = s.splitn(6, ':').collect();
    parts.len() == 6
        && parts[0] == "arn"
        && parts[2] == "iam"
        && is_account_id(parts[4])
        && parts[5].starts_with("role/")
}

/// `role_arn` keys: optional, but an IAM role ARN when given.
pub fn check_role_arn(arn: Option<&str>, path: KeyPath, problems: &mut Problems) {
    if let Some(arn) = arn {
        problems.check(is_role_arn(arn), path, || {
            format!("`{arn}` is not an IAM role ARN")
        });
    }
}

/// `account_id` keys: a 12-digit AWS account id.
pub fn check_account_id(id: &str, path: KeyPath, problems: &mut Problems) {
    problems.check(is_account_id(id), path, || {
        format!("`{id}` is not a 12-digit AWS account id")
    });
}

/// Keys that must hold some text.
pub fn check_not_empty(value: &str, path: KeyPath, problems: &mut Problems) {
    problems.check(!value.trim().is_empty(), path, || "is empty".to_string());
}

/// Fractions (`0.1` = 10 %).
pub fn check_fraction(value: f64, path: KeyPath, problems: &mut Problems) {
    problems.check((0.0..=1.0).contains(&value), path, || {
        format!("must be a fraction from 0 to 1 (0.1 = 10 %), not {value}")
    });
}
