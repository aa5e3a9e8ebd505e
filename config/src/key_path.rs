//! Key paths into `tregov.toml` (`projects[1].account_id`) and where they are in the text, so
//! a problem found after parsing points at the key it is about, not at the first key of that
//! name.

use std::fmt;
use std::ops::Range;

use toml::de::{DeTable, DeValue};

/// One step of a key path: a table key or an array index.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Step {
    Key(String),
    Index(usize),
}

/// A path to a value in the configuration, e.g. `projects[1].account_id`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct KeyPath(Vec<Step>);

impl KeyPath {
    /// The document itself.
    pub fn root() -> Self {
        Self::default()
    }

    /// This path followed by the table key `key`.
    pub fn key(&self, key: &str) -> Self {
        let mut steps = self.0.clone();
        steps.push(Step::Key(key.to_string()));
        Self(steps)
    }

    /// This path followed by the array index `index`.
    pub fn index(&self, index: usize) -> Self {
        let mut steps = self.0.clone();
        steps.push(Step::Index(index));
        Self(steps)
    }

    /// The byte range the path names in `text`: the key itself when it is there, else the
    /// nearest enclosing value that is (a required key that is missing points at its table).
    pub fn locate(&self, text: &str) -> Option<Range<usize>> {
        let document = DeTable::parse(text).ok()?;
        let mut found = document.span();
        let mut table: Option<&DeTable<'_>> = Some(document.get_ref());
        let mut value: Option<&DeValue<'_>> = None;
        for step in &self.0 {
            match step {
                Step::Key(k) => {
                    let current = table.or_else(|| value.and_then(DeValue::as_table))?;
                    let Some((key, inner)) = current.get_key_value(k.as_str()) else {
                        break;
                    };
                    found = key.span();
                    value = Some(inner.get_ref());
                    table = None;
                }
                Step::Index(i) => {
                    let Some(item) = value.and_then(DeValue::as_array).and_then(|a| a.get(*i))
                    else {
                        break;
                    };
                    found = item.span();
                    value = Some(item.get_ref());
                    table = None;
                }
            }
        }
        Some(found)
    }
}

impl fmt::Display for KeyPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (n, step) in self.0.iter().enumerate() {
            match step {
                Step::Key(k) if n == 0 => write!(f, "{k}")?,
                Step::Key(k) => write!(f, ".{k}")?,
                Step::Index(i) => write!(f, "[{i}]")?,
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn line_of(text: &str, path: &KeyPath) -> usize {
        let range = path.locate(text).expect("located");
        text[..range.start].matches('\n').count() + 1
    }

    #[test]
    fn paths_print_as_toml_readers_write_them() {
        let p = KeyPath::root().key("projects").index(1).key("account_id");
        assert_eq!(p.to_string(), "projects[1].account_id");
    }

    #[test]
    fn a_key_in_the_second_table_of_an_array_is_found_there_not_in_the_first() {
        let text = "[[projects]]\nid = \"a\"\naccount_id = \"111111111111\"\n\n[[projects]]\nid = \"b\"\naccount_id = \"x\"\n";
        let p = KeyPath::root().key("projects").index(1).key("account_id");
        assert_eq!(line_of(text, &p), 7);
    }

    #[test]
    fn a_missing_key_points_at_its_table() {
        let text = "region = \"r\"\n\n[auth]\nissuer = \"i\"\n";
        let p = KeyPath::root().key("auth").key("jwks_url");
        assert_eq!(line_of(text, &p), 3);
    }
}
