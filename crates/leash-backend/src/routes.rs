//! Declared path tables: the one description of which paths a backend serves, which of
//! them need `sudo`, which are callable without a token, and which path segments are
//! case-insensitive names.
//!
//! The core matches the request's canonical path against the table **once**, before
//! authentication and the ACL, and decides routing, `sudo` and "unauthenticated" from that
//! one match; the backend then serves exactly the path that was authorised. A backend that
//! declares a table serves nothing outside it (the core answers "no handler" first), so a
//! path cannot be served while escaping the table's `sudo` mark.
//!
//! Patterns: literal segments, `:name` for one non-empty segment, and a final `*` for the
//! rest. `x/*` matches `x/` and everything below it but not `x`; `x` matches `x` and, for a
//! list, `x/`. The first matching route wins, so where `x/*` and `x` differ in marks,
//! `x/*` comes first.

use std::borrow::Cow;

use crate::error::CoreError;

/// One entry of a backend's path table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Route {
    /// The pattern, relative to the mount.
    pub pattern: &'static str,
    /// The caller's policy must grant `sudo` on the path (Vault's root-protected paths).
    pub sudo: bool,
    /// Callable without a token (logins, health). The ACL does not apply.
    pub unauthenticated: bool,
    /// The `:name` segments are names the backend stores lower-cased: their canonical
    /// spelling is lower case, and the core lower-cases them before the ACL so that
    /// `users/Admin` and `users/admin` are one resource to the policy too.
    pub fold: bool,
}

impl Route {
    /// A route with no special marks.
    pub const fn path(pattern: &'static str) -> Route {
        Route {
            pattern,
            sudo: false,
            unauthenticated: false,
            fold: false,
        }
    }

    /// Marks the route root-protected.
    pub const fn sudo(self) -> Route {
        Route { sudo: true, ..self }
    }

    /// Marks the route callable without a token.
    pub const fn unauthenticated(self) -> Route {
        Route {
            unauthenticated: true,
            ..self
        }
    }

    /// Marks the route's `:name` segments as case-insensitive names.
    pub const fn folded(self) -> Route {
        Route { fold: true, ..self }
    }
}

/// What a backend serves.
#[derive(Debug, Clone, Copy)]
pub enum Routes<'a> {
    /// Every path under the mount, none root-protected or unauthenticated, no folding
    /// (secrets engines whose paths are data: KV, database).
    Any,
    /// Exactly these routes.
    Table(&'a [Route]),
}

/// The route a relative path matched, and the path in its canonical spelling.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Matched<'p> {
    /// The matched route (a plain [`Route::path`] of the pattern `*` for [`Routes::Any`]).
    pub route: Route,
    /// The canonical relative path (folded segments lower-cased).
    pub path: Cow<'p, str>,
}

/// The catch-all route of [`Routes::Any`].
const ANY: Route = Route::path("*");

impl Routes<'_> {
    /// Matches `path` (relative to the mount, already free of a non-list trailing `/`).
    /// `Ok(None)` when the backend serves no such path; `Err` when a folded name is
    /// spelled in a way that cannot be canonical (leading or trailing white space).
    pub fn find<'p>(&self, path: &'p str) -> Result<Option<Matched<'p>>, CoreError> {
        let table = match self {
            Routes::Any => {
                return Ok(Some(Matched {
                    route: ANY,
                    path: Cow::Borrowed(path),
                }));
            }
            Routes::Table(t) => t,
        };
        let Some(route) = table.iter().find(|r| matches(r.pattern, path)) else {
            return Ok(None);
        };
        Ok(Some(Matched {
            route: *route,
            path: canonical(route, path)?,
        }))
    }
}

impl Routes<'_> {
    /// Whether `path` is served without a token.
    pub fn is_unauthenticated(&self, path: &str) -> bool {
        self.find(path)
            .ok()
            .flatten()
            .is_some_and(|m| m.route.unauthenticated)
    }

    /// Whether `path` needs `sudo`.
    pub fn is_sudo(&self, path: &str) -> bool {
        self.find(path).ok().flatten().is_some_and(|m| m.route.sudo)
    }
}

