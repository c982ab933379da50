//! A YAML stream as trees whose every node knows its line and column.
//!
//! Manifests need `file:line:column` for semantic errors too (an unknown
//! host, a cycle), which a plain serde deserializer cannot give. This module
//! turns the event stream of `yaml-rust2` into [`Node`]s that keep their
//! position, expands anchors under a node budget (so a "billion laughs"
//! document is a located error, not an out-of-memory), rejects duplicate keys,
//! and limits nesting depth.

use std::collections::HashMap;

use crate::diag::Pos;
use yaml_rust2::parser::{Event, Parser};
use yaml_rust2::scanner::{Marker, TScalarStyle};

/// The place of a scanner mark.
fn pos_of(m: &Marker) -> Pos {
    Pos {
        line: u32::try_from(m.line()).unwrap_or(u32::MAX),
        col: u32::try_from(m.col() + 1).unwrap_or(u32::MAX),
    }
}

/// One YAML node.
#[derive(Debug, Clone, PartialEq)]
pub struct Node {
    pub value: Value,
    pub pos: Pos,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    /// `~`, `null`, or nothing at all.
    Null,
    /// Any other scalar, as written. `plain` is false for quoted and block
    /// scalars, which are always strings.
    Scalar {
        text: String,
        plain: bool,
    },
    Seq(Vec<Node>),
    /// Keys in document order; duplicates were rejected while parsing.
    Map(Vec<(Node, Node)>),
}

impl Node {
    /// What a user would call this node's type, for "expected X, found Y".
    pub fn kind_name(&self) -> &'static str {
        match &self.value {
            Value::Null => "null",
            Value::Scalar { text, plain } => {
                if !plain {
                    "a string"
                } else if text == "true" || text == "false" {
                    "a boolean"
                } else if text.parse::<f64>().is_ok() {
                    "a number"
                } else {
                    "a string"
                }
            }
            Value::Seq(_) => "a list",
            Value::Map(_) => "a mapping",
        }
    }

    pub fn as_scalar(&self) -> Option<&str> {
        match &self.value {
            Value::Scalar { text, .. } => Some(text),
            _ => None,
        }
    }
}

/// Bounds that keep hostile input from exhausting memory or stack.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Nodes in one document, counting every alias expansion in full.
    pub max_nodes: usize,
    /// Nesting depth of sequences and mappings.
    pub max_depth: usize,
    /// Documents in one file.
    pub max_documents: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_nodes: 200_000,
            max_depth: 64,
            max_documents: 10_000,
        }
    }
}

/// A problem in the YAML text itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct YamlError {
    pub pos: Pos,
    pub message: String,
    pub hint: Option<String>,
}

enum Frame {
    Seq {
        items: Vec<Node>,
        pos: Pos,
        anchor: usize,
    },
    Map {
        entries: Vec<(Node, Node)>,
        key: Option<Node>,
        /// Scalar keys so far, with where each was written.
        seen: HashMap<String, Pos>,
        pos: Pos,
        anchor: usize,
    },
}

/// Parses every document of `src`. An empty document (or a stream with
/// nothing but comments) yields a `Null` node so that callers can say where.
///
/// A `]` or `}` that closes a flow collection on a line of its own, less
/// indented than the block it sits in, is read as PyYAML and Compose read
/// it (the scanner refuses it): the line is indented to the collection's
/// opening bracket and the text read again, which moves no other value.
pub fn parse_documents(src: &str, limits: Limits) -> Result<Vec<Node>, YamlError> {
    let mut text = std::borrow::Cow::Borrowed(src);
    let mut reindented = 0;
    loop {
        let mut closer = None;
        match parse_once(&text, limits, &mut closer) {
            Err(e) if reindented < MAX_REINDENTED && closer.is_some() => {
                let open_col = closer.unwrap_or(0);
                let line = e.pos.line as usize;
                let mut lines: Vec<&str> = text.split('\n').collect();
                let Some(l) = lines.get_mut(line.wrapping_sub(1)) else {
                    return Err(e);
                };
                let padded = format!("{}{}", " ".repeat(open_col), l.trim_start());
                *l = &padded;
                text = std::borrow::Cow::Owned(lines.join("\n"));
                reindented += 1;
            }
            result => return result,
        }
    }
}

