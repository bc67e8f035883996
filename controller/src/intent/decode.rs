//! From YAML trees to model values, one document at a time.
//!
//! Decoding checks everything a single document can tell: the shape (known fields, types,
//! required fields) and each value on its own (ranges, formats, repeats inside one list).
//! Rules that relate documents or items to each other live in [`super::validate`].
//!
//! Every field decoded records where it was written in a side table ([`Doc`]), keyed by its
//! field path (`spec.links[2].latencyMs`): errors found later look their position up there.
//! A path is also marked *ok* when its value decoded (or took its default), so that later
//! checks skip values that already failed instead of piling up follow-on errors.

use std::collections::{HashMap, HashSet};
use std::fmt::Display;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::path::PathBuf;
use std::str::FromStr;

use ipnetwork::{IpNetwork, Ipv6Network};

use super::error::IntentError;
use super::model::{
    Affinity, ComputeService, Constraints, Dampening, Dataplane, EndFlavor, Health, Instance, Link,
    LinkRef, LocalityGroup, Node, Objective, PortMatch, Protocol, Role, ScoreRange, ScoreWeights,
    Scoring, SteeringPolicy, Topology, Underlay,
};
use super::pods::PodSelector;
use super::yaml::{self, Pos, Value};
use crate::state::FlowDefinition;

pub(crate) const API_VERSION: &str = "cats.dev/v1alpha1";

/// One YAML document: its file and the side table of field positions.
#[derive(Debug)]
pub(crate) struct Doc {
    pub file: PathBuf,
    locs: HashMap<String, Pos>,
    ok: HashSet<String>,
}

impl Doc {
    pub fn new(file: PathBuf, root: Pos) -> Doc {
        Doc { file, locs: HashMap::from([(String::new(), root)]), ok: HashSet::new() }
    }

    /// Where `path` was written; for a field that is absent, where its closest ancestor was.
    pub fn pos(&self, mut path: &str) -> Pos {
        loop {
            if let Some(pos) = self.locs.get(path) {
                return *pos;
            }
            if path.is_empty() {
                return Pos::default();
            }
            path = parent(path);
        }
    }

    /// The field is written in the document (possibly as null).
    pub fn has(&self, path: &str) -> bool {
        self.locs.contains_key(path)
    }

    /// The field's value in the model is trustworthy: it decoded, or it took its default.
    pub fn ok(&self, path: &str) -> bool {
        self.ok.contains(path)
    }

    pub fn error(&self, path: &str, message: impl Into<String>) -> IntentError {
        self.error_at(path, self.pos(path), message)
    }

    fn error_at(&self, path: &str, pos: Pos, message: impl Into<String>) -> IntentError {
        IntentError {
            file: self.file.clone(),
            line: pos.line,
            column: pos.column,
            field: path.to_owned(),
            message: message.into(),
        }
    }

    /// `file:line:column` of a field, to point at the other half of a conflict.
    pub fn locate(&self, path: &str) -> String {
        let pos = self.pos(path);
        format!("{}:{}:{}", self.file.display(), pos.line, pos.column)
    }
}

fn parent(path: &str) -> &str {
    if path.ends_with(']')
        && let Some(at) = path.rfind('[')
    {
        return &path[..at];
    }
    path.rfind('.').map_or("", |at| &path[..at])
}

pub(crate) fn join(path: &str, key: &str) -> String {
    if path.is_empty() { key.to_owned() } else { format!("{path}.{key}") }
}

pub(crate) fn index(path: &str, i: usize) -> String {
    format!("{path}[{i}]")
}

/// Decoding state: the document's side table and where errors go.
pub(crate) struct De<'a> {
    pub doc: &'a mut Doc,
    pub errors: &'a mut Vec<IntentError>,
}

impl De<'_> {
    pub fn err(&mut self, path: &str, message: impl Into<String>) {
        let pos = self.doc.pos(path);
        self.err_at(path, pos, message);
    }

    fn err_at(&mut self, path: &str, pos: Pos, message: impl Into<String>) {
        self.errors.push(self.doc.error_at(path, pos, message));
    }

    fn mark(&mut self, path: String, pos: Pos) {
        self.doc.locs.entry(path).or_insert(pos);
    }

    /// Opens a mapping with the given fields; reports unknown and repeated keys.
    fn fields<'n>(
        &mut self,
        node: &'n yaml::Node,
        path: &str,
        known: &[&'static str],
    ) -> Option<Fields<'n>> {
        self.fields_moved(node, path, known, &[])
    }

    /// [`Self::fields`], where `moved` lists (field, new place) of fields an earlier version
    /// of the kind had here: their unknown-field error says where they went.
    fn fields_moved<'n>(
        &mut self,
        node: &'n yaml::Node,
        path: &str,
        known: &[&'static str],
        moved: &[(&str, &str)],
    ) -> Option<Fields<'n>> {
        let Value::Map(entries) = &node.value else {
            self.err(path, format!("expected a mapping, found {}", describe(node)));
            return None;
        };
        let mut values: Vec<(&'static str, &'n yaml::Node)> = Vec::new();
        for entry in entries {
            let child = join(path, &entry.key);
            match known.iter().find(|name| **name == entry.key) {
                Some(name) if values.iter().any(|(seen, _)| seen == name) => {
                    self.err_at(&child, entry.key_pos, format!("duplicate field `{name}`"));
                }
                Some(name) => {
                    self.mark(child, entry.key_pos);
                    values.push((name, &entry.value));
                }
                None => {
                    let expected =
                        known.iter().map(|name| format!("`{name}`")).collect::<Vec<_>>().join(", ");
                    let message = match moved.iter().find(|(old, _)| *old == entry.key) {
                        Some((old, new)) => format!("unknown field `{old}`: it moved to `{new}`"),
                        None => {
                            format!("unknown field `{}`, expected one of {expected}", entry.key)
                        }
                    };
                    self.mark(child.clone(), entry.key_pos);
                    self.err_at(&child, entry.key_pos, message);
                }
            }
        }
        Some(Fields { path: path.to_owned(), values })
    }
}

/// The known fields of one mapping.
struct Fields<'n> {
    path: String,
    values: Vec<(&'static str, &'n yaml::Node)>,
}

