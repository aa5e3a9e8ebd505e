//! Loading, naming and validating a policy set.
//!
//! Policies are plain `.cedar` files. Each policy is named by its `@id("...")` annotation,
//! which becomes its Cedar `PolicyId`, so reasons and errors speak the names compliance teams
//! wrote. The set is validated in strict mode against the schema before anything decides with
//! it: a set that fails to load or validate is never used (fail closed).

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::path::Path;
use std::str::FromStr;

use cedar_policy::{
    ActionConstraint, Effect, EntityUid, PolicyId, PolicySet, Schema, ValidationMode, Validator,
};
use miette::Diagnostic;
use serde::Serialize;
use sha2::{Digest, Sha256};

use crate::error::{EngineError, Result, SourceProblem};
use crate::position::line_col;

/// A named text: a policy file, or the schema.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct PolicySource {
    pub name: String,
    pub text: String,
}

/// Where a policy came from and what it says about itself.
#[derive(Debug, Clone, Serialize)]
pub struct PolicyMeta {
    pub id: String,
    pub effect: String,
    pub kind: PolicyKind,
    /// For a link: the template it links.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub template: Option<String>,
    pub file: String,
    pub line: usize,
    pub column: usize,
    pub annotations: BTreeMap<String, String>,
}

/// A loaded, named, validated policy set with its schema.
#[derive(Debug, Clone)]
pub struct PolicyBundle {
    /// Absent only when deciding over ad-hoc files without a schema (nothing is validated
    /// then, as with the Cedar CLI).
    pub schema: Option<Schema>,
    pub schema_source: Option<PolicySource>,
    pub sources: Vec<PolicySource>,
    pub set: PolicySet,
    pub meta: BTreeMap<String, PolicyMeta>,
    /// SHA-256 over the schema and every policy file: the policy-set version.
    pub version: String,
    /// Entities named literally in policies (`Tre::Role::"ITAdmin"`): part of every slice.
    pub literal_entities: Vec<EntityUid>,
    pub warnings: Vec<String>,
    /// For each action of the schema, the policies whose action scope can match it.
    by_action: HashMap<EntityUid, PolicySet>,
}

/// How strictly ids are required when loading policy files.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Naming {
    /// Every policy and template must carry `@id`; ids must be unique across files. For the
    /// policies tregov governs with, whose names are what reasons, the log and `why` show.
    RequireIdAnnotation,
    /// The Cedar CLI's convention, for files a user hands to a command: `@id` names a policy
    /// when it has one, else its position (`policy0`, `policy1`, ... counted across the
    /// files in order, so one file is named exactly as Cedar names it).
    CedarCli,
}

/// What a named entry of the set is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum PolicyKind {
    Policy,
    /// A template: it decides nothing until linked.
    Template,
    /// A template linked to a principal and/or resource; `template` names its template.
    Link,
}

impl PolicyBundle {
    /// Reads `tre.cedarschema` (or the only `.cedarschema` file) and every `.cedar` file
    /// under `dir` (subdirectories included, `tests/` not), sorted by path.
    pub fn load_dir(dir: &Path) -> Result<Self> {
        let (schema, sources) = read_policy_dir(dir)?;
        Self::from_sources(Some(schema), sources)
    }

    /// Loads files a user hands to a command as the Cedar CLI reads them: `path`, a policies
    /// directory or a single `.cedar` file, with an explicit schema file if given (else the
    /// directory's own schema, if it has one) and a template-linked file if given. Policies
    /// without `@id` are named `policy0`, `policy1`, ...
    pub fn load_path(path: &Path, schema: Option<&Path>, links: Option<&Path>) -> Result<Self> {
        let explicit = schema.map(read_source).transpose()?;
        let (schema, mut sources) = if path.is_dir() {
            let (dir_schema, sources) = read_policy_dir_optional_schema(path)?;
            (explicit.or(dir_schema), sources)
        } else {
            (explicit, vec![read_source(path)?])
        };
        if let Some(links) = links {
            sources.push(read_source(links)?);
        }
        Self::from_sources_named(schema, sources, Naming::CedarCli)
    }

    /// The default policies and schema compiled into the binary.
    pub fn embedded() -> Result<Self> {
        Self::from_sources(Some(embedded_schema()), embedded_sources())
    }

    /// The policies tregov governs with: every policy and template named by `@id`.
    pub fn from_sources(
        schema_source: Option<PolicySource>,
        sources: Vec<PolicySource>,
    ) -> Result<Self> {
        Self::from_sources_named(schema_source, sources, Naming::RequireIdAnnotation)
    }