/// How many closing brackets one file may have re-indented.
const MAX_REINDENTED: usize = 16;

/// Parses `src`; on an error that is a closing bracket's indentation, sets
/// `closer` to the column (0-based) of the open collection's bracket.
fn parse_once(
    src: &str,
    limits: Limits,
    closer: &mut Option<usize>,
) -> Result<Vec<Node>, YamlError> {
    let mut parser = Parser::new_from_str(src);
    let mut docs = Vec::new();
    let mut stack: Vec<Frame> = Vec::new();
    // Anchor id -> (node, its size in nodes).
    let mut anchors: HashMap<usize, (Node, usize)> = HashMap::new();
    let mut nodes_in_doc = 0usize;
    let mut doc_root: Option<Node> = None;

    loop {
        let (event, mark) = parser.next_token().map_err(|e| {
            let error = YamlError {
                pos: error_pos(e.marker(), src),
                // The scanner looks ahead and may hit its own limit on open
                // brackets before drover's depth limit sees them.
                message: if e.info() == "recursion limit exceeded" {
                    format!("nesting deeper than {} levels", limits.max_depth)
                } else {
                    e.info().to_string()
                },
                hint: open_flow_hint(&stack, src),
            };
            if e.info() == "invalid indentation" {
                *closer = dedented_closer(src, error.pos);
            }
            error
        })?;
        let pos = pos_of(&mark);
        // A value left out (`restart:`) is an empty scalar that the parser
        // places at the next token, often on a later line.
        let mut left_out = false;
        let finished: Option<(Node, usize)> = match event {
            Event::StreamStart | Event::Nothing => None,
            Event::StreamEnd => break,
            Event::DocumentStart => {
                if docs.len() >= limits.max_documents {
                    return Err(YamlError {
                        pos,
                        hint: None,
                        message: format!(
                            "too many documents in one file (more than {})",
                            limits.max_documents
                        ),
                    });
                }
                anchors.clear();
                nodes_in_doc = 0;
                doc_root = None;
                None
            }
            Event::DocumentEnd => {
                docs.push(doc_root.take().unwrap_or(Node {
                    value: Value::Null,
                    pos,
                }));
                None
            }
            Event::Alias(id) => {
                let Some((node, size)) = anchors.get(&id) else {
                    return Err(YamlError {
                        pos,
                        hint: None,
                        message: "alias to an unknown anchor".into(),
                    });
                };
                nodes_in_doc = nodes_in_doc.saturating_add(*size);
                if nodes_in_doc > limits.max_nodes {
                    return Err(too_big(pos, limits));
                }
                // The alias takes the position of its use, so errors inside
                // an expanded alias still point near the reader's eye.
                let mut node = node.clone();
                node.pos = pos;
                Some((node, 0))
            }
            Event::Scalar(text, style, anchor, tag) => {
                nodes_in_doc += 1;
                if nodes_in_doc > limits.max_nodes {
                    return Err(too_big(pos, limits));
                }
                let mut plain = style == TScalarStyle::Plain;
                if let Some(tag) = tag {
                    if tag.suffix == "str"
                        && (tag.handle == "!!" || tag.handle == "tag:yaml.org,2002:")
                    {
                        plain = false;
                    } else {
                        return Err(YamlError {
                            pos,
                            hint: None,
                            message: format!(
                                "YAML tag `{}{}` is not supported",
                                tag.handle, tag.suffix
                            ),
                        });
                    }
                }
                left_out = plain && text.is_empty();
                let value = if plain && matches!(text.as_str(), "" | "~" | "null" | "Null" | "NULL")
                {
                    Value::Null
                } else {
                    Value::Scalar { text, plain }
                };
                let node = Node { value, pos };
                if anchor != 0 {
                    anchors.insert(anchor, (node.clone(), 1));
                }
                Some((node, 1))
            }
            Event::SequenceStart(anchor, ref tag) | Event::MappingStart(anchor, ref tag) => {
                if let Some(tag) = tag {
                    return Err(YamlError {
                        pos,
                        hint: None,
                        message: format!(
                            "YAML tag `{}{}` is not supported",
                            tag.handle, tag.suffix
                        ),
                    });
                }
                if stack.len() >= limits.max_depth {
                    return Err(YamlError {
                        pos,
                        hint: None,
                        message: format!("nesting deeper than {} levels", limits.max_depth),
                    });
                }
                nodes_in_doc += 1;
                if nodes_in_doc > limits.max_nodes {
                    return Err(too_big(pos, limits));
                }
                if matches!(event, Event::SequenceStart(..)) {
                    stack.push(Frame::Seq {
                        items: Vec::new(),
                        pos,
                        anchor,
                    });
                } else {
                    stack.push(Frame::Map {
                        entries: Vec::new(),
                        key: None,
                        seen: HashMap::new(),
                        pos,
                        anchor,
                    });
                }
                None
            }
            Event::SequenceEnd | Event::MappingEnd => {
                let (node, anchor) = match stack.pop() {
                    Some(Frame::Seq { items, pos, anchor }) => (
                        Node {
                            value: Value::Seq(items),
                            pos,
                        },
                        anchor,
                    ),
                    Some(Frame::Map {
                        entries,
                        pos,
                        anchor,
                        ..
                    }) => (
                        Node {
                            // The parser marks a block mapping at the `:` of
                            // its first entry; the mapping starts at that
                            // entry's key (a flow mapping's `{` comes first).
                            pos: entries.first().map_or(pos, |(k, _)| k.pos.min(pos)),
                            value: Value::Map(merge_keys(entries)?),
                        },
                        anchor,
                    ),
                    None => {
                        return Err(YamlError {
                            pos,
                            hint: None,
                            message: "unbalanced collection".into(),
                        })
                    }
                };
                if anchor != 0 {
                    let size = count_nodes(&node);
                    anchors.insert(anchor, (node.clone(), size));
                }
                Some((node, 0))
            }
        };

        let Some((node, _)) = finished else { continue };
        match stack.last_mut() {
            None => doc_root = Some(node),
            Some(Frame::Seq { items, .. }) => items.push(node),
            Some(Frame::Map {
                entries, key, seen, ..
            }) => match key.take() {
                None => {
                    if let Value::Scalar { text, .. } = &node.value {
                        if let Some(first) = seen.insert(text.clone(), node.pos) {
                            return Err(YamlError {
                                pos: node.pos,
                                hint: None,
                                message: format!(
                                    "duplicate key `{text}` (first at line {}, column {})",
                                    first.line, first.col
                                ),
                            });
                        }
                    }
                    *key = Some(node);
                }
                // A value left out is shown at its key.
                Some(k) => entries.push(if left_out {
                    let pos = k.pos;
                    (k, Node { pos, ..node })
                } else {
                    (k, node)
                }),
            },
        }
    }
    Ok(docs)
}

