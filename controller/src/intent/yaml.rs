//! A YAML document tree that remembers where every node and key came from.
//!
//! Built from the event stream of the parser serde-saphyr uses (`serde_saphyr::granit_parser`),
//! whose events carry source spans. Serde deserialisation stops at the first error of a
//! document; walking a tree lets the decoder report every problem and name its field path.
//!
//! Scalars keep their text and whether they were written plain (unquoted): only plain scalars
//! resolve to null or numbers, following the YAML 1.2 core schema.

use std::collections::HashMap;

use serde_saphyr::granit_parser::{Event, Parser, ScalarStyle, Span, Tag};

/// A position in a source file; both count from 1.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub(crate) struct Pos {
    pub line: usize,
    pub column: usize,
}

impl Pos {
    fn of(span: &Span) -> Pos {
        Pos { line: span.start.line(), column: span.start.col() + 1 }
    }
}

#[derive(Clone, Debug, PartialEq)]
pub(crate) struct Node {
    pub pos: Pos,
    pub value: Value,
}

#[derive(Clone, Debug, PartialEq)]
pub(crate) enum Value {
    Null,
    /// `plain` is false for quoted and block scalars and for `!!str`: those are always strings.
    Scalar {
        text: String,
        plain: bool,
    },
    Seq(Vec<Node>),
    Map(Vec<Entry>),
}

#[derive(Clone, Debug, PartialEq)]
pub(crate) struct Entry {
    pub key: String,
    pub key_pos: Pos,
    pub value: Node,
}

/// A problem in the YAML itself (not in what it says).
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct SyntaxError {
    pub pos: Pos,
    pub message: String,
    /// The rest of the file could not be read.
    pub fatal: bool,
}

#[derive(Debug, Default)]
pub(crate) struct Parsed {
    /// The root of each document, in order; empty documents are left out.
    pub documents: Vec<Node>,
    pub errors: Vec<SyntaxError>,
}

/// Aliases may repeat a subtree; stop expanding them past this many nodes per file.
const MAX_NODES: usize = 1_000_000;

enum Frame {
    Seq {
        pos: Pos,
        anchor: usize,
        items: Vec<Node>,
    },
    Map {
        pos: Pos,
        anchor: usize,
        entries: Vec<Entry>,
        /// The key waiting for its value; `None` inside means the key was unusable.
        key: Option<Option<(String, Pos)>>,
    },
}

struct Builder {
    stack: Vec<Frame>,
    root: Option<Node>,
    anchors: HashMap<usize, Node>,
    nodes: usize,
    parsed: Parsed,
}

impl Builder {
    fn error(&mut self, pos: Pos, message: impl Into<String>) {
        self.parsed.errors.push(SyntaxError { pos, message: message.into(), fatal: false });
    }

    /// Accepts core-schema tags (`!!str` forces a string) and rejects any other.
    /// Returns whether the node was tagged `!!str`.
    fn check_tag(&mut self, tag: Option<&Tag>, span: &Span) -> bool {
        let Some(tag) = tag else { return false };
        match tag.core_suffix() {
            Some("str") => true,
            Some(_) => false,
            None => {
                let pos = span.tag_start.as_ref().map_or_else(
                    || Pos::of(span),
                    |marker| Pos { line: marker.line(), column: marker.col() + 1 },
                );
                self.error(
                    pos,
                    format!("unsupported YAML tag `{}{}`", tag.original_handle(), tag.suffix()),
                );
                false
            }
        }
    }

    fn complete(&mut self, node: Node, anchor: usize) {
        if anchor != 0 {
            self.anchors.insert(anchor, node.clone());
        }
        let mut bad_key = None;
        match self.stack.last_mut() {
            None => self.root = Some(node),
            Some(Frame::Seq { items, .. }) => items.push(node),
            Some(Frame::Map { entries, key, .. }) => match key.take() {
                None => {
                    let pos = node.pos;
                    *key = Some(match node.value {
                        Value::Scalar { text, .. } => Some((text, pos)),
                        Value::Null => Some((String::new(), pos)),
                        Value::Seq(_) | Value::Map(_) => {
                            bad_key = Some(pos);
                            None
                        }
                    });
                }
                Some(None) => {}
                Some(Some((key, key_pos))) => entries.push(Entry { key, key_pos, value: node }),
            },
        }
        if let Some(pos) = bad_key {
            self.error(pos, "mapping keys must be strings");
        }
    }

