//! `${VAR}` interpolation with Compose's rules, and `env_file` parsing.
//!
//! Supported forms: `$VAR`, `${VAR}`, `${VAR:-default}` (unset or empty),
//! `${VAR-default}` (unset), `${VAR:+alternative}` / `${VAR+alternative}`,
//! `${VAR:?message}` / `${VAR?message}` (required), defaults that hold
//! references themselves, and `$$` for a literal `$`; any other `$` is kept.
//! A string that a value from the environment reaches is a secret.

/// The process environment, or a fixed map in tests.
pub trait Env: Sync {
    fn get(&self, name: &str) -> Option<String>;
}

/// The controller's real environment.
pub struct ProcessEnv;

impl Env for ProcessEnv {
    fn get(&self, name: &str) -> Option<String> {
        std::env::var(name).ok()
    }
}

impl Env for std::collections::BTreeMap<String, String> {
    fn get(&self, name: &str) -> Option<String> {
        self.get(name).cloned()
    }
}

/// drover's environment over the variables of a `.env` file, as Compose
/// layers them: a variable set in the environment wins.
pub struct WithDotEnv<'a> {
    pub process: &'a dyn Env,
    pub file: std::collections::BTreeMap<String, String>,
}

impl Env for WithDotEnv<'_> {
    fn get(&self, name: &str) -> Option<String> {
        self.process
            .get(name)
            .or_else(|| self.file.get(name).cloned())
    }
}

/// Why a string could not be interpolated. Never carries a variable's value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InterpolationError {
    pub message: String,
    pub hint: Option<String>,
}

/// What a variable that is not set, named without a default, becomes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unset {
    /// An error naming it (drover manifests: an empty password or path
    /// never reaches a host unseen).
    Refused,
    /// An empty string, as Compose does (Compose files); the caller is told
    /// which variables were so that it can warn, as Compose does.
    Blank,
}

/// Returns the interpolated string and whether a value from the
/// environment reached it (then the string is a secret), with `unset`
/// deciding what an unset variable without a default becomes; the third
/// value names those that became empty strings. A default written in the
/// file is no secret: whoever reads the file sees it.
pub fn interpolate_with(
    input: &str,
    env: &dyn Env,
    unset: Unset,
) -> Result<(String, bool, Vec<String>), InterpolationError> {
    if !input.contains('$') {
        return Ok((input.to_string(), false, Vec::new()));
    }
    let mut s = Subst {
        env,
        unset,
        blanks: Vec::new(),
    };
    let mut out = String::with_capacity(input.len());
    let used = s.substitute(input, &mut out)?;
    Ok((out, used, s.blanks))
}

fn is_name_start(c: char) -> bool {
    c.is_ascii_alphabetic() || c == '_'
}

fn is_name_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '_'
}

/// One interpolation under way.
struct Subst<'a> {
    env: &'a dyn Env,
    unset: Unset,
    /// The unset variables that became empty strings.
    blanks: Vec<String>,
}

impl Subst<'_> {
    /// Appends `input` with its references replaced to `out`; whether a
    /// value from the environment was used. As in Compose, a `$` that starts
    /// neither a name nor `${` is kept as it is (`$(date)`, a regex's `$`).
    fn substitute(&mut self, input: &str, out: &mut String) -> Result<bool, InterpolationError> {
        let mut used = false;
        let mut rest = input;
        while let Some(i) = rest.find('$') {
            out.push_str(&rest[..i]);
            let after = &rest[i + 1..];
            if let Some(r) = after.strip_prefix('$') {
                out.push('$');
                rest = r;
            } else if let Some(body) = after.strip_prefix('{') {
                let end = closing_brace(body).ok_or_else(|| InterpolationError {
                    message: "unterminated `${` in value".into(),
                    hint: Some("write `$$` for a literal `$`".into()),
                })?;
                used |= self.expand(&body[..end], out)?;
                rest = &body[end + 1..];
            } else if after.starts_with(is_name_start) {
                let len = after
                    .find(|c: char| !is_name_char(c))
                    .unwrap_or(after.len());
                used |= self.expand(&after[..len], out)?;
                rest = &after[len..];
            } else {
                out.push('$');
                rest = after;
            }
        }
        out.push_str(rest);
        Ok(used)
    }

    /// Expands the inside of one `${…}` (or a bare name) into `out`.
    fn expand(&mut self, body: &str, out: &mut String) -> Result<bool, InterpolationError> {
        let name_len = body.find(|c: char| !is_name_char(c)).unwrap_or(body.len());
        let (name, op) = body.split_at(name_len);
        if name.is_empty() || name.starts_with(|c: char| c.is_ascii_digit()) {
            return Err(InterpolationError {
                message: format!("invalid variable name in `${{{body}}}`"),
                hint: None,
            });
        }
        let value = self.env.get(name);
        let set = value.is_some();
        let nonempty = value.as_deref().is_some_and(|v| !v.is_empty());
        let missing = |message: String| {
            InterpolationError {
            message,
            hint: Some(format!(
                "set `{name}` in drover's environment or a `.env` file beside the manifest, or give a default: `${{{name}:-value}}`"
            )),
        }
        };
        // The word after the operator is itself interpolated, only when used.
        let (colon, op) = match op.strip_prefix(':') {
            Some(rest) => (true, rest),
            None => (false, op),
        };
        let present = if colon { nonempty } else { set };
        let word = op.get(1..).unwrap_or("");
        match op.chars().next() {
            None if !colon => match value {
                Some(v) => {
                    out.push_str(&v);
                    Ok(true)
                }
                None if self.unset == Unset::Blank => {
                    if !self.blanks.iter().any(|b| b == name) {
                        self.blanks.push(name.to_string());
                    }
                    Ok(false)
                }
                None => Err(missing(format!("variable `{name}` is not set"))),
            },
            Some('-') if present => {
                out.push_str(value.as_deref().unwrap_or(""));
                Ok(true)
            }
            Some('-') => self.substitute(word, out),
            Some('+') if present => self.substitute(word, out),
            Some('+') => Ok(false),
            Some('?') if present => {
                out.push_str(value.as_deref().unwrap_or(""));
                Ok(true)
            }
            Some('?') => {
                let mut msg = String::new();
                self.substitute(word, &mut msg)?;
                let msg = msg.trim();
                Err(missing(if msg.is_empty() {
                    format!("variable `{name}` is required")
                } else {
                    format!("variable `{name}` is required: {msg}")
                }))
            }
            _ => Err(InterpolationError {
                message: format!("unsupported substitution `${{{body}}}`"),
                hint: Some(
                    "drover supports `${VAR}`, `${VAR:-default}`, `${VAR-default}`, `${VAR:+alternative}` and `${VAR:?message}`"
                        .into(),
                ),
            }),
        }
    }
}

