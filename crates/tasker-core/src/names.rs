//! Naming rules. Namespaces and queues become parts of queue and SQL identifiers
//! (pgmq makes a table per queue), so they are the strictest.

/// The longest namespace or queue name; pgmq's table names must fit PostgreSQL's 63.
pub const MAX_QUEUE_NAME: usize = 40;
const MAX_NAME: usize = 64;
const MAX_HANDLER: usize = 128;

fn check(
    s: &str,
    max: usize,
    first_ok: fn(char) -> bool,
    rest_ok: fn(char) -> bool,
    rule: &str,
) -> Result<(), String> {
    if s.is_empty() {
        return Err("is empty".into());
    }
    if s.len() > max {
        return Err(format!("is longer than {max} characters"));
    }
    let mut chars = s.chars();
    let first_good = chars.next().is_some_and(first_ok);
    if !first_good || !chars.all(rest_ok) {
        return Err(format!("is not allowed: {rule}"));
    }
    Ok(())
}

/// Namespaces and queues: `[a-z][a-z0-9_]*`, at most 40 characters.
pub fn check_queue_name(s: &str) -> Result<(), String> {
    check(
        s,
        MAX_QUEUE_NAME,
        |c| c.is_ascii_lowercase(),
        |c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_',
        "use lowercase letters, digits and `_`, starting with a letter",
    )
}

/// Template and step names: letters, digits, `_` and `-`, at most 64 characters.
pub fn check_name(s: &str) -> Result<(), String> {
    check(
        s,
        MAX_NAME,
        |c| c.is_ascii_alphanumeric(),
        |c| c.is_ascii_alphanumeric() || c == '_' || c == '-',
        "use letters, digits, `_` and `-`, starting with a letter or digit",
    )
}

/// Handler names: a registry key or a Ruby constant path such as `Billing::Charge`.
pub fn check_handler(s: &str) -> Result<(), String> {
    check(
        s,
        MAX_HANDLER,
        |c| c.is_ascii_alphabetic(),
        |c| c.is_ascii_alphanumeric() || matches!(c, '_' | ':' | '.' | '-'),
        "use letters, digits, `_`, `-`, `.` and `::`, starting with a letter",
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rules() {
        assert!(check_queue_name("fulfillment_v2").is_ok());
        assert!(check_queue_name("Fulfillment").is_err());
        assert!(check_queue_name("_internal").is_err());
        assert!(check_queue_name("a;drop table").is_err());
        assert!(check_queue_name(&"a".repeat(41)).is_err());
        assert!(check_name("validate-order_2").is_ok());
        assert!(check_name("with space").is_err());
        assert!(check_handler("Fulfillment::ValidateOrder").is_ok());
        assert!(check_handler("noop").is_ok());
        assert!(check_handler("rm -rf").is_err());
        assert_eq!(check_name("").unwrap_err(), "is empty");
    }
}