    fn event(&mut self, event: Event<'_>, span: &Span) {
        let pos = Pos::of(span);
        match event {
            Event::DocumentStart(..) => {
                self.stack.clear();
                self.root = None;
                self.anchors.clear();
            }
            Event::DocumentEnd => {
                if let Some(root) = self.root.take()
                    && root.value != Value::Null
                {
                    self.parsed.documents.push(root);
                }
            }
            Event::Scalar(text, style, anchor, tag) => {
                self.nodes += 1;
                let forced_string = self.check_tag(tag.as_deref(), span);
                let plain = style == ScalarStyle::Plain && !forced_string;
                let value = if plain && is_null(&text) {
                    Value::Null
                } else {
                    Value::Scalar { text: text.into_owned(), plain }
                };
                self.complete(Node { pos, value }, anchor);
            }
            Event::SequenceStart(_, anchor, tag) => {
                self.nodes += 1;
                self.check_tag(tag.as_deref(), span);
                self.stack.push(Frame::Seq { pos, anchor, items: Vec::new() });
            }
            Event::MappingStart(_, anchor, tag) => {
                self.nodes += 1;
                self.check_tag(tag.as_deref(), span);
                self.stack.push(Frame::Map { pos, anchor, entries: Vec::new(), key: None });
            }
            Event::SequenceEnd | Event::MappingEnd => match self.stack.pop() {
                Some(Frame::Seq { pos, anchor, items }) => {
                    let node = Node { pos, value: Value::Seq(items) };
                    self.complete(node, anchor);
                }
                Some(Frame::Map { pos, anchor, entries, .. }) => {
                    let node = Node { pos, value: Value::Map(entries) };
                    self.complete(node, anchor);
                }
                None => {}
            },
            Event::Alias(id) => match self.anchors.get(&id) {
                Some(target) => {
                    let mut node = target.clone();
                    node.pos = pos;
                    self.nodes += count(&node);
                    self.complete(node, 0);
                }
                None => {
                    self.error(pos, "alias to an anchor that is not complete yet");
                    self.complete(Node { pos, value: Value::Null }, 0);
                }
            },
            _ => {}
        }
    }
}

fn count(node: &Node) -> usize {
    1 + match &node.value {
        Value::Null | Value::Scalar { .. } => 0,
        Value::Seq(items) => items.iter().map(count).sum(),
        Value::Map(entries) => entries.iter().map(|entry| 1 + count(&entry.value)).sum(),
    }
}

/// YAML 1.2 core-schema null.
fn is_null(text: &str) -> bool {
    matches!(text, "" | "~" | "null" | "Null" | "NULL")
}

/// Parses every document of one file. A syntax error ends the file: the documents before it
/// are returned.
pub(crate) fn parse(text: &str) -> Parsed {
    let mut builder = Builder {
        stack: Vec::new(),
        root: None,
        anchors: HashMap::new(),
        nodes: 0,
        parsed: Parsed::default(),
    };
    for next in Parser::new_from_str(text) {
        match next {
            Ok((event, span)) => builder.event(event, &span),
            Err(error) => {
                let marker = error.marker();
                builder.parsed.errors.push(SyntaxError {
                    pos: Pos { line: marker.line(), column: marker.col() + 1 },
                    message: format!("invalid YAML: {}", error.info()),
                    fatal: true,
                });
                break;
            }
        }
        if builder.nodes > MAX_NODES {
            builder.parsed.errors.push(SyntaxError {
                pos: Pos { line: 1, column: 1 },
                message: format!("more than {MAX_NODES} YAML nodes (after expanding aliases)"),
                fatal: true,
            });
            break;
        }
    }
    builder.parsed
}

/// The YAML 1.2 core-schema integer a plain scalar spells, if it is one.
pub(crate) fn parse_int(text: &str) -> Option<i128> {
    let digits = |s: &str, radix: u32| !s.is_empty() && s.chars().all(|c| c.is_digit(radix));
    if let Some(hex) = text.strip_prefix("0x") {
        return digits(hex, 16).then(|| i128::from_str_radix(hex, 16).ok())?;
    }
    if let Some(octal) = text.strip_prefix("0o") {
        return digits(octal, 8).then(|| i128::from_str_radix(octal, 8).ok())?;
    }
    let unsigned = text.strip_prefix(['-', '+']).unwrap_or(text);
    digits(unsigned, 10).then(|| text.parse().ok())?
}