impl<'n> Fields<'n> {
    fn path(&self, name: &str) -> String {
        join(&self.path, name)
    }

    /// The field's node, unless it is absent or null.
    fn node(&self, name: &str) -> Option<&'n yaml::Node> {
        self.values
            .iter()
            .find(|(field, _)| *field == name)
            .map(|(_, node)| *node)
            .filter(|node| node.value != Value::Null)
    }

    fn req<T>(
        &self,
        de: &mut De<'_>,
        name: &str,
        decode: impl FnOnce(&mut De<'_>, &'n yaml::Node, &str) -> Option<T>,
    ) -> Option<T> {
        let path = self.path(name);
        match self.node(name) {
            Some(node) => decode_at(de, node, &path, decode),
            None if de.doc.has(&path) => {
                de.err(&path, "required field has no value");
                None
            }
            None => {
                de.err(&path, "missing required field");
                None
            }
        }
    }

    /// An optional field without default: `None` when absent or invalid.
    fn opt<T>(
        &self,
        de: &mut De<'_>,
        name: &str,
        decode: impl FnOnce(&mut De<'_>, &'n yaml::Node, &str) -> Option<T>,
    ) -> Option<T> {
        let path = self.path(name);
        self.node(name).and_then(|node| decode_at(de, node, &path, decode))
    }

    /// An optional field: `default` when absent or null (and then the path counts as ok).
    fn opt_or<T>(
        &self,
        de: &mut De<'_>,
        name: &str,
        default: T,
        decode: impl FnOnce(&mut De<'_>, &'n yaml::Node, &str) -> Option<T>,
    ) -> T {
        let path = self.path(name);
        match self.node(name) {
            Some(node) => decode_at(de, node, &path, decode).unwrap_or(default),
            None => {
                de.doc.ok.insert(path);
                default
            }
        }
    }
}

fn decode_at<'n, T>(
    de: &mut De<'_>,
    node: &'n yaml::Node,
    path: &str,
    decode: impl FnOnce(&mut De<'_>, &'n yaml::Node, &str) -> Option<T>,
) -> Option<T> {
    let value = decode(de, node, path);
    if value.is_some() {
        de.doc.ok.insert(path.to_owned());
    }
    value
}

fn describe(node: &yaml::Node) -> String {
    match &node.value {
        Value::Null => "null".to_owned(),
        Value::Seq(_) => "a sequence".to_owned(),
        Value::Map(_) => "a mapping".to_owned(),
        Value::Scalar { text, plain: true } if yaml::parse_number(text).is_some() => {
            format!("the number {text}")
        }
        Value::Scalar { text, plain: true }
            if matches!(text.as_str(), "true" | "True" | "TRUE" | "false" | "False" | "FALSE") =>
        {
            format!("the boolean {text}")
        }
        Value::Scalar { text, .. } => format!("the string {text:?}"),
    }
}

// Scalars. Each decoder reports its own error and returns `None` on failure.

fn string(de: &mut De<'_>, node: &yaml::Node, path: &str) -> Option<String> {
    match &node.value {
        Value::Scalar { text, .. } => Some(text.clone()),
        _ => {
            de.err(path, format!("expected a string, found {}", describe(node)));
            None
        }
    }
}

fn boolean(de: &mut De<'_>, node: &yaml::Node, path: &str) -> Option<bool> {
    match &node.value {
        Value::Scalar { text, plain: true }
            if matches!(text.as_str(), "true" | "True" | "TRUE") =>
        {
            Some(true)
        }
        Value::Scalar { text, plain: true }
            if matches!(text.as_str(), "false" | "False" | "FALSE") =>
        {
            Some(false)
        }
        _ => {
            de.err(path, format!("expected true or false, found {}", describe(node)));
            None
        }
    }
}

fn number(de: &mut De<'_>, node: &yaml::Node, path: &str) -> Option<f64> {
    let parsed = match &node.value {
        Value::Scalar { text, plain: true } => yaml::parse_number(text),
        _ => None,
    };
    match parsed {
        Some(value) if value.is_finite() => Some(value),
        Some(_) => {
            de.err(path, "must be a finite number");
            None
        }
        None => {
            de.err(path, format!("expected a number, found {}", describe(node)));
            None
        }
    }
}

fn integer(de: &mut De<'_>, node: &yaml::Node, path: &str) -> Option<i128> {
    let parsed = match &node.value {
        Value::Scalar { text, plain: true } => yaml::parse_int(text),
        _ => None,
    };
    if parsed.is_none() {
        de.err(path, format!("expected an integer, found {}", describe(node)));
    }
    parsed
}

fn int_in<T: TryFrom<i128>>(
    de: &mut De<'_>,
    node: &yaml::Node,
    path: &str,
    min: i128,
    max: i128,
) -> Option<T> {
    let value = integer(de, node, path)?;
    if value < min || value > max {
        de.err(path, format!("must be between {min} and {max}"));
        return None;
    }
    T::try_from(value).ok()
}

/// A number in (0, max].
fn positive(de: &mut De<'_>, node: &yaml::Node, path: &str, max: Option<f64>) -> Option<f64> {
    let value = number(de, node, path)?;
    if value <= 0.0 {
        de.err(path, "must be greater than 0");
        return None;
    }
    if let Some(max) = max
        && value > max
    {
        de.err(path, format!("must be at most {max}"));
        return None;
    }
    Some(value)
}

fn keyword<T: Copy>(
    de: &mut De<'_>,
    node: &yaml::Node,
    path: &str,
    what: &str,
    choices: &[(&str, T)],
) -> Option<T> {
    let text = string(de, node, path)?;
    let found = choices.iter().find(|(name, _)| *name == text);
    if found.is_none() {
        let expected = choices.iter().map(|(name, _)| *name).collect::<Vec<_>>().join(", ");
        de.err(path, format!("unknown {what} {text:?}, expected one of {expected}"));
    }
    found.map(|(_, value)| *value)
}

fn parsed<T: FromStr>(de: &mut De<'_>, node: &yaml::Node, path: &str, what: &str) -> Option<T> {
    let text = string(de, node, path)?;
    let value = text.parse().ok();
    if value.is_none() {
        de.err(path, format!("{text:?} is not {what}"));
    }
    value
}