    /// Cedar sources and links files (`links::is_links_source`) into one validated set.
    pub fn from_sources_named(
        schema_source: Option<PolicySource>,
        sources: Vec<PolicySource>,
        naming: Naming,
    ) -> Result<Self> {
        let schema = schema_source.as_ref().map(parse_schema).transpose()?;
        let cedar: Vec<PolicySource> = sources
            .iter()
            .filter(|s| !crate::links::is_links_source(s))
            .cloned()
            .collect();
        let (mut set, mut meta) = parse_policy_files(&cedar, naming)?;
        crate::links::link_all(&mut set, &mut meta, &sources)?;
        let warnings = match &schema {
            Some(schema) => validate_strict(schema, &set, &meta, &sources)?,
            None => Vec::new(),
        };
        let version = version_of(schema_source.as_ref(), &sources);
        let literal_entities = literal_entities(&set);
        let by_action = match &schema {
            Some(schema) => slice_by_action(&set, schema)?,
            None => HashMap::new(),
        };
        Ok(Self {
            schema,
            schema_source,
            sources,
            set,
            meta,
            version,
            literal_entities,
            warnings,
            by_action,
        })
    }

    /// The policies that can apply to `action`. Leaving out a policy whose action scope
    /// cannot match changes no decision, reason or error: Cedar evaluates the scope before
    /// the conditions, and a scope never errors.
    pub fn policies_for(&self, action: &EntityUid) -> &PolicySet {
        self.by_action.get(action).unwrap_or(&self.set)
    }

    pub fn meta(&self, id: &str) -> Option<&PolicyMeta> {
        self.meta.get(id)
    }
}

pub fn embedded_schema() -> PolicySource {
    PolicySource {
        name: tregov_policies::SCHEMA_FILE.to_string(),
        text: tregov_policies::SCHEMA.to_string(),
    }
}

pub fn embedded_sources() -> Vec<PolicySource> {
    tregov_policies::DEFAULT_POLICIES
        .iter()
        .map(|(name, text)| PolicySource {
            name: (*name).to_string(),
            text: (*text).to_string(),
        })
        .collect()
}

/// The content-addressed version of a policy set: SHA-256 over the schema and each file
/// (name and text, length-prefixed so no two different sets hash alike).
pub fn version_of(schema: Option<&PolicySource>, sources: &[PolicySource]) -> String {
    let mut hasher = Sha256::new();
    fn feed(hasher: &mut Sha256, s: &PolicySource) {
        for part in [&s.name, &s.text] {
            hasher.update((part.len() as u64).to_be_bytes());
            hasher.update(part.as_bytes());
        }
    }
    match schema {
        Some(s) => feed(&mut hasher, s),
        None => hasher.update(u64::MAX.to_be_bytes()),
    }
    let mut sorted: Vec<&PolicySource> = sources.iter().collect();
    sorted.sort_by(|a, b| a.name.cmp(&b.name));
    for s in sorted {
        feed(&mut hasher, s);
    }
    hex::encode(hasher.finalize())
}

/// Reads a policies directory: its schema file and its `.cedar` files.
pub fn read_policy_dir(dir: &Path) -> Result<(PolicySource, Vec<PolicySource>)> {
    let (schema, sources) = read_policy_dir_optional_schema(dir)?;
    let schema = schema.ok_or_else(|| {
        EngineError::Request(format!(
            "no schema in `{}`: expected `{}` (or exactly one `.cedarschema` file)",
            dir.display(),
            tregov_policies::SCHEMA_FILE
        ))
    })?;
    Ok((schema, sources))
}

fn read_policy_dir_optional_schema(
    dir: &Path,
) -> Result<(Option<PolicySource>, Vec<PolicySource>)> {
    let mut cedar_files = Vec::new();
    let mut schema_files = Vec::new();
    walk_policy_dir(dir, true, &mut cedar_files, &mut schema_files)?;
    cedar_files.sort();
    schema_files.sort();
    let schema_path = schema_files
        .iter()
        .find(|p| {
            p.file_name()
                .is_some_and(|n| n == tregov_policies::SCHEMA_FILE)
        })
        .or_else(|| {
            if schema_files.len() == 1 {
                schema_files.first()
            } else {
                None
            }
        });
    let schema = schema_path.map(|p| read_source(p)).transpose()?;
    let sources = cedar_files
        .iter()
        .map(|p| read_source(p))
        .collect::<Result<Vec<_>>>()?;
    if sources.is_empty() {
        return Err(EngineError::Request(format!(
            "no `.cedar` policy files in `{}`",
            dir.display()
        )));
    }
    Ok((schema, sources))
}

