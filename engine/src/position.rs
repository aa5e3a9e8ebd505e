//! Byte offsets to human positions, for diagnostics that name `file:line:col`.

/// A 1-based line and column (columns count characters, as editors do).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LineCol {
    pub line: usize,
    pub column: usize,
}

impl std::fmt::Display for LineCol {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}:{}", self.line, self.column)
    }
}

/// The line and column of `offset` in `text`; offsets past the end point after the last char.
pub fn line_col(text: &str, offset: usize) -> LineCol {
    let offset = offset.min(text.len());
    let before = text.get(..offset).unwrap_or(text);
    let line = before.matches('\n').count() + 1;
    let line_start = before.rfind('\n').map_or(0, |i| i + 1);
    let column = before.get(line_start..).map_or(0, |s| s.chars().count()) + 1;
    LineCol { line, column }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn first_character_is_line_one_column_one() {
        assert_eq!(line_col("abc", 0), LineCol { line: 1, column: 1 });
    }

    #[test]
    fn offsets_after_newlines_count_lines_and_columns() {
        let text = "ab\ncd\nef";
        assert_eq!(line_col(text, 4), LineCol { line: 2, column: 2 });
        assert_eq!(line_col(text, 6), LineCol { line: 3, column: 1 });
    }

    #[test]
    fn offsets_past_the_end_are_clamped() {
        assert_eq!(line_col("ab\n", 99), LineCol { line: 2, column: 1 });
    }
}