/// A mapping with its merge keys (`<<: *defaults`, `<<: [*a, *b]`)
/// resolved as YAML 1.1 and Compose do: the entries written in the mapping
/// win, then the merged mappings in the order given.
fn merge_keys(entries: Vec<(Node, Node)>) -> Result<Vec<(Node, Node)>, YamlError> {
    let is_merge =
        |k: &Node| matches!(&k.value, Value::Scalar { text, plain: true } if text == "<<");
    if !entries.iter().any(|(k, _)| is_merge(k)) {
        return Ok(entries);
    }
    let (merges, mut out): (Vec<_>, Vec<_>) = entries.into_iter().partition(|(k, _)| is_merge(k));
    let mut seen: std::collections::HashSet<String> = out
        .iter()
        .filter_map(|(k, _)| k.as_scalar().map(str::to_string))
        .collect();
    for (_, value) in merges {
        let sources = match value.value {
            Value::Map(_) => vec![value],
            Value::Seq(items) => items,
            _ => vec![value],
        };
        for source in sources {
            let Value::Map(entries) = source.value else {
                return Err(YamlError {
                    pos: source.pos,
                    hint: Some(
                        "write `<<: *anchor` or `<<: [*a, *b]`, each naming a mapping".into(),
                    ),
                    message: format!(
                        "a merge key `<<` takes mappings, found {}",
                        source.kind_name()
                    ),
                });
            };
            for (k, v) in entries {
                let new = k.as_scalar().is_none_or(|t| seen.insert(t.to_string()));
                if new {
                    out.push((k, v));
                }
            }
        }
    }
    Ok(out)
}

