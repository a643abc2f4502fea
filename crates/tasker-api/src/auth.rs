//! Bearer-token authentication, when tokens are configured, and the scope each route
//! needs: reading needs `read`, acting on tasks and steps `write`, registering templates
//! (which decides what code runs) `admin`. Each scope includes the ones below it.

use std::fmt;

use axum::extract::{Request, State};
use axum::http::header::AUTHORIZATION;
use axum::http::{Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use crate::AppState;
use crate::error::ApiError;

/// What a token may do.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Scope {
    Read,
    Write,
    Admin,
}

impl Scope {
    const ALL: [Scope; 3] = [Scope::Read, Scope::Write, Scope::Admin];

    fn as_str(self) -> &'static str {
        match self {
            Scope::Read => "read",
            Scope::Write => "write",
            Scope::Admin => "admin",
        }
    }

    /// The scope a request needs.
    fn required(method: &Method, path: &str) -> Scope {
        if method == Method::GET || method == Method::HEAD {
            Scope::Read
        } else if path == "/v1/templates" {
            Scope::Admin
        } else {
            Scope::Write
        }
    }
}

impl fmt::Display for Scope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// An accepted bearer token and its scope.
#[derive(Clone)]
pub struct Token {
    secret: String,
    scope: Scope,
}

impl Token {
    /// `read:SECRET`, `write:SECRET`, `admin:SECRET`, or a bare `SECRET` (admin, as
    /// tokens were before they had scopes).
    pub fn parse(text: &str) -> Result<Token, String> {
        let (scope, secret) = Scope::ALL
            .iter()
            .find_map(|s| {
                text.strip_prefix(s.as_str())
                    .and_then(|rest| rest.strip_prefix(':'))
                    .map(|secret| (*s, secret))
            })
            .unwrap_or((Scope::Admin, text));
        if secret.trim().is_empty() {
            return Err("a token is empty".into());
        }
        Ok(Token {
            secret: secret.to_owned(),
            scope,
        })
    }

    pub fn scope(&self) -> Scope {
        self.scope
    }
}

impl fmt::Debug for Token {
    /// Never the secret: configurations and states are logged.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Token({}:***)", self.scope)
    }
}

pub async fn require_token<S>(
    State(state): State<AppState<S>>,
    req: Request,
    next: Next,
) -> Response {
    if state.tokens.is_empty() {
        return next.run(req).await;
    }
    let presented = req
        .headers()
        .get(AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split_once(' '))
        .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
        .map(|(_, token)| token.trim().as_bytes());
    // Every token is compared, each in constant time, so timing tells nothing.
    let scope = presented.and_then(|p| {
        state.tokens.iter().fold(None, |found, t| {
            let equal = constant_time_eq(t.secret.as_bytes(), p);
            found.or(equal.then_some(t.scope))
        })
    });
    let Some(scope) = scope else {
        let mut response = ApiError::new(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "a valid `Authorization: Bearer <token>` header is required",
        )
        .into_response();
        response.headers_mut().insert(
            "www-authenticate",
            "Bearer".parse().expect("a valid header"),
        );
        return response;
    };
    let required = Scope::required(req.method(), req.uri().path());
    if scope < required {
        return ApiError::new(
            StatusCode::FORBIDDEN,
            "forbidden",
            format!(
                "this token has the `{scope}` scope; {} {} needs `{required}`",
                req.method(),
                req.uri().path()
            ),
        )
        .into_response();
    }
    next.run(req).await
}

/// Equal bytes, in time that depends on the lengths only.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn compares_bytes() {
        assert!(constant_time_eq(b"secret", b"secret"));
        assert!(!constant_time_eq(b"secret", b"secreT"));
        assert!(!constant_time_eq(b"secret", b"secret2"));
        assert!(!constant_time_eq(b"", b"x"));
    }

    #[test]
    fn tokens_carry_a_scope_prefix_or_are_admin() {
        let scope = |t: &str| Token::parse(t).map(|t| (t.scope, t.secret));
        assert_eq!(scope("read:abc"), Ok((Scope::Read, "abc".into())));
        assert_eq!(scope("write:a:b"), Ok((Scope::Write, "a:b".into())));
        assert_eq!(scope("admin:x"), Ok((Scope::Admin, "x".into())));
        assert_eq!(scope("plain"), Ok((Scope::Admin, "plain".into())));
        assert_eq!(scope("other:x"), Ok((Scope::Admin, "other:x".into())));
        assert!(scope("read:").is_err());
        assert!(scope(" ").is_err());
    }

    #[test]
    fn routes_need_the_least_scope_that_is_safe() {
        assert_eq!(Scope::required(&Method::GET, "/v1/templates"), Scope::Read);
        assert_eq!(Scope::required(&Method::POST, "/v1/tasks"), Scope::Write);
        assert_eq!(
            Scope::required(&Method::POST, "/v1/tasks/x/cancel"),
            Scope::Write
        );
        assert_eq!(
            Scope::required(&Method::POST, "/v1/templates"),
            Scope::Admin
        );
    }
}
