//! The TRE Cedar schema, default policies and a sample TRE, embedded so the `tregov` binary
//! runs on a fresh machine without any files next to it.
//!
//! The files under `policies/` stay the source of truth: they are plain `.cedar`,
//! `.cedarschema` and entities-JSON files that the Cedar CLI and Amazon Verified Permissions
//! read too.

/// File name of the schema inside a policies directory.
pub const SCHEMA_FILE: &str = "tre.cedarschema";

/// The Cedar schema of the TRE (namespace `Tre`).
pub const SCHEMA: &str = include_str!("../tre.cedarschema");

/// The default policies, one file per concern, as `(file name, text)`.
pub const DEFAULT_POLICIES: &[(&str, &str)] = &[
    ("approvals.cedar", include_str!("../approvals.cedar")),
    ("audit.cedar", include_str!("../audit.cedar")),
    ("backup.cedar", include_str!("../backup.cedar")),
    ("breakglass.cedar", include_str!("../breakglass.cedar")),
    ("budget.cedar", include_str!("../budget.cedar")),
    ("data_access.cedar", include_str!("../data_access.cedar")),
    ("egress.cedar", include_str!("../egress.cedar")),
    ("exemptions.cedar", include_str!("../exemptions.cedar")),
    ("lifetimes.cedar", include_str!("../lifetimes.cedar")),
    ("links.cedar", include_str!("../links.cedar")),
    ("reviews.cedar", include_str!("../reviews.cedar")),
    ("workspaces.cedar", include_str!("../workspaces.cedar")),
];

/// The properties the default policies keep (`tregov policy check`), as `(file name, text)`.
pub const DEFAULT_PROPERTIES: &[(&str, &str)] = &[
    ("data.cedar", include_str!("../properties/data.cedar")),
    ("egress.cedar", include_str!("../properties/egress.cedar")),
    ("errors.cedar", include_str!("../properties/errors.cedar")),
    (
        "inactive_users.cedar",
        include_str!("../properties/inactive_users.cedar"),
    ),
];

/// The sample TRE used by `tregov demo` (an entities-JSON file).
pub const SAMPLE_TRE_ENTITIES: &str = include_str!("../../examples/sample-tre.entities.json");

/// Absolute path of this crate's directory at build time; tests use it to find the files.
pub const POLICIES_DIR: &str = env!("CARGO_MANIFEST_DIR");

/// The requests `tregov demo` asks about the sample TRE, each with a title.
pub const DEMO_REQUESTS: &str = include_str!("../../examples/demo-requests.json");