fn ipv6(de: &mut De<'_>, node: &yaml::Node, path: &str) -> Option<Ipv6Addr> {
    let text = string(de, node, path)?;
    let value = text.parse().ok();
    if value.is_none() {
        let hint = if text.parse::<Ipv4Addr>().is_ok() {
            " (IPv4 addresses go in `address4`)"
        } else {
            ""
        };
        de.err(path, format!("{text:?} is not an IPv6 address{hint}"));
    }
    value
}

fn ipv4(de: &mut De<'_>, node: &yaml::Node, path: &str) -> Option<Ipv4Addr> {
    let text = string(de, node, path)?;
    let value = text.parse().ok();
    if value.is_none() {
        let hint =
            if text.parse::<Ipv6Addr>().is_ok() { " (IPv6 addresses go in `address`)" } else { "" };
        de.err(path, format!("{text:?} is not an IPv4 address{hint}"));
    }
    value
}

/// A network written as `address/length`, without host bits.
fn network<N>(de: &mut De<'_>, node: &yaml::Node, path: &str, what: &str) -> Option<N>
where
    N: FromStr + Copy + Into<IpNetwork> + Display,
{
    let text = string(de, node, path)?;
    let Some(net) = text.contains('/').then(|| text.parse::<N>().ok()).flatten() else {
        de.err(path, format!("{text:?} is not {what}"));
        return None;
    };
    let ip: IpNetwork = net.into();
    if ip.ip() != ip.network() {
        de.err(
            path,
            format!("{net} has host bits set; did you mean {}/{}?", ip.network(), ip.prefix()),
        );
        return None;
    }
    Some(net)
}

fn sr_block(de: &mut De<'_>, node: &yaml::Node, path: &str) -> Option<Ipv6Network> {
    let net: Ipv6Network = network(de, node, path, "an IPv6 prefix (like fc00::/32)")?;
    if net.prefix() != 32 {
        de.err(path, format!("must be a /32 prefix, found /{}", net.prefix()));
        return None;
    }
    Some(net)
}

fn is_label_char(c: char) -> bool {
    c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-'
}

/// `metadata.name` and instance names: an RFC 1123 label, as Kubernetes names.
fn object_name(de: &mut De<'_>, node: &yaml::Node, path: &str) -> Option<String> {
    let name = string(de, node, path)?;
    let valid = (1..=63).contains(&name.len())
        && name.chars().all(is_label_char)
        && !name.starts_with('-')
        && !name.ends_with('-');
    if !valid {
        de.err(
            path,
            format!(
                "{name:?} is not a valid name: use 1 to 63 lowercase letters, digits or '-', \
                 starting and ending with a letter or digit"
            ),
        );
    }
    // Still usable as a reference: the rules that compare names keep working.
    Some(name)
}

fn node_name(de: &mut De<'_>, node: &yaml::Node, path: &str) -> Option<String> {
    let name = string(de, node, path)?;
    if !(1..=12).contains(&name.len()) || !name.chars().all(is_label_char) {
        de.err(
            path,
            format!(
                "{name:?} is not a valid node name: use 1 to 12 lowercase letters, digits or '-'"
            ),
        );
    }
    Some(name)
}

/// A Linux interface name (see `dev_valid_name`).
fn interface_name(de: &mut De<'_>, node: &yaml::Node, path: &str) -> Option<String> {
    let name = string(de, node, path)?;
    let valid = (1..=15).contains(&name.len())
        && name != "."
        && name != ".."
        && !name.chars().any(|c| c == '/' || c == ':' || c.is_whitespace());
    if !valid {
        de.err(
            path,
            format!(
                "{name:?} is not a valid interface name: 1 to 15 characters, \
                 without '/', ':' or spaces"
            ),
        );
        return None;
    }
    Some(name)
}

// Sequences.

/// A sequence of items that may fail one by one: a failed item becomes `placeholder()` and its
/// path is not ok. `None` only when the value is not a sequence.
fn list<'n, T>(
    de: &mut De<'_>,
    node: &'n yaml::Node,
    path: &str,
    mut item: impl FnMut(&mut De<'_>, &'n yaml::Node, &str) -> Option<T>,
    placeholder: impl Fn() -> T,
) -> Option<Vec<T>> {
    let Value::Seq(items) = &node.value else {
        de.err(path, format!("expected a sequence, found {}", describe(node)));
        return None;
    };
    let mut values = Vec::with_capacity(items.len());
    for (i, node) in items.iter().enumerate() {
        let path = index(path, i);
        de.mark(path.clone(), node.pos);
        values.push(decode_at(de, node, &path, &mut item).unwrap_or_else(&placeholder));
    }
    Some(values)
}

/// A sequence that is only usable whole: `None` when any item fails.
fn strict_list<'n, T>(
    de: &mut De<'_>,
    node: &'n yaml::Node,
    path: &str,
    mut item: impl FnMut(&mut De<'_>, &'n yaml::Node, &str) -> Option<T>,
) -> Option<Vec<T>> {
    let Value::Seq(items) = &node.value else {
        de.err(path, format!("expected a sequence, found {}", describe(node)));
        return None;
    };
    let mut values = Some(Vec::with_capacity(items.len()));
    for (i, node) in items.iter().enumerate() {
        let path = index(path, i);
        de.mark(path.clone(), node.pos);
        match (decode_at(de, node, &path, &mut item), &mut values) {
            (Some(value), Some(values)) => values.push(value),
            (Some(_), None) => {}
            (None, _) => values = None,
        }
    }
    values
}

fn non_empty<T>(de: &mut De<'_>, path: &str, values: Option<Vec<T>>) -> Option<Vec<T>> {
    let values = values?;
    if values.is_empty() {
        de.err(path, "must not be empty");
        return None;
    }
    Some(values)
}

/// Reports every item equal to an earlier one.
fn no_repeats<T: PartialEq + Display>(de: &mut De<'_>, path: &str, values: &[T], what: &str) {
    for (i, value) in values.iter().enumerate() {
        if let Some(first) = values[..i].iter().position(|earlier| earlier == value) {
            de.err(&index(path, i), format!("{what} {value} is already listed at {path}[{first}]"));
        }
    }
}

