//! Errors found while loading an intent.

use std::fmt;
use std::path::PathBuf;

/// Everything wrong with an intent, in file order, then line, then column.
#[derive(Debug, thiserror::Error)]
pub struct IntentErrors(pub Vec<IntentError>);

impl fmt::Display for IntentErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, error) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str("\n")?;
            }
            write!(f, "{error}")?;
        }
        Ok(())
    }
}

/// One problem, located: `file:line:column: field: message`.
///
/// `line` and `column` count from 1; `line` 0 means the problem concerns the whole file (it
/// could not be read, say), and then `Display` leaves the position out. `field` is the path
/// inside the document (`spec.links[2].latencyMs`), empty for YAML syntax errors.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub struct IntentError {
    pub file: PathBuf,
    pub line: usize,
    pub column: usize,
    pub field: String,
    pub message: String,
}

impl fmt::Display for IntentError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.file.as_os_str().is_empty() {
            f.write_str("<intent>")?;
        } else {
            write!(f, "{}", self.file.display())?;
        }
        if self.line > 0 {
            write!(f, ":{}:{}", self.line, self.column)?;
        }
        if !self.field.is_empty() {
            write!(f, ": {}", self.field)?;
        }
        write!(f, ": {}", self.message)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn error(line: usize, field: &str) -> IntentError {
        IntentError {
            file: PathBuf::from("intent/network.yaml"),
            line,
            column: 7,
            field: field.to_owned(),
            message: "must be greater than 0".to_owned(),
        }
    }

    #[test]
    fn display_formats() {
        assert_eq!(
            error(23, "spec.links[2].latencyMs").to_string(),
            "intent/network.yaml:23:7: spec.links[2].latencyMs: must be greater than 0"
        );
        assert_eq!(error(23, "").to_string(), "intent/network.yaml:23:7: must be greater than 0");
        assert_eq!(error(0, "").to_string(), "intent/network.yaml: must be greater than 0");
        let errors = IntentErrors(vec![error(1, "a"), error(2, "b")]);
        assert_eq!(
            errors.to_string(),
            "intent/network.yaml:1:7: a: must be greater than 0\n\
             intent/network.yaml:2:7: b: must be greater than 0"
        );
    }
}
