//! Located diagnostics: every problem with the manifests resolves to
//! `file:line:column`, a message, the offending source line and maybe a hint.

use std::fmt;
use std::sync::Arc;

/// A 1-based line and column in a source file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Pos {
    pub line: u32,
    pub col: u32,
}

impl Pos {
    /// The place of byte `at` of `text` (lines split at `\n`, columns in
    /// characters).
    pub fn of_offset(text: &str, at: usize) -> Pos {
        let before = text.get(..at).unwrap_or(text);
        let line = before.matches('\n').count() + 1;
        let col = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
        Pos {
            line: u32::try_from(line).unwrap_or(u32::MAX),
            col: u32::try_from(col).unwrap_or(u32::MAX),
        }
    }
}

/// Where something was written: the path as found under DIR, and a 1-based
/// line and column.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Loc {
    pub file: Arc<str>,
    pub pos: Pos,
}

impl Loc {
    pub fn new(file: &Arc<str>, pos: Pos) -> Loc {
        Loc {
            file: Arc::clone(file),
            pos,
        }
    }
}

impl fmt::Display for Loc {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}:{}", self.file, self.pos.line, self.pos.col)
    }
}

/// One problem with the manifests.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Diagnostic {
    pub loc: Loc,
    pub message: String,
    pub hint: Option<String>,
    /// The source line, when showing it cannot reveal a secret.
    pub source_line: Option<String>,
}

impl Diagnostic {
    pub fn new(loc: Loc, message: impl Into<String>) -> Diagnostic {
        Diagnostic {
            loc,
            message: message.into(),
            hint: None,
            source_line: None,
        }
    }

    pub fn with_hint(mut self, hint: Option<String>) -> Diagnostic {
        self.hint = hint;
        self
    }

    pub fn with_source(mut self, src: &str) -> Diagnostic {
        self.source_line = src
            .lines()
            .nth(self.loc.pos.line.saturating_sub(1) as usize)
            .map(|l| l.trim_end_matches('\r').to_string());
        self
    }

    /// The full report: a one-line reason, then the source line with a caret
    /// under the column, then the hint.
    pub fn render(&self, color: bool) -> String {
        self.render_as("error", color)
    }

    /// As [`Diagnostic::render`], said as a note rather than an error.
    pub fn render_note(&self, color: bool) -> String {
        self.render_as("note", color)
    }

    fn render_as(&self, what: &str, color: bool) -> String {
        let (red, blue, bold, reset) = if color {
            ("\x1b[31m", "\x1b[34m", "\x1b[1m", "\x1b[0m")
        } else {
            ("", "", "", "")
        };
        let mut out = format!(
            "{bold}{}{reset}: {red}{what}{reset}: {bold}{}{reset}\n",
            self.loc, self.message
        );
        if let Some(line) = &self.source_line {
            let num = self.loc.pos.line.to_string();
            let pad = " ".repeat(num.len());
            // A long line is shown around the column only.
            let col = self.loc.pos.col.saturating_sub(1) as usize;
            let (line, col) = clip(line, col);
            // The caret goes under the column, counting characters, with tabs
            // kept so that it lines up in a terminal.
            let caret_pad: String = line
                .chars()
                .take(col)
                .map(|c| if c == '\t' { '\t' } else { ' ' })
                .collect();
            out.push_str(&format!("{blue}{pad} |{reset}\n"));
            out.push_str(&format!("{blue}{num} |{reset} {line}\n"));
            out.push_str(&format!("{blue}{pad} |{reset} {caret_pad}{red}^{reset}\n"));
        }
        if let Some(hint) = &self.hint {
            out.push_str(&format!("  {blue}= help:{reset} {hint}\n"));
        }
        out
    }
}

/// Characters of a source line shown on each side of the column.
const CONTEXT: usize = 60;

/// `line` cut to [`CONTEXT`] characters on each side of `col` (`…` marks a
/// cut), and the column within what is kept.
fn clip(line: &str, col: usize) -> (String, usize) {
    let n = line.chars().count();
    if n <= 2 * CONTEXT + 20 {
        return (line.to_string(), col);
    }
    let start = col.saturating_sub(CONTEXT).min(n);
    let end = (col + CONTEXT).min(n);
    let mut out: String = if start > 0 {
        "…".into()
    } else {
        String::new()
    };
    out.extend(line.chars().skip(start).take(end - start));
    if end < n {
        out.push('…');
    }
    (out, col - start + usize::from(start > 0))
}

impl fmt::Display for Diagnostic {
    /// The one-line form: `file:line:col: message (hint)`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.loc, self.message)?;
        if let Some(hint) = &self.hint {
            write!(f, " ({hint})")?;
        }
        Ok(())
    }
}

/// Every problem found in one run, sorted by file, line and column.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct Diagnostics(pub Vec<Diagnostic>);

impl Diagnostics {
    pub fn sorted(mut list: Vec<Diagnostic>) -> Diagnostics {
        list.sort_by(|a, b| a.loc.cmp(&b.loc).then_with(|| a.message.cmp(&b.message)));
        list.dedup();
        Diagnostics(list)
    }

    pub fn render(&self, color: bool) -> String {
        let mut out = String::new();
        for d in &self.0 {
            out.push_str(&d.render(color));
            out.push('\n');
        }
        let n = self.0.len();
        out.push_str(&format!(
            "{n} error{} in the manifests; nothing was changed\n",
            if n == 1 { "" } else { "s" }
        ));
        out
    }
}

impl fmt::Display for Diagnostics {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, d) in self.0.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "{d}")?;
        }
        Ok(())
    }
}

/// "a similar name exists: `db`", when one is close enough to be a typo.
pub fn similar<'a>(name: &str, candidates: impl IntoIterator<Item = &'a str>) -> Option<String> {
    let mut best: Option<(f64, &str)> = None;
    for c in candidates {
        let score = strsim::jaro_winkler(name, c);
        if score >= 0.8 && best.is_none_or(|(s, _)| score > s) {
            best = Some((score, c));
        }
    }
    best.map(|(_, c)| format!("a similar name exists: `{c}`"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_long_line_is_shown_around_the_column() {
        let line = format!("{}X{}", "a".repeat(1000), "b".repeat(1000));
        let (kept, col) = clip(&line, 1000);
        assert_eq!(kept.chars().count(), 2 * CONTEXT + 2);
        assert_eq!(kept.chars().nth(col), Some('X'));
        assert!(kept.starts_with('…') && kept.ends_with('…'));
        assert_eq!(clip("short", 2), ("short".to_string(), 2));
    }

    #[test]
    fn render_points_at_the_column() {
        let file: Arc<str> = Arc::from("stacks/blog.yaml");
        let d = Diagnostic::new(
            Loc::new(&file, Pos { line: 2, col: 5 }),
            "unknown field `imgae`",
        )
        .with_hint(similar("imgae", ["image", "host"]))
        .with_source("apps:\n    imgae: pg\n");
        let text = d.render(false);
        assert!(text.starts_with("stacks/blog.yaml:2:5: error: unknown field `imgae`"));
        assert!(text.contains("2 |     imgae: pg\n"));
        assert!(text.contains("  |     ^\n"));
        assert!(text.contains("a similar name exists: `image`"));
    }

    #[test]
    fn similar_ignores_unrelated_names() {
        assert_eq!(similar("zzz", ["image", "host"]), None);
    }
}
