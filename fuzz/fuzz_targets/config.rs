//! The configuration loader: a TOML file and `TASKER_…` variables load or fail with a
//! message, never a panic; a loaded configuration prints (secrets redacted) as TOML
//! that loads again to the same configuration.
//!
//! Input: the file's text, then `\0`-separated `NAME=VALUE` variables.
#![no_main]

use std::path::PathBuf;
use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use tasker_cli::config::Config;

/// The loader reads a path: one file per fuzzing process, rewritten for each input.
fn config_file() -> &'static PathBuf {
    static FILE: OnceLock<PathBuf> = OnceLock::new();
    FILE.get_or_init(|| {
        std::env::temp_dir().join(format!("tasker-fuzz-config-{}.toml", std::process::id()))
    })
}

fn load(text: &str, env: Vec<(String, String)>) -> Result<Config, String> {
    std::fs::write(config_file(), text).expect("the scratch file is writable");
    Config::load(Some(config_file()), env).map_err(|e| e.0)
}

fuzz_target!(|data: &[u8]| {
    // The file is read as UTF-8 and refused otherwise, before the TOML parser.
    let Ok(input) = std::str::from_utf8(data) else {
        return;
    };
    let mut parts = input.split('\0');
    let text = parts.next().unwrap_or_default();
    let env = parts
        .filter_map(|p| p.split_once('='))
        .map(|(name, value)| (name.to_owned(), value.to_owned()))
        .collect();
    let Ok(config) = load(text, env) else {
        return;
    };
    let _ = config.memory_limits();
    let _ = config.handlers();
    let shown = config.to_redacted_toml();
    // Tokens print as `***`; a real one takes their place to load the text again.
    let reloaded = load(&shown.replace("\"***\"", "\"t\""), Vec::new())
        .unwrap_or_else(|e| panic!("the printed configuration does not load: {e}\n{shown}"));
    assert_eq!(reloaded.to_redacted_toml(), shown, "printing changed it");
});
