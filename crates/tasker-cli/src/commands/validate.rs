//! `tasker validate`: every problem of every template, or a line per valid template.

use std::path::PathBuf;

use crate::{CliError, Outcome};

pub fn validate(paths: &[PathBuf]) -> Result<Outcome, CliError> {
    let mut problems = 0;
    for path in paths {
        match tasker_core::template::load_path(path) {
            Ok(templates) => {
                for t in templates {
                    println!(
                        "ok  {}  {} ({} steps)",
                        path.display(),
                        t.key(),
                        t.steps.len()
                    );
                }
            }
            Err(errors) => {
                problems += errors.0.len();
                eprintln!("{errors}");
            }
        }
    }
    if problems == 0 {
        Ok(Outcome::Success)
    } else {
        eprintln!("{problems} problem(s) found");
        Ok(Outcome::Unsuccessful)
    }
}