/// For an indentation error at `at`: when that line holds only closing
/// brackets (and commas) and the text before it leaves a flow collection
/// open whose bracket stands further right, that bracket's 0-based column.
/// The text is read, not the parser's state: the scanner may still be
/// looking ahead for a key when it refuses the line.
fn dedented_closer(src: &str, at: Pos) -> Option<usize> {
    let lines: Vec<&str> = src.split('\n').collect();
    let index = at.line.checked_sub(1)? as usize;
    let here = *lines.get(index)?;
    let closes = here.trim().starts_with([']', '}'])
        && here
            .trim()
            .chars()
            .all(|c| matches!(c, ']' | '}' | ',' | ' ' | '\r'));
    if !closes {
        return None;
    }
    // Open brackets by column, outside quotes and comments.
    let mut open: Vec<usize> = Vec::new();
    for line in &lines[..index] {
        let mut quote: Option<char> = None;
        let mut prev = ' ';
        let mut chars = line.chars().enumerate().peekable();
        while let Some((col, c)) = chars.next() {
            match (quote, c) {
                (Some('"'), '\\') => {
                    chars.next();
                }
                (Some('\''), '\'') if chars.peek().is_some_and(|(_, n)| *n == '\'') => {
                    chars.next();
                }
                (Some(q), c) if c == q => quote = None,
                (Some(_), _) => {}
                // A quote opens a scalar only where a scalar may start.
                (None, '"' | '\'') if matches!(prev, ' ' | '\t' | '[' | '{' | ',' | ':' | '-') => {
                    quote = Some(c)
                }
                (None, '#') if prev == ' ' || prev == '\t' => break,
                (None, '[' | '{') => open.push(col),
                (None, ']' | '}') => {
                    open.pop();
                }
                _ => {}
            }
            prev = c;
        }
    }
    let bracket = *open.last()?;
    let indent = here.len() - here.trim_start().len();
    (indent < bracket).then_some(bracket)
}

/// For a syntax error inside `[...]` or `{...}`, where that collection
/// began: the scanner often notices a missing `]` only lines later.
fn open_flow_hint(stack: &[Frame], src: &str) -> Option<String> {
    let pos = match stack.last()? {
        Frame::Seq { pos, .. } | Frame::Map { pos, .. } => *pos,
    };
    // Lines as YAML counts them: ended by `\r\n`, `\r` or `\n`.
    let line = src
        .split('\n')
        .flat_map(|l| l.strip_suffix('\r').unwrap_or(l).split('\r'))
        .nth(pos.line.checked_sub(1)? as usize)?;
    let open = line.chars().nth(pos.col.checked_sub(1)? as usize)?;
    let close = match open {
        '[' => ']',
        '{' => '}',
        _ => return None,
    };
    Some(format!(
        "the `{open}` at line {}, column {} is still open here; is a `{close}` missing?",
        pos.line, pos.col
    ))
}

/// Where a syntax error is shown. At the end of input the scanner moves to
/// a line after the last one, where there is nothing to point at; such an
/// error is shown just after the last thing written instead.
fn error_pos(m: &Marker, src: &str) -> Pos {
    if m.index() < src.chars().count() {
        return pos_of(m);
    }
    // Line breaks as YAML counts them: `\r\n`, `\r` or `\n`.
    let written = src.trim_end();
    let last_line = written.rsplit(['\n', '\r']).next().unwrap_or(written);
    let breaks = written.matches('\n').count() + written.matches('\r').count()
        - written.matches("\r\n").count();
    Pos {
        line: u32::try_from(breaks + 1).unwrap_or(u32::MAX),
        col: u32::try_from(last_line.chars().count() + 1).unwrap_or(u32::MAX),
    }
}