/// `portGroups`: at most 255 non-empty groups of ports, no port in two groups.
fn port_groups(de: &mut De<'_>, node: &yaml::Node, path: &str) -> Option<Vec<Vec<u16>>> {
    let groups = strict_list(de, node, path, |de, node, path| {
        let ports =
            strict_list(de, node, path, |de, node, path| int_in(de, node, path, 1, 65_535))?;
        if ports.is_empty() {
            de.err(path, "a port group needs at least one port");
            return None;
        }
        Some(ports)
    })?;
    if groups.len() > 255 {
        de.err(path, format!("{} port groups, at most 255", groups.len()));
        return None;
    }
    let mut seen: Vec<(u16, String)> = Vec::new();
    for (g, group) in groups.iter().enumerate() {
        for (p, port) in group.iter().enumerate() {
            let here = index(&index(path, g), p);
            if let Some((_, first)) = seen.iter().find(|(q, _)| q == port) {
                de.err(&here, format!("port {port} is already in {first}"));
            } else {
                seen.push((*port, here));
            }
        }
    }
    Some(groups)
}

// Documents.

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(crate) enum Kind {
    Topology,
    ComputeService,
    SteeringPolicy,
}

impl Kind {
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Topology => "Topology",
            Kind::ComputeService => "ComputeService",
            Kind::SteeringPolicy => "SteeringPolicy",
        }
    }
}

#[derive(Debug)]
pub(crate) enum Object {
    Topology(Topology),
    Service(ComputeService),
    Policy(Box<SteeringPolicy>),
}

#[derive(Debug)]
pub(crate) struct Decoded {
    /// Index of the document in the list of [`Doc`]s.
    pub doc: usize,
    pub kind: Option<Kind>,
    pub name: Option<String>,
    /// `None` when the spec is not even a mapping.
    pub object: Option<Object>,
}

pub(crate) fn document(de: &mut De<'_>, doc: usize, root: &yaml::Node) -> Decoded {
    let mut decoded = Decoded { doc, kind: None, name: None, object: None };
    if !matches!(root.value, Value::Map(_)) {
        de.err(
            "",
            format!(
                "expected a document (a mapping with apiVersion, kind, metadata and spec), \
                 found {}",
                describe(root)
            ),
        );
        return decoded;
    }
    let Some(f) = de.fields(root, "", &["apiVersion", "kind", "metadata", "spec"]) else {
        return decoded;
    };
    f.req(de, "apiVersion", |de, node, path| {
        let version = string(de, node, path)?;
        if version != API_VERSION {
            de.err(path, format!("unsupported apiVersion {version:?}, expected {API_VERSION:?}"));
            return None;
        }
        Some(version)
    });
    decoded.kind = f.req(de, "kind", |de, node, path| {
        let kinds = [Kind::Topology, Kind::ComputeService, Kind::SteeringPolicy];
        let choices = kinds.map(|kind| (kind.as_str(), kind));
        keyword(de, node, path, "kind", &choices)
    });
    decoded.name = f.req(de, "metadata", |de, node, path| {
        de.fields(node, path, &["name"])?.req(de, "name", object_name)
    });
    let name = decoded.name.clone().unwrap_or_default();
    decoded.object = match decoded.kind {
        Some(Kind::Topology) => {
            f.req(de, "spec", |de, node, path| topology(de, node, path, name)).map(Object::Topology)
        }
        Some(Kind::ComputeService) => {
            f.req(de, "spec", |de, node, path| service(de, node, path, name)).map(Object::Service)
        }
        Some(Kind::SteeringPolicy) => f
            .req(de, "spec", |de, node, path| policy(de, node, path, name))
            .map(|policy| Object::Policy(Box::new(policy))),
        None => {
            // Without a kind the spec cannot be read; only say whether it is there.
            f.req(de, "spec", |_, _, _| Some(()));
            None
        }
    };
    decoded
}

fn topology(de: &mut De<'_>, node: &yaml::Node, path: &str, name: String) -> Option<Topology> {
    let f = de.fields(node, path, &["srBlock", "underlay", "nodes", "links"])?;
    let sr_block = f.req(de, "srBlock", sr_block);
    let underlay = f.opt_or(de, "underlay", Underlay::Static, |de, node, path| {
        let choices = [("static", Underlay::Static), ("external", Underlay::External)];
        keyword(de, node, path, "underlay", &choices)
    });
    let nodes = f.req(de, "nodes", |de, node, path| {
        let nodes = list(de, node, path, topology_node, Node::default);
        non_empty(de, path, nodes)
    });
    let links = f.req(de, "links", |de, node, path| list(de, node, path, link, Link::default));
    Some(Topology {
        name,
        sr_block: sr_block
            .unwrap_or_else(|| Ipv6Network::new(Ipv6Addr::UNSPECIFIED, 32).expect("valid")),
        underlay,
        nodes: nodes.unwrap_or_default(),
        links: links.unwrap_or_default(),
    })
}

pub(crate) fn role_name(role: Role) -> &'static str {
    match role {
        Role::Ingress => "ingress",
        Role::Transit => "transit",
        Role::Egress => "egress",
    }
}

