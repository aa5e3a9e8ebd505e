//! What tregov shows people: each renderer writes text into a `String` (so it is tested
//! without a terminal), and the `--output json` forms are built here beside them, so the two
//! never drift apart. The `tregov` binary only prints what these return.

pub mod access;
pub mod analysis;
pub mod collect;
pub mod decision;
pub mod egress;
pub mod log;
pub mod plan;
pub mod testing;

/// `writeln!` into a `String`, which cannot fail.
macro_rules! line {
    ($out:expr) => {{
        $out.push('\n');
    }};
    ($out:expr, $($arg:tt)*) => {{
        use std::fmt::Write as _;
        let _ = writeln!($out, $($arg)*);
    }};
}
pub(crate) use line;

/// Policy files are shown relative to the current directory when they are below it.
pub fn short_path(p: &str) -> String {
    if let Ok(cwd) = std::env::current_dir() {
        if let Ok(rel) = std::path::Path::new(p).strip_prefix(&cwd) {
            return rel.display().to_string();
        }
    }
    p.to_string()
}

/// The first 12 characters of a policy-set version: enough to tell sets apart.
pub fn short_version(version: &str) -> &str {
    &version[..12.min(version.len())]
}