/// The policy and schema files under `dir`, in every subdirectory: what a watcher of the
/// directory sees change is what is loaded, so a file moved into a subdirectory still
/// decides. Skipped: hidden entries, and the top-level `tests/` and `properties/` directories
/// (policy tests hold deliberately broken policies of their own; properties are Cedar that
/// states what the policies must keep, never Cedar that decides).
fn walk_policy_dir(
    dir: &Path,
    top: bool,
    cedar_files: &mut Vec<std::path::PathBuf>,
    schema_files: &mut Vec<std::path::PathBuf>,
) -> Result<()> {
    let entries = std::fs::read_dir(dir).map_err(|e| EngineError::io(dir, e))?;
    for entry in entries {
        let entry = entry.map_err(|e| EngineError::io(dir, e))?;
        let path = entry.path();
        let name = entry.file_name().to_string_lossy().to_string();
        if name.starts_with('.') {
            continue;
        }
        if path.is_dir() {
            if !(top && (name == POLICY_TESTS_DIR || name == POLICY_PROPERTIES_DIR)) {
                walk_policy_dir(&path, false, cedar_files, schema_files)?;
            }
        } else if name.ends_with(".cedar") {
            cedar_files.push(path);
        } else if name.ends_with(".cedarschema") {
            schema_files.push(path);
        }
    }
    Ok(())
}

/// The directory of a policies directory that holds its policy tests.
pub const POLICY_TESTS_DIR: &str = "tests";

/// The directory of a policies directory that holds the properties its policies must keep
/// (`tregov policy check`).
pub const POLICY_PROPERTIES_DIR: &str = "properties";

pub fn read_source(path: &Path) -> Result<PolicySource> {
    let text = std::fs::read_to_string(path).map_err(|e| EngineError::io(path, e))?;
    Ok(PolicySource {
        name: path.display().to_string(),
        text,
    })
}

/// Parses a schema in Cedar's human format, or its JSON format when the file name ends in
/// `.json`.
pub fn parse_schema(src: &PolicySource) -> Result<Schema> {
    if src.name.ends_with(".json") {
        return Schema::from_json_str(&src.text)
            .map_err(|e| diagnostic_problem(&src.name, &src.text, &e, "invalid schema").into());
    }
    match Schema::from_cedarschema_str(&src.text) {
        Ok((schema, _warnings)) => Ok(schema),
        Err(e) => Err(diagnostic_problem(&src.name, &src.text, &e, "invalid schema").into()),
    }
}

/// Turns any Cedar diagnostic about `text` into a problem pointing at its first label.
pub fn diagnostic_problem(
    file: &str,
    text: &str,
    diag: &dyn Diagnostic,
    fallback_label: &str,
) -> SourceProblem {
    let label = diag.labels().and_then(|mut l| l.next());
    let (offset, len, label_text) = match label {
        Some(l) => (
            l.offset(),
            l.len(),
            l.label().unwrap_or(fallback_label).to_string(),
        ),
        None => (0, 0, fallback_label.to_string()),
    };
    let mut message = diag.to_string();
    if let Some(source) = std::error::Error::source(diag) {
        let inner = source.to_string();
        if !message.contains(&inner) {
            message = format!("{message}: {inner}");
        }
    }
    let mut p = SourceProblem::at(file, text, offset, len, message, label_text);
    if let Some(help) = diag.help() {
        p = p.with_help(help.to_string());
    }
    p
}