fn topology_node(de: &mut De<'_>, node: &yaml::Node, path: &str) -> Option<Node> {
    let f = de.fields(
        node,
        path,
        &[
            "name",
            "index",
            "roles",
            "prefixes",
            "headendInterfaces",
            "externalInterfaces",
            "dataplane",
            "endFlavors",
            "affinityTableSize",
        ],
    )?;
    let name = f.req(de, "name", node_name);
    let index = f.req(de, "index", |de, node, path| int_in(de, node, path, 1, 65535));
    let roles = f.req(de, "roles", |de, node, path| {
        let roles = strict_list(de, node, path, |de, node, path| {
            let choices = [Role::Ingress, Role::Transit, Role::Egress].map(|r| (role_name(r), r));
            keyword(de, node, path, "role", &choices)
        });
        let roles = non_empty(de, path, roles)?;
        let names: Vec<_> = roles.iter().map(|role| role_name(*role)).collect();
        no_repeats(de, path, &names, "role");
        Some(roles)
    });
    let prefixes = f.opt_or(de, "prefixes", Vec::new(), |de, node, path| {
        strict_list(de, node, path, |de, node, path| {
            network::<IpNetwork>(de, node, path, "an IP prefix (like fd00:21::/64)")
        })
    });
    let headend_path = f.path("headendInterfaces");
    let headend_interfaces = f.opt_or(de, "headendInterfaces", Vec::new(), |de, node, path| {
        strict_list(de, node, path, interface_name)
    });
    let external_interfaces = f.opt_or(de, "externalInterfaces", Vec::new(), |de, node, path| {
        strict_list(de, node, path, interface_name)
    });
    let dataplane = f.opt_or(de, "dataplane", Dataplane::Kernel, |de, node, path| {
        let choices = [("kernel", Dataplane::Kernel), ("xdp", Dataplane::Xdp)];
        keyword(de, node, path, "dataplane", &choices)
    });
    let end_flavors = f.opt_or(de, "endFlavors", Vec::new(), |de, node, path| {
        let flavors = strict_list(de, node, path, |de, node, path| {
            let choices = [("psp", EndFlavor::Psp), ("usd", EndFlavor::Usd)];
            keyword(de, node, path, "flavor", &choices)
        })?;
        let names: Vec<_> = flavors.iter().map(|f| format!("{f:?}")).collect();
        no_repeats(de, path, &names, "flavor");
        Some(flavors)
    });
    let affinity_table_size =
        f.opt(de, "affinityTableSize", |de, node, path| int_in(de, node, path, 1024, 16_777_216));
    let affinity_path = f.path("affinityTableSize");
    if affinity_table_size.is_some() && roles.as_ref().is_some_and(|r| !r.contains(&Role::Ingress))
    {
        de.err(&affinity_path, "only nodes with role ingress have an affinity table");
    }
    let external_path = f.path("externalInterfaces");
    if !external_interfaces.is_empty()
        && dataplane == Dataplane::Kernel
        && de.doc.ok(&external_path)
    {
        de.err(
            &external_path,
            "needs `dataplane: xdp`: the kernel dataplane does not filter by interface",
        );
    }
    if let Some(roles) = &roles
        && de.doc.ok(&headend_path)
    {
        let ingress = roles.contains(&Role::Ingress);
        if ingress && headend_interfaces.is_empty() {
            de.err(
                &headend_path,
                "required for a node with role ingress: the interfaces where service traffic \
                 enters",
            );
        } else if !ingress && !headend_interfaces.is_empty() {
            de.err(&headend_path, "only nodes with role ingress have headend interfaces");
        }
    }
    Some(Node {
        name: name.unwrap_or_default(),
        index: index.unwrap_or_default(),
        roles: roles.unwrap_or_default(),
        prefixes,
        headend_interfaces,
        external_interfaces,
        dataplane,
        end_flavors,
        affinity_table_size,
    })
}

fn link(de: &mut De<'_>, node: &yaml::Node, path: &str) -> Option<Link> {
    let f = de.fields(node, path, &["a", "b", "latencyMs", "aInterface", "bInterface"])?;
    let a = f.req(de, "a", string);
    let b = f.req(de, "b", string);
    let latency_ms =
        f.req(de, "latencyMs", |de, node, path| positive(de, node, path, Some(10_000.0)));
    let a_interface = f.opt(de, "aInterface", interface_name);
    let b_interface = f.opt(de, "bInterface", interface_name);
    if let (Some(a), Some(b)) = (&a, &b)
        && a == b
    {
        de.err(
            &f.path("b"),
            format!("a link joins two different nodes, but a and b are both {a:?}"),
        );
    }
    Some(Link {
        a_interface: a_interface.or_else(|| b.clone()).unwrap_or_default(),
        b_interface: b_interface.or_else(|| a.clone()).unwrap_or_default(),
        a: a.unwrap_or_default(),
        b: b.unwrap_or_default(),
        latency_ms: latency_ms.unwrap_or_default(),
    })
}

fn service(de: &mut De<'_>, node: &yaml::Node, path: &str, name: String) -> Option<ComputeService> {
    let f = de.fields(
        node,
        path,
        &["csId", "addresses", "ports", "requestCost", "instances", "podSelector"],
    )?;
    let cs_id = f.req(de, "csId", |de, node, path| int_in(de, node, path, 1, 16383));
    let addresses = f.req(de, "addresses", |de, node, path| {
        let addresses = strict_list(de, node, path, |de, node, path| {
            parsed::<IpAddr>(de, node, path, "an IP address")
        });
        let addresses = non_empty(de, path, addresses)?;
        no_repeats(de, path, &addresses, "address");
        Some(addresses)
    });
    let ports = f.opt_or(de, "ports", Vec::new(), |de, node, path| {
        let ports = strict_list(de, node, path, port_match)?;
        let names: Vec<_> = ports.iter().map(port_name).collect();
        no_repeats(de, path, &names, "port");
        Some(ports)
    });
    let request_cost = f.req(de, "requestCost", |de, node, path| positive(de, node, path, None));
    // Selected pods are instances too, so a service with a selector may declare none.
    let selects_pods = f.node("podSelector").is_some();
    let pod_selector = f.opt(de, "podSelector", pod_selector);
    let instances = if selects_pods {
        f.opt_or(de, "instances", Vec::new(), |de, node, path| {
            list(de, node, path, instance, Instance::default)
        })
    } else {
        let instances = f.req(de, "instances", |de, node, path| {
            let instances = list(de, node, path, instance, Instance::default);
            non_empty(de, path, instances)
        });
        instances.unwrap_or_default()
    };
    Some(ComputeService {
        name,
        cs_id: cs_id.unwrap_or_default(),
        addresses: addresses.unwrap_or_default(),
        ports,
        request_cost: request_cost.unwrap_or_default(),
        instances,
        pod_selector,
    })
}

