//! `${VAR}` interpolation with Compose's rules, and `env_file` parsing.
//!
//! Supported forms: `$VAR`, `${VAR}`, `${VAR:-default}` (unset or empty),
//! `${VAR-default}` (unset), `${VAR:?message}` / `${VAR?message}` (required),
//! and `$$` for a literal `$`. A string that uses any variable is a secret.

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

/// Why a string could not be interpolated. Never carries a variable's value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InterpolationError {
    pub message: String,
    pub hint: Option<String>,
}

/// Returns the interpolated string and whether any variable was used.
pub fn interpolate(input: &str, env: &dyn Env) -> Result<(String, bool), InterpolationError> {
    if !input.contains('$') {
        return Ok((input.to_string(), false));
    }
    let mut out = String::with_capacity(input.len());
    let mut used = false;
    let mut rest = input;
    while let Some(i) = rest.find('$') {
        out.push_str(&rest[..i]);
        let after = &rest[i + 1..];
        if let Some(r) = after.strip_prefix('$') {
            out.push('$');
            rest = r;
        } else if let Some(body) = after.strip_prefix('{') {
            let Some(end) = body.find('}') else {
                return Err(InterpolationError {
                    message: "unterminated `${` in value".into(),
                    hint: Some("write `$$` for a literal `$`".into()),
                });
            };
            out.push_str(&expand(&body[..end], env)?);
            used = true;
            rest = &body[end + 1..];
        } else {
            let len = after
                .char_indices()
                .take_while(|(_, c)| c.is_ascii_alphanumeric() || *c == '_')
                .map(|(_, c)| c.len_utf8())
                .sum::<usize>();
            if len == 0 || after.starts_with(|c: char| c.is_ascii_digit()) {
                return Err(InterpolationError {
                    message: "a `$` that starts no variable".into(),
                    hint: Some("write `$$` for a literal `$`".into()),
                });
            }
            out.push_str(&expand(&after[..len], env)?);
            used = true;
            rest = &after[len..];
        }
    }
    out.push_str(rest);
    Ok((out, used))
}

fn expand(body: &str, env: &dyn Env) -> Result<String, InterpolationError> {
    let name_len = body
        .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
        .unwrap_or(body.len());
    let (name, op) = body.split_at(name_len);
    if name.is_empty() || name.starts_with(|c: char| c.is_ascii_digit()) {
        return Err(InterpolationError {
            message: format!("invalid variable name in `${{{body}}}`"),
            hint: None,
        });
    }
    let value = env.get(name);
    let missing = |message: String| InterpolationError {
        message,
        hint: Some(format!(
            "set `{name}` in drover's environment, or give a default: `${{{name}:-value}}`"
        )),
    };
    match op {
        "" => value.ok_or_else(|| missing(format!("variable `{name}` is not set"))),
        _ if op.starts_with(":-") => Ok(value.filter(|v| !v.is_empty()).unwrap_or_else(|| op[2..].to_string())),
        _ if op.starts_with('-') => Ok(value.unwrap_or_else(|| op[1..].to_string())),
        _ if op.starts_with(":?") || op.starts_with('?') => {
            let msg = op.trim_start_matches(':')[1..].trim();
            match value {
                Some(v) if !(op.starts_with(':') && v.is_empty()) => Ok(v),
                _ => Err(missing(if msg.is_empty() {
                    format!("variable `{name}` is required")
                } else {
                    format!("variable `{name}` is required: {msg}")
                })),
            }
        }
        _ => Err(InterpolationError {
            message: format!("unsupported substitution `${{{body}}}`"),
            hint: Some("drover supports `${VAR}`, `${VAR:-default}`, `${VAR-default}` and `${VAR:?message}`".into()),
        }),
    }
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
    fn unset_variable_is_an_error_naming_it_and_not_its_value() {
        let err = interpolate("${NOPE}", &env()).unwrap_err();
        assert_eq!(err.message, "variable `NOPE` is not set");
        let err = interpolate("${NOPE:?give it}", &env()).unwrap_err();
        assert!(err.message.contains("give it"));
    }

    #[test]
    fn malformed_references_are_errors() {
        assert!(interpolate("${A", &env()).is_err());
        assert!(interpolate("cost: 5$", &env()).is_err());
        assert!(interpolate("${A/x/y}", &env()).is_err());
    }

    #[test]
    fn env_file_lines() {
        let parsed = parse_env_file("# c\n\nexport A=1\nB = 'two'\nbad line\nC=\"x=y\"\n");
        assert_eq!(parsed[0], (3, Ok(("A".into(), "1".into()))));
        assert_eq!(parsed[1], (4, Ok(("B".into(), "two".into()))));
        assert!(parsed[2].1.is_err());
        assert_eq!(parsed[3], (6, Ok(("C".into(), "x=y".into()))));
    }
}
