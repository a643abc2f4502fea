//! `tasker validate`: a line for every file checked — its template, or every problem
//! of it — then the number of problems.

use std::path::PathBuf;

use crate::{CliError, Outcome};

pub fn validate(paths: &[PathBuf]) -> Result<Outcome, CliError> {
    let (mut files, mut problems) = (0, 0);
    for path in paths {
        let loaded = match tasker_core::template::load_each(path) {
            Ok(loaded) => loaded,
            Err(errors) => {
                problems += errors.0.len();
                eprintln!("{errors}");
                continue;
            }
        };
        for (file, template) in loaded {
            files += 1;
            match template {
                Ok(t) => println!(
                    "ok  {}  {} ({} steps)",
                    file.display(),
                    t.key(),
                    t.steps.len()
                ),
                Err(errors) => {
                    problems += errors.0.len();
                    eprintln!("{errors}");
                }
            }
        }
    }
    if problems == 0 {
        eprintln!("{files} file(s) checked, no problems");
        Ok(Outcome::Success)
    } else {
        eprintln!("{files} file(s) checked, {problems} problem(s) found");
        Ok(Outcome::Unsuccessful)
    }
}