/// `podSelector`: which registered pods become instances, and the capacity of each.
fn pod_selector(de: &mut De<'_>, node: &yaml::Node, path: &str) -> Option<PodSelector> {
    let f = de.fields(node, path, &["namespace", "namePrefix", "tops"])?;
    let namespace = f.opt(de, "namespace", |de, node, path| {
        let name = string(de, node, path)?;
        let valid = (1..=63).contains(&name.len())
            && name.chars().all(is_label_char)
            && !name.starts_with('-')
            && !name.ends_with('-');
        if !valid {
            de.err(
                path,
                format!(
                    "{name:?} is not a Kubernetes namespace: use 1 to 63 lowercase letters, \
                     digits or '-', starting and ending with a letter or digit"
                ),
            );
            return None;
        }
        Some(name)
    });
    let name_prefix = f.opt(de, "namePrefix", |de, node, path| {
        let prefix = string(de, node, path)?;
        let valid = (1..=253).contains(&prefix.len())
            && prefix.chars().all(|c| is_label_char(c) || c == '.');
        if !valid {
            de.err(
                path,
                format!(
                    "{prefix:?} cannot start a pod name: use 1 to 253 lowercase letters, digits, \
                     '-' or '.'"
                ),
            );
            return None;
        }
        Some(prefix)
    });
    let tops = f.req(de, "tops", |de, node, path| positive(de, node, path, Some(1e6)));
    let (namespace_path, prefix_path) = (f.path("namespace"), f.path("namePrefix"));
    if !de.doc.has(&namespace_path) && !de.doc.has(&prefix_path) {
        de.err(
            path,
            "set namespace or namePrefix (or both): a selector without either would make every \
             pod of every namespace an instance",
        );
        return None;
    }
    Some(PodSelector { namespace, name_prefix, tops: tops? })
}

fn port_name(port: &PortMatch) -> String {
    let protocol = match port.protocol {
        Protocol::Tcp => "tcp",
        Protocol::Udp => "udp",
    };
    format!("{protocol}/{}", port.port)
}

fn port_match(de: &mut De<'_>, node: &yaml::Node, path: &str) -> Option<PortMatch> {
    let f = de.fields(node, path, &["protocol", "port"])?;
    let protocol = f.req(de, "protocol", |de, node, path| {
        let choices = [("tcp", Protocol::Tcp), ("udp", Protocol::Udp)];
        keyword(de, node, path, "protocol", &choices)
    });
    let port = f.req(de, "port", |de, node, path| int_in(de, node, path, 1, 65535));
    Some(PortMatch { protocol: protocol?, port: port? })
}

fn instance(de: &mut De<'_>, node: &yaml::Node, path: &str) -> Option<Instance> {
    let f = de.fields(
        node,
        path,
        &["name", "id", "node", "address", "address4", "tops", "utilization", "drain"],
    )?;
    let name = f.req(de, "name", object_name);
    let id = f.req(de, "id", |de, node, path| int_in(de, node, path, 1, u32::MAX.into()));
    let node = f.req(de, "node", string);
    let address = f.opt_or(de, "address", None, |de, node, path| ipv6(de, node, path).map(Some));
    let address4 = f.opt_or(de, "address4", None, |de, node, path| ipv4(de, node, path).map(Some));
    let tops = f.req(de, "tops", |de, node, path| positive(de, node, path, Some(1e6)));
    let utilization = f.opt_or(de, "utilization", 0.0, |de, node, path| {
        let value = number(de, node, path)?;
        if !(0.0..1.0).contains(&value) {
            de.err(path, "must be at least 0 and less than 1");
            return None;
        }
        Some(value)
    });
    let drain = f.opt_or(de, "drain", false, boolean);
    Some(Instance {
        name: name.unwrap_or_default(),
        id: id.unwrap_or_default(),
        node: node.unwrap_or_default(),
        address,
        address4,
        tops: tops.unwrap_or_default(),
        utilization,
        drain,
    })
}

fn policy(de: &mut De<'_>, node: &yaml::Node, path: &str, name: String) -> Option<SteeringPolicy> {
    let f = de.fields_moved(
        node,
        path,
        &[
            "service",
            "objective",
            "constraints",
            "locality",
            "slack",
            "ingress",
            "affinity",
            "dampening",
            "scoring",
            "health",
        ],
        &[("via", "spec.constraints.waypoints"), ("maxLatencyMs", "spec.constraints.maxLatencyMs")],
    )?;
    let service = f.req(de, "service", string);
    let objective = f.opt_or(de, "objective", Objective::default(), |de, node, path| {
        let choices = [
            ("min-completion-time", Objective::MinCompletionTime),
            ("min-latency", Objective::MinLatency),
            ("balanced", Objective::Balanced),
        ];
        keyword(de, node, path, "objective", &choices)
    });
    let constraints = f.opt_or(de, "constraints", Constraints::default(), constraints);
    let locality = f.opt_or(de, "locality", Vec::new(), |de, node, path| {
        let groups = strict_list(de, node, path, locality_group)?;
        for (i, group) in groups.iter().enumerate() {
            if let Some(first) = groups[..i].iter().position(|earlier| earlier.name == group.name) {
                let first = index(path, first);
                let message = format!(
                    "group name {:?} is already used by {first} ({})",
                    group.name,
                    de.doc.locate(&join(&first, "name"))
                );
                de.err(&join(&index(path, i), "name"), message);
            }
        }
        Some(groups)
    });
    check_locality(de, &f.path("locality"), &locality, &constraints, &f.path("constraints"));
    let slack = f.opt_or(de, "slack", 0.5, |de, node, path| at_least(de, node, path, 0.0));
    let ingress = f.opt_or(de, "ingress", Vec::new(), node_list);
    let affinity = f.opt_or(de, "affinity", Affinity::default(), |de, node, path| {
        let f = de.fields(node, path, &["flow", "portGroups", "timeoutSeconds"])?;
        let flow = f.opt_or(de, "flow", FlowDefinition::FiveTuple, |de, node, path| {
            let choices = [
                ("five-tuple", FlowDefinition::FiveTuple),
                ("source-address", FlowDefinition::SourceAddress),
                ("source-port-group", FlowDefinition::SourcePortGroup),
            ];
            keyword(de, node, path, "flow definition", &choices)
        });
        let port_groups = f.opt_or(de, "portGroups", Vec::new(), port_groups);
        let groups_path = f.path("portGroups");
        if flow == FlowDefinition::SourcePortGroup
            && port_groups.is_empty()
            && de.doc.ok(&groups_path)
        {
            de.err(&groups_path, "flow source-port-group needs portGroups, e.g. [[5004, 5006]]");
        }
        if flow != FlowDefinition::SourcePortGroup && !port_groups.is_empty() {
            de.err(&groups_path, "portGroups only apply with flow: source-port-group");
        }
        let timeout_seconds =
            f.opt_or(de, "timeoutSeconds", 30, |de, node, path| int_in(de, node, path, 1, 86_400));
        Some(Affinity { flow, port_groups, timeout_seconds })
    });
    let dampening = f.opt_or(de, "dampening", Dampening::default(), |de, node, path| {
        let f = de.fields(node, path, &["hysteresis", "holdDownSeconds"])?;
        let default = Dampening::default();
        let hysteresis = f.opt_or(de, "hysteresis", default.hysteresis, |de, node, path| {
            let value = number(de, node, path)?;
            if !(0.0..=1.0).contains(&value) {
                de.err(path, "must be between 0 and 1");
                return None;
            }
            Some(value)
        });
        let hold_down =
            |de: &mut De<'_>, node: &yaml::Node, path: &str| int_in(de, node, path, 0, 3600);
        let hold_down_seconds =
            f.opt_or(de, "holdDownSeconds", default.hold_down_seconds, hold_down);
        Some(Dampening { hysteresis, hold_down_seconds })
    });
    let scoring = f.opt_or(de, "scoring", Scoring::default(), scoring);
    let health = f.opt_or(de, "health", Health::default(), health);
    Some(SteeringPolicy {
        name,
        service: service.unwrap_or_default(),
        objective,
        constraints,
        locality,
        slack,
        ingress,
        affinity,
        dampening,
        scoring,
        health,
    })
}

