//! Templates, YAML and JSON: any text is a template or errors that say why, never a
//! panic; a template's canonical JSON, which the stores keep and the API reads back
//! with the YAML parser, is the same template again.
#![no_main]

use libfuzzer_sys::fuzz_target;
use tasker_core::template::{TaskTemplate, parse_json_template, parse_template};

fuzz_target!(|data: &[u8]| {
    // Template files are read as UTF-8 and refused otherwise, before any parser.
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    for parsed in [
        parse_template(text, "fuzz.yaml"),
        parse_json_template(text, "fuzz.json"),
    ] {
        match parsed {
            Ok(template) => check(&template),
            Err(errors) => {
                assert!(!errors.0.is_empty(), "an error names a problem");
                let _ = errors.to_string();
            }
        }
    }
});

fn check(template: &TaskTemplate) {
    let canonical = template.canonical_json();
    let _ = template.edges();
    let _ = template.check_context(&serde_json::json!({}));
    for step in &template.steps {
        let _ = template.check_context(&step.config);
    }
    let again = parse_template(&canonical, "stored")
        .unwrap_or_else(|e| panic!("the canonical JSON {canonical} does not parse: {e}"));
    assert_eq!(
        again.canonical_json(),
        canonical,
        "the canonical JSON changed"
    );
}
