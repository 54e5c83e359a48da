//! A member's redirects made followable by the client: a `Location` naming the member's own
//! address names the host the client asked for instead, and a context path the load balancer
//! put in front of the request's path comes off again, as nginx's `proxy_redirect default`
//! does. Other locations pass as they are.

use std::net::SocketAddr;

/// What a client asked for, that a member's redirect is written back against.
pub(crate) struct ClientOrigin<'a> {
    /// The `Host` of the client's request.
    pub(crate) host: Option<&'a str>,
    /// The path put in front of the client's.
    pub(crate) context_path: Option<&'a str>,
}

/// The `Location` the client gets for the `location` sent by the member at `member`, or
/// `None` when it stays as it is.
pub(crate) fn rewrite(location: &str, member: SocketAddr, client: &ClientOrigin) -> Option<String> {
    let (origin, path) = match split_http_url(location) {
        Some((authority, path)) => {
            if authority != member.to_string() {
                return None;
            }
            (client.host.map(|host| format!("http://{host}")), path)
        }
        None if location.starts_with('/') && !location.starts_with("//") => (None, location),
        None => return None,
    };
    let path = client
        .context_path
        .and_then(|prefix| without_prefix(path, prefix))
        .unwrap_or_else(|| path.to_string());
    let rewritten = match origin {
        Some(origin) => origin + &path,
        None => path,
    };
    (rewritten != location).then_some(rewritten)
}

/// The authority and the rest (path, query, fragment) of an `http://` URL.
fn split_http_url(url: &str) -> Option<(&str, &str)> {
    let scheme = url.get(..7)?;
    if !scheme.eq_ignore_ascii_case("http://") {
        return None;
    }
    let rest = &url[7..];
    let end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    Some(rest.split_at(end))
}

/// `path` without the context path `prefix` it starts with, as the client would have asked
/// for it; `None` when it does not start with the prefix.
fn without_prefix(path: &str, prefix: &str) -> Option<String> {
    let rest = path.strip_prefix(prefix)?;
    match rest.as_bytes().first() {
        None => Some("/".to_string()),
        Some(b'/') => Some(rest.to_string()),
        Some(b'?' | b'#') => Some(format!("/{rest}")),
        Some(_) => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Rewrites `location`, sent by the member at 127.0.0.1:4000, for a client that asked
    /// for host `shop.example.com` with the context path given.
    fn check(location: &str, context_path: Option<&str>, expected: Option<&str>) {
        let client = ClientOrigin {
            host: Some("shop.example.com"),
            context_path,
        };
        let member = SocketAddr::from(([127, 0, 0, 1], 4000));
        assert_eq!(
            rewrite(location, member, &client).as_deref(),
            expected,
            "{location} with context path {context_path:?}"
        );
    }

    #[test]
    fn locations_the_client_can_follow() {
        let shop = Some("/abc/app");
        let cases: [(&str, Option<&str>, Option<&str>); 13] = [
            (
                "http://127.0.0.1:4000/next?x=1",
                None,
                Some("http://shop.example.com/next?x=1"),
            ),
            (
                "HTTP://127.0.0.1:4000",
                None,
                Some("http://shop.example.com"),
            ),
            (
                "http://127.0.0.1:4000/abc/app/next",
                shop,
                Some("http://shop.example.com/next"),
            ),
            (
                "http://127.0.0.1:4000/abc/app",
                shop,
                Some("http://shop.example.com/"),
            ),
            ("/abc/app/next#top", shop, Some("/next#top")),
            ("/abc/app", shop, Some("/")),
            ("/abc/app?page=2", shop, Some("/?page=2")),
            ("/abc/application", shop, None),
            ("/other", shop, None),
            ("/abc/app/next", None, None),
            ("http://127.0.0.1:4001/next", None, None),
            ("https://127.0.0.1:4000/next", None, None),
            ("//127.0.0.1:4000/abc/app/next", shop, None),
        ];
        for (location, context_path, expected) in cases {
            check(location, context_path, expected);
        }
    }
}
