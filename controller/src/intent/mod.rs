//! Operator intent: Kubernetes-style YAML documents, loaded and strictly validated.
//!
//! An intent is a set of documents (usually a directory of files, several documents per file
//! separated by `---`), each of the form
//!
//! ```yaml
//! apiVersion: cats.dev/v1alpha1
//! kind: Topology            # or ComputeService, SteeringPolicy
//! metadata:
//!   name: lab
//! spec: {}
//! ```
//!
//! Loading goes in three steps:
//! 1. [`yaml`] parses each file into trees that keep the line and column of every node;
//! 2. [`decode`] turns each document into a model value, checking shape and single values,
//!    and records each field's position in a side table keyed by its path;
//! 3. [`validate`] checks what relates items and documents (duplicates, references, address
//!    plans), finding positions in the side table.
//!
//! Every problem found is reported, not only the first, as
//! `file:line:column: field.path: message`.

mod decode;
mod error;
mod model;
#[cfg(test)]
mod pod_tests;
mod pods;
#[cfg(test)]
mod tests;
mod validate;
mod yaml;

use std::collections::HashMap;
use std::path::{Path, PathBuf};

pub use error::{IntentError, IntentErrors};
pub use model::{
    Affinity, ComputeService, Constraints, Dampening, Dataplane, EndFlavor, Health, Instance,
    Intent, Link, LinkRef, LocalityGroup, Node, Objective, PortMatch, Protocol, Role, ScoreRange,
    ScoreWeights, Scoring, SteeringPolicy, Topology, Underlay,
};
pub use pods::{PodSelector, with_pods};

/// The `apiVersion` every document must carry.
pub const API_VERSION: &str = decode::API_VERSION;

/// Loads every `*.yaml` and `*.yml` file of `dir` (not of its subdirectories), in name order.
pub fn load_dir(dir: &Path) -> Result<Intent, IntentErrors> {
    let whole = |message: String| {
        IntentErrors(vec![IntentError {
            file: dir.to_path_buf(),
            line: 0,
            column: 0,
            field: String::new(),
            message,
        }])
    };
    let entries = std::fs::read_dir(dir)
        .map_err(|error| whole(format!("cannot read the intent directory: {error}")))?;
    let mut files = Vec::new();
    for entry in entries {
        let entry =
            entry.map_err(|error| whole(format!("cannot read the intent directory: {error}")))?;
        let path = entry.path();
        let yaml =
            path.extension().is_some_and(|extension| extension == "yaml" || extension == "yml");
        if yaml && !path.is_dir() {
            files.push(path);
        }
    }
    if files.is_empty() {
        return Err(whole("no .yaml or .yml files in the intent directory".to_owned()));
    }
    files.sort_by(|a, b| a.file_name().cmp(&b.file_name()));
    load(&files, dir)
}

/// Loads the given files, in the given order.
pub fn load_files(files: &[PathBuf]) -> Result<Intent, IntentErrors> {
    load(files, files.first().map_or(Path::new(""), PathBuf::as_path))
}

fn load(files: &[PathBuf], context: &Path) -> Result<Intent, IntentErrors> {
    let mut sources = Vec::with_capacity(files.len());
    let mut errors = Vec::new();
    for file in files {
        match std::fs::read_to_string(file) {
            Ok(text) => sources.push((file.clone(), text)),
            Err(error) => errors.push(IntentError {
                file: file.clone(),
                line: 0,
                column: 0,
                field: String::new(),
                message: format!("cannot read the file: {error}"),
            }),
        }
    }
    let complete = errors.is_empty();
    check(&sources, errors, complete, files, context)
}

/// Parses and validates documents given as (file name, text) pairs; the names only label
/// errors.
pub fn parse_documents(sources: &[(PathBuf, String)]) -> Result<Intent, IntentErrors> {
    let files: Vec<PathBuf> = sources.iter().map(|(file, _)| file.clone()).collect();
    let context = files.first().map_or(Path::new(""), PathBuf::as_path);
    check(sources, Vec::new(), true, &files, context)
}

fn check(
    sources: &[(PathBuf, String)],
    mut errors: Vec<IntentError>,
    mut complete: bool,
    order: &[PathBuf],
    context: &Path,
) -> Result<Intent, IntentErrors> {
    let mut docs = Vec::new();
    let mut decoded = Vec::new();
    for (file, text) in sources {
        let parsed = yaml::parse(text);
        for error in parsed.errors {
            complete &= !error.fatal;
            errors.push(IntentError {
                file: file.clone(),
                line: error.pos.line,
                column: error.pos.column,
                field: String::new(),
                message: error.message,
            });
        }
        for root in &parsed.documents {
            let mut doc = decode::Doc::new(file.clone(), root.pos);
            let mut de = decode::De { doc: &mut doc, errors: &mut errors };
            decoded.push(decode::document(&mut de, docs.len(), root));
            docs.push(doc);
        }
    }
    let intent = validate::validate(&docs, &decoded, complete, context, &mut errors);

    let rank: HashMap<&Path, usize> =
        order.iter().enumerate().rev().map(|(i, file)| (file.as_path(), i)).collect();
    errors.sort_by_key(|error| {
        let file = rank.get(error.file.as_path()).copied().unwrap_or(0);
        (file, error.line, error.column)
    });
    errors.dedup();
    match intent {
        Some(intent) if errors.is_empty() => Ok(intent),
        // Not expected: a missing or unreadable Topology is always reported above.
        None if errors.is_empty() => Err(IntentErrors(vec![IntentError {
            file: context.to_path_buf(),
            line: 0,
            column: 0,
            field: String::new(),
            message: "no usable Topology document".to_owned(),
        }])),
        _ => Err(IntentErrors(errors)),
    }
}