/// Where the `}` that closes a `${` is in `body` (the text after `${`),
/// skipping the braces of references nested in a default.
fn closing_brace(body: &str) -> Option<usize> {
    let bytes = body.as_bytes();
    let mut depth = 0usize;
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'$' if bytes.get(i + 1) == Some(&b'$') => i += 1,
            b'$' if bytes.get(i + 1) == Some(&b'{') => {
                depth += 1;
                i += 1;
            }
            b'}' if depth == 0 => return Some(i),
            b'}' => depth -= 1,
            _ => {}
        }
        i += 1;
    }
    None
}

/// `text` with each reference to a variable of `names` written alone
/// (`$NAME`, `${NAME}`) made `${NAME:-}`; `$$` stays a literal `$`.
pub fn default_to_empty(text: &str, names: &[&str]) -> String {
    if names.is_empty() {
        return text.to_string();
    }
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(i) = rest.find('$') {
        out.push_str(&rest[..i]);
        let after = &rest[i + 1..];
        if let Some(r) = after.strip_prefix('$') {
            out.push_str("$$");
            rest = r;
            continue;
        }
        let (name, len) = match after.strip_prefix('{') {
            Some(body) => {
                let n = body.find(|c: char| !is_name_char(c)).unwrap_or(body.len());
                match body[n..].starts_with('}') {
                    true => (&body[..n], n + 2),
                    false => ("", 0),
                }
            }
            None => {
                let n = after
                    .find(|c: char| !is_name_char(c))
                    .unwrap_or(after.len());
                (&after[..n], n)
            }
        };
        if !name.is_empty() && names.contains(&name) {
            out.push_str(&format!("${{{name}:-}}"));
            rest = &after[len..];
        } else {
            out.push('$');
            rest = after;
        }
    }
    out.push_str(rest);
    out
}

/// One `KEY=VALUE` line of an env file, or why it is wrong.
pub type EnvLine = Result<(String, String), String>;