fn health(de: &mut De<'_>, node: &yaml::Node, path: &str) -> Option<Health> {
    let f = de.fields(node, path, &["enabled", "intervalMs", "multiplier", "port"])?;
    let default = Health::default();
    let enabled = f.opt_or(de, "enabled", default.enabled, boolean);
    let interval_ms =
        f.opt_or(de, "intervalMs", default.interval_ms, |de, n, p| int_in(de, n, p, 10, 10_000));
    let multiplier =
        f.opt_or(de, "multiplier", default.multiplier, |de, n, p| int_in(de, n, p, 1, 50));
    let port = f.opt_or(de, "port", None, |de, n, p| int_in(de, n, p, 1, 65_535).map(Some));
    Some(Health { enabled, interval_ms, multiplier, port })
}

/// A number >= `min`.
fn at_least(de: &mut De<'_>, node: &yaml::Node, path: &str, min: f64) -> Option<f64> {
    let value = number(de, node, path)?;
    if value < min {
        de.err(path, format!("must be at least {min}"));
        return None;
    }
    Some(value)
}

/// Node names, without repeats.
fn node_list(de: &mut De<'_>, node: &yaml::Node, path: &str) -> Option<Vec<String>> {
    let names = strict_list(de, node, path, string)?;
    no_repeats(de, path, &names, "node");
    Some(names)
}

/// Egress site names, without repeats.
fn site_list(de: &mut De<'_>, node: &yaml::Node, path: &str) -> Option<Vec<String>> {
    let names = strict_list(de, node, path, string)?;
    no_repeats(de, path, &names, "site");
    Some(names)
}

fn constraints(de: &mut De<'_>, node: &yaml::Node, path: &str) -> Option<Constraints> {
    let f = de.fields(
        node,
        path,
        &[
            "maxLatencyMs",
            "minFreeTops",
            "sites",
            "excludeSites",
            "avoidNodes",
            "avoidLinks",
            "waypoints",
        ],
    )?;
    let max_latency_ms = f.opt(de, "maxLatencyMs", |de, node, path| positive(de, node, path, None));
    let min_free_tops = f.opt(de, "minFreeTops", |de, node, path| at_least(de, node, path, 0.0));
    let sites = f.opt_or(de, "sites", Vec::new(), site_list);
    let exclude_sites = f.opt_or(de, "excludeSites", Vec::new(), site_list);
    let avoid_nodes = f.opt_or(de, "avoidNodes", Vec::new(), node_list);
    let avoid_links = f.opt_or(de, "avoidLinks", Vec::new(), |de, node, path| {
        let links = strict_list(de, node, path, link_ref)?;
        for (i, link) in links.iter().enumerate() {
            let same =
                |earlier: &LinkRef| earlier == link || (earlier.a == link.b && earlier.b == link.a);
            if let Some(first) = links[..i].iter().position(same) {
                de.err(
                    &index(path, i),
                    format!("link {}-{} is already listed at {path}[{first}]", link.a, link.b),
                );
            }
        }
        Some(links)
    });
    let waypoints = f.opt_or(de, "waypoints", Vec::new(), node_list);

    let (sites_path, exclude_path) = (f.path("sites"), f.path("excludeSites"));
    if de.doc.ok(&sites_path) && de.doc.ok(&exclude_path) {
        for (i, site) in exclude_sites.iter().enumerate() {
            if let Some(j) = sites.iter().position(|allowed| allowed == site) {
                let message = format!(
                    "site {site:?} is also allowed by {sites_path}[{j}] ({}); a site is either \
                     allowed or excluded",
                    de.doc.locate(&index(&sites_path, j))
                );
                de.err(&index(&exclude_path, i), message);
            }
        }
    }
    let (avoid_path, waypoints_path) = (f.path("avoidNodes"), f.path("waypoints"));
    if de.doc.ok(&avoid_path) && de.doc.ok(&waypoints_path) {
        for (i, waypoint) in waypoints.iter().enumerate() {
            if let Some(j) = avoid_nodes.iter().position(|avoided| avoided == waypoint) {
                let message = format!(
                    "waypoint {waypoint:?} is also avoided by {avoid_path}[{j}] ({}); a path \
                     cannot both pass and avoid it",
                    de.doc.locate(&index(&avoid_path, j))
                );
                de.err(&index(&waypoints_path, i), message);
            }
        }
    }
    Some(Constraints {
        max_latency_ms,
        min_free_tops,
        sites,
        exclude_sites,
        avoid_nodes,
        avoid_links,
        waypoints,
    })
}

