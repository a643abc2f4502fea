//! Reading the files a user names (templates, contexts) within a bound: a device such
//! as `/dev/zero`, a FIFO or a file that keeps growing must not take the process's
//! memory.

use std::io::{self, Read};
use std::path::Path;

/// The largest template file read (1 MiB).
pub const MAX_TEMPLATE_BYTES: u64 = 1 << 20;

/// The largest context file read (16 MiB).
pub const MAX_CONTEXT_BYTES: u64 = 16 << 20;

/// The text of the regular file at `path`, refused when it is not a regular file, is
/// larger than `limit` bytes, or is not UTF-8.
pub fn read_text(path: &Path, limit: u64) -> io::Result<String> {
    let file = std::fs::File::open(path)?;
    if !file.metadata()?.is_file() {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "not a regular file",
        ));
    }
    let mut text = String::new();
    file.take(limit + 1).read_to_string(&mut text)?;
    if text.len() as u64 > limit {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("larger than the limit of {limit} bytes"),
        ));
    }
    Ok(text)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn devices_and_large_files_are_refused() {
        assert_eq!(
            read_text(Path::new("/dev/zero"), 10)
                .unwrap_err()
                .to_string(),
            "not a regular file"
        );
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("big.json");
        std::fs::write(&path, "x".repeat(11)).unwrap();
        assert_eq!(
            read_text(&path, 10).unwrap_err().to_string(),
            "larger than the limit of 10 bytes"
        );
        assert_eq!(read_text(&path, 11).unwrap().len(), 11);
    }
}
