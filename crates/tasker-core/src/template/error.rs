//! Template and context errors, written for the person who wrote the template.

use std::fmt;

/// One problem in a template.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub struct TemplateError {
    pub file: String,
    /// 1-based line and column, where known.
    pub location: Option<(usize, usize)>,
    /// The step the problem is in, if it is in one.
    pub step: Option<String>,
    pub message: String,
}

impl TemplateError {
    pub(crate) fn file(file: &str, message: String) -> Self {
        Self {
            file: file.to_owned(),
            location: None,
            step: None,
            message,
        }
    }

    pub(crate) fn io(file: &str, e: &std::io::Error) -> Self {
        Self::file(file, format!("cannot read: {e}"))
    }

    pub(crate) fn from_json(file: &str, e: &serde_json::Error) -> Self {
        // The JSON error ends with its location; it is printed in front instead.
        let text = e.to_string();
        let message = match text.rfind(" at line ") {
            Some(i) => text[..i].to_owned(),
            None => text,
        };
        Self {
            file: file.to_owned(),
            location: Some((e.line(), e.column())),
            step: None,
            message,
        }
    }

    pub(crate) fn from_yaml(file: &str, e: &serde_norway::Error) -> Self {
        let location = e.location().map(|l| (l.line(), l.column()));
        // The YAML error repeats its location at the end; we print it in front instead.
        let text = e.to_string();
        let message = match text.rfind(" at line ") {
            Some(i) if location.is_some() => text[..i].to_owned(),
            _ => text,
        };
        Self {
            file: file.to_owned(),
            location,
            step: None,
            message,
        }
    }
}

impl fmt::Display for TemplateError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.file)?;
        if let Some((line, col)) = self.location {
            write!(f, ":{line}:{col}")?;
        }
        f.write_str(": ")?;
        if let Some(step) = &self.step {
            write!(f, "step `{step}`: ")?;
        }
        f.write_str(&self.message)
    }
}

/// Every problem found in one or more templates, in file order.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub struct TemplateErrors(pub Vec<TemplateError>);

impl TemplateErrors {
    pub(crate) fn one(e: TemplateError) -> Self {
        Self(vec![e])
    }
}

impl fmt::Display for TemplateErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, e) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str("\n")?;
            }
            e.fmt(f)?;
        }
        Ok(())
    }
}

/// A submitted context that does not match the template's `context_schema`.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("context does not match the schema of {template}: {}", problems.join("; "))]
pub struct ContextError {
    pub template: String,
    pub problems: Vec<String>,
}