fn link_ref(de: &mut De<'_>, node: &yaml::Node, path: &str) -> Option<LinkRef> {
    let f = de.fields(node, path, &["a", "b"])?;
    let a = f.req(de, "a", string);
    let b = f.req(de, "b", string);
    let (a, b) = (a?, b?);
    if a == b {
        de.err(
            &f.path("b"),
            format!("a link joins two different nodes, but a and b are both {a:?}"),
        );
        return None;
    }
    Some(LinkRef { a, b })
}

fn locality_group(de: &mut De<'_>, node: &yaml::Node, path: &str) -> Option<LocalityGroup> {
    let f = de.fields(node, path, &["name", "sites"])?;
    let name = f.req(de, "name", |de, node, path| {
        let name = string(de, node, path)?;
        if !(1..=63).contains(&name.len()) || !name.chars().all(is_label_char) {
            de.err(
                path,
                format!(
                    "{name:?} is not a valid group name: use 1 to 63 lowercase letters, digits \
                     or '-'"
                ),
            );
        }
        Some(name)
    });
    let sites = f.req(de, "sites", |de, node, path| {
        let sites = strict_list(de, node, path, string);
        let sites = non_empty(de, path, sites)?;
        no_repeats(de, path, &sites, "site");
        Some(sites)
    });
    Some(LocalityGroup { name: name?, sites: sites? })
}

/// Locality against itself and the constraints: each site in one group only, allowed by
/// `sites` (when it lists any) and not excluded.
fn check_locality(
    de: &mut De<'_>,
    path: &str,
    locality: &[LocalityGroup],
    constraints: &Constraints,
    constraints_path: &str,
) {
    if !de.doc.ok(path) {
        return;
    }
    let sites_path = join(constraints_path, "sites");
    let exclude_path = join(constraints_path, "excludeSites");
    let sites_ok = de.doc.ok(constraints_path) && de.doc.ok(&sites_path);
    let exclude_ok = de.doc.ok(constraints_path) && de.doc.ok(&exclude_path);
    // Site -> (its group, its path).
    let mut seen: HashMap<&str, (&str, String)> = HashMap::new();
    for (g, group) in locality.iter().enumerate() {
        let group_path = join(&index(path, g), "sites");
        for (k, site) in group.sites.iter().enumerate() {
            let site_path = index(&group_path, k);
            if let Some((first_group, first)) = seen.get(site.as_str()) {
                let message = format!(
                    "site {site:?} is already in group {first_group:?} ({first} at {}); a site \
                     belongs to one group only",
                    de.doc.locate(first)
                );
                de.err(&site_path, message);
                continue;
            }
            // Repeats inside the group are reported by the group itself.
            if group.sites[..k].contains(site) {
                continue;
            }
            seen.insert(site, (&group.name, site_path.clone()));
            if sites_ok && !constraints.sites.is_empty() && !constraints.sites.contains(site) {
                let message = format!(
                    "site {site:?} is not allowed by {sites_path} ({}: {})",
                    de.doc.locate(&sites_path),
                    constraints.sites.join(", ")
                );
                de.err(&site_path, message);
            }
            if exclude_ok && let Some(j) = constraints.exclude_sites.iter().position(|s| s == site)
            {
                let message = format!(
                    "site {site:?} is excluded by {exclude_path}[{j}] ({})",
                    de.doc.locate(&index(&exclude_path, j))
                );
                de.err(&site_path, message);
            }
        }
    }
}

fn scoring(de: &mut De<'_>, node: &yaml::Node, path: &str) -> Option<Scoring> {
    let f = de.fields(node, path, &["network", "compute", "weights"])?;
    let default = Scoring::default();
    let network = f.opt_or(de, "network", default.network, |de, node, path| {
        score_range(de, node, path, default.network)
    });
    let compute = f.opt_or(de, "compute", default.compute, |de, node, path| {
        score_range(de, node, path, default.compute)
    });
    let weights = f.opt_or(de, "weights", default.weights, |de, node, path| {
        let f = de.fields(node, path, &["network", "compute"])?;
        let weight = |de: &mut De<'_>, node: &yaml::Node, path: &str| at_least(de, node, path, 0.0);
        let network = f.opt_or(de, "network", default.weights.network, weight);
        let compute = f.opt_or(de, "compute", default.weights.compute, weight);
        let (network_path, compute_path) = (f.path("network"), f.path("compute"));
        if network + compute <= 0.0 && de.doc.ok(&network_path) && de.doc.ok(&compute_path) {
            de.err(path, "the weights must not all be 0: the L2 score is their weighted mean");
            return None;
        }
        Some(ScoreWeights { network, compute })
    });
    Some(Scoring { network, compute, weights })
}

fn score_range(
    de: &mut De<'_>,
    node: &yaml::Node,
    path: &str,
    default: ScoreRange,
) -> Option<ScoreRange> {
    let f = de.fields(node, path, &["bestMs", "worstMs"])?;
    let best_ms =
        f.opt_or(de, "bestMs", default.best_ms, |de, node, path| at_least(de, node, path, 0.0));
    let worst_ms =
        f.opt_or(de, "worstMs", default.worst_ms, |de, node, path| positive(de, node, path, None));
    let (best_path, worst_path) = (f.path("bestMs"), f.path("worstMs"));
    if !de.doc.ok(&best_path) || !de.doc.ok(&worst_path) {
        return None;
    }
    if worst_ms <= best_ms {
        // Point at the field written; when both are, at worstMs.
        if de.doc.has(&worst_path) {
            let message = format!(
                "must be greater than bestMs {best_ms}{}",
                if de.doc.has(&best_path) {
                    format!(" ({})", de.doc.locate(&best_path))
                } else {
                    " (the default)".to_owned()
                }
            );
            de.err(&worst_path, message);
        } else {
            de.err(&best_path, format!("must be less than worstMs (default {worst_ms})"));
        }
        return None;
    }
    Some(ScoreRange { best_ms, worst_ms })
}