/// Parses policy files into one set, naming each policy and template, and records where
/// each one is.
pub fn parse_policy_files(
    sources: &[PolicySource],
    naming: Naming,
) -> Result<(PolicySet, BTreeMap<String, PolicyMeta>)> {
    let mut set = PolicySet::new();
    let mut meta: BTreeMap<String, PolicyMeta> = BTreeMap::new();
    let mut problems = Vec::new();
    let mut positional = 0usize;
    for src in sources {
        let parsed = match PolicySet::from_str(&src.text) {
            Ok(p) => p,
            Err(errs) => {
                for e in errs.iter() {
                    problems.push(diagnostic_problem(&src.name, &src.text, e, "here"));
                }
                continue;
            }
        };
        let mut cursor = 0usize;
        for item in in_file_order(&parsed) {
            let text = item.text();
            let offset = src
                .text
                .get(cursor..)
                .and_then(|rest| rest.find(text.trim()))
                .map_or(cursor, |i| cursor + i);
            cursor = offset + text.trim().len().max(1);
            let at = |message: String, label: &str| {
                SourceProblem::at(
                    &src.name,
                    &src.text,
                    offset,
                    text.trim().len().min(40),
                    message,
                    label,
                )
            };
            let given = item.annotation("id").filter(|id| !id.trim().is_empty());
            let id = match (naming, given) {
                (_, Some(id)) => id.to_string(),
                (Naming::CedarCli, None) => format!("policy{positional}"),
                (Naming::RequireIdAnnotation, None) => {
                    problems.push(
                        at(
                            "policy has no `@id` annotation".into(),
                            "every policy needs a name",
                        )
                        .with_help("add `@id(\"a-unique-name\")` above the policy"),
                    );
                    continue;
                }
            };
            positional += 1;
            if let Some(previous) = meta.get(&id) {
                problems.push(at(
                    format!(
                        "duplicate policy id `{id}`: already used at {}:{}",
                        previous.file, previous.line
                    ),
                    "second policy with this id",
                ));
                continue;
            }
            let pos = line_col(&src.text, offset);
            let added = item.add_to(&mut set, PolicyId::new(id.clone()));
            if let Err(e) = added {
                problems.push(at(e, "here"));
                continue;
            }
            meta.insert(
                id.clone(),
                PolicyMeta {
                    id,
                    effect: item.effect(),
                    kind: item.kind(),
                    template: None,
                    file: src.name.clone(),
                    line: pos.line,
                    column: pos.column,
                    annotations: item.annotations(),
                },
            );
        }
    }
    if problems.is_empty() {
        Ok((set, meta))
    } else {
        Err(EngineError::problems(
            format!("{} problem(s) in the policy files", problems.len()),
            problems,
        ))
    }
}