fn too_big(pos: Pos, limits: Limits) -> YamlError {
    YamlError {
        pos,
        hint: None,
        message: format!(
            "document has more than {} nodes once aliases are expanded",
            limits.max_nodes
        ),
    }
}

fn count_nodes(node: &Node) -> usize {
    let mut n = 0;
    let mut todo = vec![node];
    while let Some(node) = todo.pop() {
        n += 1;
        match &node.value {
            Value::Seq(items) => todo.extend(items),
            Value::Map(entries) => {
                for (k, v) in entries {
                    todo.push(k);
                    todo.push(v);
                }
            }
            _ => {}
        }
    }
    n
}

#[cfg(test)]
mod tests {
    use super::*;

    fn one(src: &str) -> Node {
        let mut docs = parse_documents(src, Limits::default()).unwrap();
        assert_eq!(docs.len(), 1);
        docs.remove(0)
    }

    fn keys(node: &Node) -> Vec<(&str, &str)> {
        let Value::Map(entries) = &node.value else {
            panic!("not a mapping: {node:?}")
        };
        entries
            .iter()
            .map(|(k, v)| (k.as_scalar().unwrap(), v.as_scalar().unwrap_or("…")))
            .collect()
    }

    #[test]
    fn merge_keys_fill_in_what_the_mapping_does_not_say() {
        let src = "x-a: &a { restart: always, image: a }\nx-b: &b { user: b, image: b }\nsvc:\n  <<: [*a, *b]\n  image: mine\none:\n  <<: *a\n";
        let Value::Map(top) = one(src).value else {
            panic!()
        };
        assert_eq!(
            keys(&top[2].1),
            [("image", "mine"), ("restart", "always"), ("user", "b")]
        );
        assert_eq!(keys(&top[3].1), [("restart", "always"), ("image", "a")]);
        let err = parse_documents("a:\n  <<: 3\n", Limits::default()).unwrap_err();
        assert!(err.message.contains("merge key"), "{err:?}");
    }

    #[test]
    fn flow_sequences_closed_at_any_indentation_are_read() {
        for src in [
            "a:\n  b:\n    [\n      1,\n    ]\n",
            "a:\n  test: [\n      1,\n    ]\n  c: 2\n",
            "a:\n  test: [\n      1,\n  ]\n  c: 2\n",
            "a:\n  test: [\n      1,\n]\n",
            "a:\n  b:\n    command:\n      [\n        \"run\",\n]\n",
            "a:\n  b:\n    command:\n      [\n        \"run\",\n]\n    c: 1\n",
        ] {
            parse_documents(src, Limits::default()).unwrap_or_else(|e| panic!("{src}: {e:?}"));
        }
    }

    #[test]
    fn positions_are_one_based_and_point_at_keys_and_values() {
        let node = one("kind: Stack\napps:\n  db:\n    image: 'pg'\n");
        let Value::Map(entries) = &node.value else {
            panic!()
        };
        assert_eq!(entries[0].0.pos, Pos { line: 1, col: 1 });
        assert_eq!(entries[0].1.pos, Pos { line: 1, col: 7 });
        let Value::Map(apps) = &entries[1].1.value else {
            panic!()
        };
        let Value::Map(db) = &apps[0].1.value else {
            panic!()
        };
        assert_eq!(db[0].0.pos, Pos { line: 4, col: 5 });
        assert_eq!(db[0].1.pos, Pos { line: 4, col: 12 });
        assert_eq!(
            db[0].1.value,
            Value::Scalar {
                text: "pg".into(),
                plain: false
            }
        );
    }