/// Whether `path` matches `pattern` (see the module docs). No allocation: this runs for
/// every request against each route of the backend until one matches.
fn matches(pattern: &str, path: &str) -> bool {
    let mut segs = pattern.split('/').peekable();
    let mut rest = Some(path);
    while let Some(seg) = segs.next() {
        let last = segs.peek().is_none();
        let Some(r) = rest else { return false };
        if seg == "*" && last {
            return true;
        }
        let (head, tail) = match r.split_once('/') {
            Some((h, t)) => (h, Some(t)),
            None => (r, None),
        };
        let ok = if seg.starts_with(':') {
            !head.is_empty()
        } else {
            seg == head
        };
        if !ok {
            return false;
        }
        if last {
            return matches!(tail, None | Some(""));
        }
        rest = tail;
    }
    false
}

/// `path` with the segments under `:name` of a folded route lower-cased.
fn canonical<'p>(route: &Route, path: &'p str) -> Result<Cow<'p, str>, CoreError> {
    if !route.fold {
        return Ok(Cow::Borrowed(path));
    }
    let pattern: Vec<&str> = route.pattern.split('/').collect();
    let mut changed = false;
    let mut out: Vec<Cow<'p, str>> = Vec::new();
    for (i, seg) in path.split('/').enumerate() {
        let named = pattern.get(i).is_some_and(|p| p.starts_with(':'));
        if named {
            if seg.trim() != seg {
                return Err(CoreError::invalid(
                    "a name in the request path has leading or trailing white space",
                ));
            }
            if seg.chars().any(|c| c.is_ascii_uppercase()) {
                changed = true;
                out.push(Cow::Owned(seg.to_ascii_lowercase()));
                continue;
            }
        }
        out.push(Cow::Borrowed(seg));
    }
    if !changed {
        return Ok(Cow::Borrowed(path));
    }
    Ok(Cow::Owned(out.join("/")))
}

/// The canonical spelling of a full request path for `is_list`: a trailing `/` means
/// "the directory" only to a list; for every other operation it is dropped, so the ACL
/// and the backend see the one resource it names (`database/creds/rw/` is
/// `database/creds/rw`).
pub fn canonical_request_path(path: &str, is_list: bool) -> &str {
    if is_list {
        path
    } else {
        path.strip_suffix('/').unwrap_or(path)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TABLE: &[Route] = &[
        Route::path("login/:name").unauthenticated().folded(),
        Route::path("users/:name").folded(),
        Route::path("users").sudo(),
        Route::path("data/*"),
    ];

    fn find(p: &str) -> Option<(Route, String)> {
        Routes::Table(TABLE)
            .find(p)
            .unwrap()
            .map(|m| (m.route, m.path.into_owned()))
    }

    #[test]
    fn the_first_matching_route_decides_and_names_fold() {
        let (r, p) = find("users/Admin").unwrap();
        assert_eq!((r.pattern, p.as_str()), ("users/:name", "users/admin"));
        let (r, p) = find("login/BOB").unwrap();
        assert!(r.unauthenticated);
        assert_eq!(p, "login/bob");
        assert!(find("users").unwrap().0.sudo);
        assert!(
            find("users/").unwrap().0.sudo,
            "a list of users/ is the same route"
        );
        assert_eq!(
            find("data/A/B").unwrap().1,
            "data/A/B",
            "data is not folded"
        );
        assert!(find("nothing").is_none());
        assert!(find("users/a/b").is_none());
    }

    #[test]
    fn a_star_route_needs_its_slash() {
        assert!(matches("lookup/*", "lookup/"));
        assert!(matches("lookup/*", "lookup/a/b"));
        assert!(!matches("lookup/*", "lookup"));
        assert!(matches("lookup", "lookup/"));
        assert!(!matches("lookup", "lookups"));
        assert!(!matches("a/:n", "a/"));
        assert!(matches("a/:n/:m", "a/x/y"));
        assert!(!matches("a/:n/:m", "a/x"));
    }

    #[test]
    fn names_with_white_space_are_refused() {
        assert!(Routes::Table(TABLE).find("users/admin ").is_err());
        assert!(Routes::Table(TABLE).find("users/ admin").is_err());
    }

    #[test]
    fn non_list_paths_lose_their_trailing_slash() {
        assert_eq!(
            canonical_request_path("database/creds/rw/", false),
            "database/creds/rw"
        );
        assert_eq!(
            canonical_request_path("secret/metadata/", true),
            "secret/metadata/"
        );
        assert_eq!(canonical_request_path("sys/health", false), "sys/health");
    }
}