/// A static policy or a template, as a file holds them.
enum Parsed<'a> {
    Policy(&'a cedar_policy::Policy),
    Template(&'a cedar_policy::Template),
}

/// A file's policies and templates in the order it holds them: Cedar numbers both
/// `policy0`, `policy1`, ... as it parses.
fn in_file_order(parsed: &PolicySet) -> Vec<Parsed<'_>> {
    let index = |id: &PolicyId| {
        id.to_string()
            .trim_start_matches("policy")
            .parse::<usize>()
            .unwrap_or(usize::MAX)
    };
    let mut items: Vec<(usize, Parsed<'_>)> = parsed
        .policies()
        .map(|p| (index(p.id()), Parsed::Policy(p)))
        .chain(
            parsed
                .templates()
                .map(|t| (index(t.id()), Parsed::Template(t))),
        )
        .collect();
    items.sort_by_key(|(i, _)| *i);
    items.into_iter().map(|(_, item)| item).collect()
}

impl Parsed<'_> {
    fn text(&self) -> String {
        match self {
            Parsed::Policy(p) => p.to_string(),
            Parsed::Template(t) => t.to_string(),
        }
    }

    fn annotation(&self, key: &str) -> Option<&str> {
        match self {
            Parsed::Policy(p) => p.annotation(key),
            Parsed::Template(t) => t.annotation(key),
        }
    }

    fn annotations(&self) -> BTreeMap<String, String> {
        let pairs: Vec<(&str, &str)> = match self {
            Parsed::Policy(p) => p.annotations().collect(),
            Parsed::Template(t) => t.annotations().collect(),
        };
        pairs
            .into_iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn effect(&self) -> String {
        let effect = match self {
            Parsed::Policy(p) => p.effect(),
            Parsed::Template(t) => t.effect(),
        };
        match effect {
            Effect::Permit => "permit".into(),
            Effect::Forbid => "forbid".into(),
        }
    }

    fn kind(&self) -> PolicyKind {
        match self {
            Parsed::Policy(_) => PolicyKind::Policy,
            Parsed::Template(_) => PolicyKind::Template,
        }
    }

    fn add_to(&self, set: &mut PolicySet, id: PolicyId) -> std::result::Result<(), String> {
        match self {
            Parsed::Policy(p) => set.add((*p).clone().new_id(id)),
            Parsed::Template(t) => set.add_template((*t).clone().new_id(id)),
        }
        .map_err(|e| e.to_string())
    }
}

/// Strict validation. Errors fail the load; warnings are returned as text.
pub fn validate_strict(
    schema: &Schema,
    set: &PolicySet,
    meta: &BTreeMap<String, PolicyMeta>,
    sources: &[PolicySource],
) -> Result<Vec<String>> {
    let result = Validator::new(schema.clone()).validate(set, ValidationMode::Strict);
    let text_of = |id: &PolicyId| -> (String, String) {
        meta.get(AsRef::<str>::as_ref(id))
            .and_then(|m| {
                sources
                    .iter()
                    .find(|s| s.name == m.file)
                    .map(|s| (s.name.clone(), s.text.clone()))
            })
            .unwrap_or_else(|| (String::from("<policies>"), String::new()))
    };
    let problems: Vec<SourceProblem> = result
        .validation_errors()
        .map(|e| {
            let (file, text) = text_of(e.policy_id());
            let mut p = diagnostic_problem(&file, &text, e, "here");
            p.message = format!("policy `{}`: {}", e.policy_id(), p.message);
            p
        })
        .collect();
    let warnings = result
        .validation_warnings()
        .map(|w| {
            let (file, text) = text_of(w.policy_id());
            let p = diagnostic_problem(&file, &text, w, "here");
            format!("{}:{}:{}: warning: {}", p.file, p.line, p.column, p.message)
        })
        .collect();
    if problems.is_empty() {
        Ok(warnings)
    } else {
        Err(EngineError::problems(
            format!(
                "{} policy validation error(s) in strict mode",
                problems.len()
            ),
            problems,
        ))
    }
}

fn slice_by_action(set: &PolicySet, schema: &Schema) -> Result<HashMap<EntityUid, PolicySet>> {
    let actions = schema
        .action_entities()
        .map_err(|e| EngineError::Request(format!("schema actions: {e}")))?;
    let mut out = HashMap::new();
    for action in actions.iter() {
        let uid = action.uid();
        let mut lineage: HashSet<EntityUid> = actions
            .ancestors(&uid)
            .map(|a| a.cloned().collect())
            .unwrap_or_default();
        lineage.insert(uid.clone());
        let mut subset = PolicySet::new();
        for policy in set.policies() {
            let can_match = match policy.action_constraint() {
                ActionConstraint::Any => true,
                ActionConstraint::Eq(a) => a == uid,
                ActionConstraint::In(list) => list.iter().any(|a| lineage.contains(a)),
            };
            if can_match {
                add_to_subset(&mut subset, policy, set).map_err(EngineError::Request)?;
            }
        }
        out.insert(uid, subset);
    }
    Ok(out)
}

/// Adds `policy` of `full` to `subset`: a static policy as it is, a template-linked one by
/// linking its template (added once) again with the same values, as Cedar takes links only
/// through `link`.
pub fn add_to_subset(
    subset: &mut PolicySet,
    policy: &cedar_policy::Policy,
    full: &PolicySet,
) -> std::result::Result<(), String> {
    let (Some(template_id), Some(values)) = (policy.template_id(), policy.template_links()) else {
        return subset.add(policy.clone()).map_err(|e| e.to_string());
    };
    if subset.template(template_id).is_none() {
        if let Some(template) = full.template(template_id) {
            subset
                .add_template(template.clone())
                .map_err(|e| e.to_string())?;
        }
    }
    subset
        .link(template_id.clone(), policy.id().clone(), values)
        .map_err(|e| e.to_string())
}

/// Entities whose data a policy reads through a literal (`Tre::Config::"x".limit`, or
/// `Tre::Config::"x" has limit`). Literals used only with `==` or `in` need no data: Cedar
/// answers those from the other operand's own ancestors.
pub fn literal_entities(set: &PolicySet) -> Vec<EntityUid> {
    fn walk(v: &serde_json::Value, found: &mut BTreeSet<String>) {
        match v {
            serde_json::Value::Object(map) => {
                for (key, inner) in map {
                    if key == "." || key == "has" {
                        if let Some(left) = inner.get("left").and_then(|l| l.get("Value")) {
                            if let Some(uid) = crate::entities::uid_from_json(left) {
                                found.insert(uid.to_string());
                            }
                        }
                    }
                    walk(inner, found);
                }
            }
            serde_json::Value::Array(items) => items.iter().for_each(|i| walk(i, found)),
            _ => {}
        }
    }
    let mut found: BTreeSet<String> = BTreeSet::new();
    for policy in set.policies() {
        if let Ok(json) = policy.to_json() {
            walk(&json, &mut found);
        }
    }
    found
        .into_iter()
        .filter_map(|s| EntityUid::from_str(&s).ok())
        .collect()
}

/// Formats policy text with Cedar's own formatter (80 columns, 2-space indent).
pub fn format_policies(name: &str, text: &str) -> Result<String> {
    let config = cedar_policy_formatter::Config {
        line_width: 80,
        indent_width: 2,
    };
    cedar_policy_formatter::policies_str_to_pretty(text, &config).map_err(|report| {
        let diag: &dyn Diagnostic = report.as_ref();
        let mut p = diagnostic_problem(name, text, diag, "here");
        if let Some(cause) = report.chain().nth(1) {
            if !p.message.contains(&cause.to_string()) {
                p.message = format!("{}: {cause}", p.message);
            }
        }
        p.into()
    })
}