    #[test]
    fn mappings_start_at_their_first_key_or_brace() {
        let node = one("a: 1\nb:\n  c: 1\nd: {e: 1}\nf:\n  - g: 1\n");
        assert_eq!(node.pos, Pos { line: 1, col: 1 });
        let Value::Map(entries) = &node.value else {
            panic!()
        };
        assert_eq!(entries[1].1.pos, Pos { line: 3, col: 3 });
        assert_eq!(entries[2].1.pos, Pos { line: 4, col: 4 });
        let Value::Seq(items) = &entries[3].1.value else {
            panic!()
        };
        assert_eq!(items[0].pos, Pos { line: 6, col: 5 });
    }

    #[test]
    fn several_documents_are_split() {
        let docs = parse_documents("a: 1\n---\nb: 2\n", Limits::default()).unwrap();
        assert_eq!(docs.len(), 2);
        assert_eq!(docs[1].pos.line, 3);
    }

    #[test]
    fn duplicate_keys_are_rejected_at_the_second_key() {
        let err = parse_documents("a: 1\nb: 2\na: 3\n", Limits::default()).unwrap_err();
        assert_eq!(err.pos, Pos { line: 3, col: 1 });
        assert!(err.message.contains("duplicate key `a`"));
    }

    #[test]
    fn billion_laughs_is_refused() {
        let mut src = String::from("a0: &a0 [x, x, x, x, x, x, x, x, x, x]\n");
        for i in 1..10 {
            let prev = i - 1;
            src.push_str(&format!(
                "a{i}: &a{i} [*a{prev}, *a{prev}, *a{prev}, *a{prev}, *a{prev}, *a{prev}, *a{prev}, *a{prev}, *a{prev}, *a{prev}]\n"
            ));
        }
        let err = parse_documents(&src, Limits::default()).unwrap_err();
        assert!(err.message.contains("aliases are expanded"), "{err:?}");
    }

    #[test]
    fn deep_nesting_is_refused() {
        let src = "[".repeat(10_000);
        // The scanner's own recursion limit or ours: either way a located error.
        let err = parse_documents(&src, Limits::default()).unwrap_err();
        assert_eq!(err.pos.line, 1, "{err:?}");
    }

    #[test]
    fn null_forms_are_null() {
        let node = one("a: ~\nb:\nc: null\nd: 'null'\n");
        let Value::Map(e) = node.value else { panic!() };
        assert_eq!(e[0].1.value, Value::Null);
        assert_eq!(e[1].1.value, Value::Null);
        assert_eq!(e[2].1.value, Value::Null);
        assert!(matches!(e[3].1.value, Value::Scalar { .. }));
    }

    #[test]
    fn syntax_errors_are_located() {
        let err = parse_documents("a: [1, 2\nb: 3\n", Limits::default()).unwrap_err();
        assert!(err.pos.line >= 1);
    }

    #[test]
    fn a_value_left_out_is_placed_at_its_key() {
        let node = one("a:\nb: ~\nc:\n");
        let Value::Map(e) = node.value else { panic!() };
        assert_eq!(e[0].1.pos, Pos { line: 1, col: 1 });
        assert_eq!(e[1].1.pos, Pos { line: 2, col: 4 });
        assert_eq!(e[2].1.pos, Pos { line: 3, col: 1 });
    }

    #[test]
    fn an_unclosed_bracket_is_named_in_the_hint() {
        let err = parse_documents("a:\n  b: [1, 2\n  c: 3\n", Limits::default()).unwrap_err();
        let hint = err.hint.expect("a hint");
        assert!(hint.contains("`[` at line 2, column 6"), "{hint}");
        let err = parse_documents("a: b: c\n", Limits::default()).unwrap_err();
        assert_eq!(err.hint, None);
    }

    #[test]
    fn errors_at_the_end_of_input_point_after_the_last_text() {
        for src in ["a: [1, 2", "a: [1, 2\n", "a: [1, 2\r\n\n  \n"] {
            let err = parse_documents(src, Limits::default()).unwrap_err();
            assert_eq!(err.pos, Pos { line: 1, col: 9 }, "{src:?}: {err:?}");
        }
        let err = parse_documents("x: 1\ra: [1, 2\n", Limits::default()).unwrap_err();
        assert_eq!(err.pos, Pos { line: 2, col: 9 });
    }
}