/// Parses an env file as Compose does: `KEY=VALUE` lines, `#` comments,
/// blank lines, an optional `export ` prefix, and matching quotes around the
/// value removed. Each entry comes with its 1-based line number.
pub fn parse_env_file(text: &str) -> Vec<(u32, EnvLine)> {
    let mut out = Vec::new();
    for (i, raw) in text.lines().enumerate() {
        let line_no = u32::try_from(i + 1).unwrap_or(u32::MAX);
        let line = raw.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let line = line.strip_prefix("export ").unwrap_or(line).trim_start();
        let entry = match line.split_once('=') {
            None => Err("expected `KEY=VALUE`".to_string()),
            Some((key, value)) => {
                let key = key.trim();
                if key.is_empty() || key.contains(char::is_whitespace) {
                    Err("expected `KEY=VALUE` with a key of no spaces".to_string())
                } else {
                    let value = value.trim();
                    let unquoted = ['"', '\'']
                        .iter()
                        .find_map(|q| value.strip_prefix(*q).and_then(|v| v.strip_suffix(*q)))
                        .unwrap_or(value);
                    Ok((key.to_string(), unquoted.to_string()))
                }
            }
        };
        out.push((line_no, entry));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    /// As a drover manifest interpolates: an unset variable is an error.
    fn interpolate(input: &str, env: &dyn Env) -> Result<(String, bool), InterpolationError> {
        interpolate_with(input, env, Unset::Refused).map(|(value, used, _)| (value, used))
    }

    fn env() -> BTreeMap<String, String> {
        [("A", "1"), ("EMPTY", ""), ("PW", "hunter2")]
            .into_iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn plain_text_is_not_secret() {
        assert_eq!(interpolate("abc", &env()).unwrap(), ("abc".into(), false));
    }

    #[test]
    fn forms_of_substitution() {
        let e = env();
        assert_eq!(interpolate("${A}", &e).unwrap().0, "1");
        assert_eq!(interpolate("x$A-y", &e).unwrap().0, "x1-y");
        assert_eq!(interpolate("${NOPE:-d}", &e).unwrap().0, "d");
        assert_eq!(interpolate("${EMPTY:-d}", &e).unwrap().0, "d");
        assert_eq!(interpolate("${EMPTY-d}", &e).unwrap().0, "");
        assert_eq!(interpolate("$$A", &e).unwrap(), ("$A".into(), false));
        assert!(interpolate("${A}", &e).unwrap().1);
    }

    #[test]
    fn defaults_nest_as_in_compose() {
        let e = env();
        assert_eq!(interpolate("${NOPE:-x${B:-y}z}", &e).unwrap().0, "xyz");
        assert_eq!(
            interpolate("${NOPE:-${A}}", &e).unwrap(),
            ("1".into(), true)
        );
        assert_eq!(interpolate("${A:-${NOPE}}", &e).unwrap().0, "1");
        assert_eq!(interpolate("${NOPE:-a$${b}}c", &e).unwrap().0, "a${b}c");
        assert_eq!(
            interpolate("${A:+on}|${NOPE:+on}|${EMPTY+set}", &e)
                .unwrap()
                .0,
            "on||set"
        );
        let err = interpolate("${NOPE:?need $A}", &e).unwrap_err();
        assert!(err.message.ends_with("need 1"), "{}", err.message);
    }

    #[test]
    fn a_default_written_in_the_file_is_no_secret() {
        let e = env();
        assert_eq!(
            interpolate("${NOPE:-/srv/x}", &e).unwrap(),
            ("/srv/x".into(), false)
        );
        assert_eq!(interpolate("${NOPE-}", &e).unwrap(), (String::new(), false));
        assert!(interpolate("${EMPTY:-d}${A}", &e).unwrap().1);
    }

    #[test]
    fn a_dollar_that_starts_no_variable_is_kept() {
        let e = env();
        assert_eq!(
            interpolate("$(date +%s)", &e).unwrap(),
            ("$(date +%s)".into(), false)
        );
        assert_eq!(interpolate("^/api/.*$", &e).unwrap().0, "^/api/.*$");
        assert_eq!(
            interpolate("cost: 5$ or $1", &e).unwrap().0,
            "cost: 5$ or $1"
        );
    }

    #[test]
    fn unset_variable_is_an_error_naming_it_and_not_its_value() {
        let err = interpolate("${NOPE}", &env()).unwrap_err();
        assert_eq!(err.message, "variable `NOPE` is not set");
        let err = interpolate("${NOPE:?give it}", &env()).unwrap_err();
        assert!(err.message.contains("give it"));
    }

    #[test]
    fn in_compose_an_unset_variable_is_an_empty_string_and_named() {
        let e = env();
        let (value, used, blanks) =
            interpolate_with("a${NOPE}b$NOPE:${A}${GONE}", &e, Unset::Blank).unwrap();
        assert_eq!(value, "ab:1");
        assert!(used);
        assert_eq!(blanks, ["NOPE", "GONE"]);
        // A required one stays an error, as in Compose.
        assert!(interpolate_with("${NOPE:?give it}", &e, Unset::Blank).is_err());
        let (_, used, blanks) = interpolate_with("${NOPE:-d}", &e, Unset::Blank).unwrap();
        assert!(!used && blanks.is_empty());
    }

    #[test]
    fn malformed_references_are_errors() {
        assert!(interpolate("${A", &env()).is_err());
        assert!(interpolate("${NOPE:-${A}", &env()).is_err());
        assert!(interpolate("${A/x/y}", &env()).is_err());
        assert!(interpolate("${1A}", &env()).is_err());
    }

    #[test]
    fn env_file_lines() {
        let parsed = parse_env_file("# c\n\nexport A=1\nB = 'two'\nbad line\nC=\"x=y\"\n");
        assert_eq!(parsed[0], (3, Ok(("A".into(), "1".into()))));
        assert_eq!(parsed[1], (4, Ok(("B".into(), "two".into()))));
        assert!(parsed[2].1.is_err());
        assert_eq!(parsed[3], (6, Ok(("C".into(), "x=y".into()))));
    }

    #[test]
    fn only_a_reference_to_an_unset_variable_alone_gets_an_empty_default() {
        let names = ["UID", "PW"];
        assert_eq!(
            default_to_empty("u: ${UID}:$UID $$UID ${UIDX} ${PW:-x} $PWD $PW.", &names),
            "u: ${UID:-}:${UID:-} $$UID ${UIDX} ${PW:-x} $PWD ${PW:-}."
        );
    }
}