/// The YAML 1.2 core-schema number (integer or float) a plain scalar spells, if it is one.
pub(crate) fn parse_number(text: &str) -> Option<f64> {
    if let Some(int) = parse_int(text) {
        return Some(int as f64);
    }
    let unsigned = text.strip_prefix(['-', '+']).unwrap_or(text);
    let negative = text.starts_with('-');
    if matches!(unsigned, ".inf" | ".Inf" | ".INF") {
        return Some(if negative { f64::NEG_INFINITY } else { f64::INFINITY });
    }
    if unsigned.len() == text.len() && matches!(text, ".nan" | ".NaN" | ".NAN") {
        return Some(f64::NAN);
    }
    // [-+]? ( \. [0-9]+ | [0-9]+ ( \. [0-9]* )? ) ( [eE] [-+]? [0-9]+ )?
    let (mantissa, exponent) = match unsigned.find(['e', 'E']) {
        Some(at) => (&unsigned[..at], Some(&unsigned[at + 1..])),
        None => (unsigned, None),
    };
    let (whole, fraction) = match mantissa.split_once('.') {
        Some((whole, fraction)) => (whole, Some(fraction)),
        None => (mantissa, None),
    };
    let all_digits = |s: &str| s.chars().all(|c| c.is_ascii_digit());
    let mantissa_ok = all_digits(whole)
        && fraction.is_none_or(all_digits)
        && (!whole.is_empty() || fraction.is_some_and(|f| !f.is_empty()));
    let exponent_ok = exponent.is_none_or(|e| {
        let e = e.strip_prefix(['-', '+']).unwrap_or(e);
        !e.is_empty() && all_digits(e)
    });
    if mantissa_ok && exponent_ok { text.parse().ok() } else { None }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scalar(text: &str, plain: bool) -> Value {
        Value::Scalar { text: text.to_owned(), plain }
    }

    #[test]
    fn tree_keeps_positions_and_styles() {
        let parsed = parse("a: 1\nb:\n  - x\n  - 'y'\n  - {c: ~}\n");
        assert!(parsed.errors.is_empty());
        assert_eq!(parsed.documents.len(), 1);
        let Value::Map(entries) = &parsed.documents[0].value else {
            panic!("root is not a mapping")
        };
        assert_eq!(entries[0].key, "a");
        assert_eq!(entries[0].key_pos, Pos { line: 1, column: 1 });
        assert_eq!(entries[0].value.value, scalar("1", true));
        assert_eq!(entries[0].value.pos, Pos { line: 1, column: 4 });
        assert_eq!(entries[1].key_pos, Pos { line: 2, column: 1 });
        let Value::Seq(items) = &entries[1].value.value else { panic!("b is not a sequence") };
        assert_eq!(items[0].value, scalar("x", true));
        assert_eq!(items[1].value, scalar("y", false));
        assert_eq!(items[1].pos, Pos { line: 4, column: 5 });
        let Value::Map(inner) = &items[2].value else { panic!("item 2 is not a mapping") };
        assert_eq!(inner[0].key, "c");
        assert_eq!(inner[0].value.value, Value::Null);
    }

    #[test]
    fn documents_split_and_empty_ones_dropped() {
        let parsed = parse("---\na: 1\n---\n# nothing\n---\nb: 2\n...\n");
        assert!(parsed.errors.is_empty());
        assert_eq!(parsed.documents.len(), 2);
        assert_eq!(parsed.documents[1].pos.line, 6);
    }

    #[test]
    fn aliases_expand_at_the_alias() {
        let parsed = parse("a: &x [1, 2]\nb: *x\n");
        let Value::Map(entries) = &parsed.documents[0].value else {
            panic!("root is not a mapping")
        };
        assert_eq!(entries[1].value.pos, Pos { line: 2, column: 4 });
        assert_eq!(
            entries[1].value.value,
            Value::Seq(vec![
                Node { pos: Pos { line: 1, column: 8 }, value: scalar("1", true) },
                Node { pos: Pos { line: 1, column: 11 }, value: scalar("2", true) },
            ])
        );
    }

    #[test]
    fn syntax_error_is_located_and_fatal() {
        let parsed = parse("a: b\n c: d: e\n");
        assert_eq!(parsed.errors.len(), 1);
        assert!(parsed.errors[0].fatal);
        assert_eq!(parsed.errors[0].pos, Pos { line: 2, column: 3 });
        assert!(parsed.errors[0].message.starts_with("invalid YAML: "));
    }

    #[test]
    fn tags() {
        let parsed = parse("a: !!str 12\nb: !custom 3\n");
        let Value::Map(entries) = &parsed.documents[0].value else {
            panic!("root is not a mapping")
        };
        assert_eq!(entries[0].value.value, scalar("12", false));
        assert_eq!(parsed.errors.len(), 1);
        assert_eq!(parsed.errors[0].pos, Pos { line: 2, column: 4 });
        assert!(!parsed.errors[0].fatal);
    }

    #[test]
    fn alias_bomb_is_stopped() {
        let mut text = String::from("a0: &a0 [x, x, x, x, x, x, x, x, x, x]\n");
        for i in 1..8 {
            let p = i - 1;
            text.push_str(&format!(
                "a{i}: &a{i} [*a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}]\n"
            ));
        }
        let parsed = parse(&text);
        assert!(parsed.errors.iter().any(|e| e.fatal));
    }

    #[test]
    fn numbers() {
        assert_eq!(parse_int("42"), Some(42));
        assert_eq!(parse_int("-7"), Some(-7));
        assert_eq!(parse_int("0x1F"), Some(31));
        assert_eq!(parse_int("0o17"), Some(15));
        assert_eq!(parse_int("1.0"), None);
        assert_eq!(parse_int("1_000"), None);
        assert_eq!(parse_number("2"), Some(2.0));
        assert_eq!(parse_number("0.02"), Some(0.02));
        assert_eq!(parse_number(".5"), Some(0.5));
        assert_eq!(parse_number("1e3"), Some(1000.0));
        assert_eq!(parse_number("-1.5E-1"), Some(-0.15));
        assert_eq!(parse_number(".inf"), Some(f64::INFINITY));
        assert!(parse_number(".nan").is_some_and(f64::is_nan));
        assert_eq!(parse_number("inf"), None);
        assert_eq!(parse_number("fast"), None);
        assert_eq!(parse_number("."), None);
        assert_eq!(parse_number("1e"), None);
    }
}
