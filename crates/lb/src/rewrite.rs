//! A member's response headers written for the client: a `Location` naming the member's own
//! address names the host the client asked for instead, and a context path the load balancer
//! put in front of the request's path comes off redirects and cookie paths again, as nginx's
//! `proxy_redirect` and `proxy_cookie_path` do. Everything else passes as it is.

use std::borrow::Cow;
use std::net::{IpAddr, SocketAddr};

/// What a client asked for, that a member's response is written back against.
pub(crate) struct ClientOrigin<'a> {
    /// The `Host` of the client's request.
    pub(crate) host: Option<&'a str>,
    /// The path put in front of the client's.
    pub(crate) context_path: Option<&'a str>,
}

/// The `Location` the client gets for the `location` sent by the member at `member`, or
/// `None` when it stays as it is.
pub(crate) fn location(
    location: &str,
    member: SocketAddr,
    client: &ClientOrigin,
) -> Option<String> {
    let (origin, path, new_origin) = match split_http_url(location) {
        Some((authority, path)) if names_member(authority, member) => {
            // Without a host, a path alone resolves against the proxy the client asked.
            let origin = client.host.map_or(Cow::Borrowed(""), |host| {
                Cow::Owned(format!("http://{host}"))
            });
            (origin, path, true)
        }
        Some((authority, path))
            if client
                .host
                .is_some_and(|host| host.eq_ignore_ascii_case(authority)) =>
        {
            let origin = &location[..location.len() - path.len()];
            (Cow::Borrowed(origin), path, false)
        }
        Some(_) => return None,
        None if location.starts_with('/') && !location.starts_with("//") => {
            (Cow::Borrowed(""), location, false)
        }
        None => return None,
    };
    let unprefixed = client
        .context_path
        .and_then(|prefix| without_prefix(path, prefix));
    if !new_origin && unprefixed.is_none() {
        return None;
    }
    let path = unprefixed.as_deref().unwrap_or(path);
    // Without an origin, a location must start with `/` to name a path on the proxy.
    let slash = if origin.is_empty() && !path.starts_with('/') {
        "/"
    } else {
        ""
    };
    Some(format!("{origin}{slash}{path}"))
}

/// The `Set-Cookie` the client gets for the member's `set_cookie`: its `Path` without the
/// context path, or `None` when it stays as it is.
pub(crate) fn cookie(set_cookie: &str, context_path: &str) -> Option<String> {
    let mut rewritten = String::with_capacity(set_cookie.len());
    let mut changed = false;
    for (index, part) in set_cookie.split(';').enumerate() {
        if index > 0 {
            rewritten.push(';');
        }
        let attribute = part.trim_start();
        let path = attribute
            .get(..5)
            .filter(|name| index > 0 && name.eq_ignore_ascii_case("path="))
            .and_then(|_| without_prefix(&attribute[5..], context_path));
        match path {
            Some(path) => {
                rewritten.push_str(&part[..part.len() - attribute.len() + 5]);
                rewritten.push_str(&path);
                changed = true;
            }
            None => rewritten.push_str(part),
        }
    }
    changed.then_some(rewritten)
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

/// Whether a URL's authority is the member's address: with its port, or without one when
/// the member listens on port 80, by IP address or, on loopback, as `localhost`.
fn names_member(authority: &str, member: SocketAddr) -> bool {
    if authority.parse::<SocketAddr>() == Ok(member) {
        return true;
    }
    let (host, port) = match authority.rsplit_once(':') {
        Some((host, port)) if !port.contains(']') => (host, port.parse::<u16>().ok()),
        _ => (authority, Some(80)),
    };
    if port != Some(member.port()) {
        return false;
    }
    let bare = host.trim_start_matches('[').trim_end_matches(']');
    bare.parse::<IpAddr>() == Ok(member.ip())
        || (member.ip().is_loopback() && bare.eq_ignore_ascii_case("localhost"))
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

    /// A header the member sends and what the client gets for it: `None` when it passes as
    /// it is.
    enum Header<'a> {
        Location(&'a str),
        SetCookie(&'a str),
    }

    /// Rewrites `header`, sent by the member at 127.0.0.1:4000, for a client that asked for
    /// `host` with the context path given.
    fn check(
        header: Header,
        host: Option<&str>,
        context_path: Option<&str>,
        expected: Option<&str>,
    ) {
        let client = ClientOrigin { host, context_path };
        let member = SocketAddr::from(([127, 0, 0, 1], 4000));
        let (sent, got) = match header {
            Header::Location(sent) => (sent, location(sent, member, &client)),
            Header::SetCookie(sent) => (sent, context_path.and_then(|prefix| cookie(sent, prefix))),
        };
        assert_eq!(
            got.as_deref(),
            expected,
            "{sent} for {host:?} with context path {context_path:?}"
        );
    }

    #[test]
    fn headers_the_client_can_follow() {
        use Header::*;
        let shop = Some("/abc/app");
        let host = Some("shop.example.com");
        let cases = [
            (
                Location("http://127.0.0.1:4000/next?x=1"),
                host,
                None,
                Some("http://shop.example.com/next?x=1"),
            ),
            (
                Location("HTTP://127.0.0.1:4000"),
                host,
                None,
                Some("http://shop.example.com"),
            ),
            (
                Location("http://127.0.0.1:4000/abc/app/next"),
                host,
                shop,
                Some("http://shop.example.com/next"),
            ),
            (
                Location("http://127.0.0.1:4000/abc/app"),
                host,
                shop,
                Some("http://shop.example.com/"),
            ),
            (Location("http://127.0.0.1:4000"), None, None, Some("/")),
            (
                Location("http://127.0.0.1:4000?x=1"),
                None,
                None,
                Some("/?x=1"),
            ),
            (
                Location("http://127.0.0.1:4000/abc/app/next"),
                None,
                shop,
                Some("/next"),
            ),
            (
                Location("http://Shop.example.com/abc/app/next"),
                host,
                shop,
                Some("http://Shop.example.com/next"),
            ),
            (Location("http://shop.example.com/next"), host, None, None),
            (
                Location("http://shop.example.com:8080/abc/app/next"),
                host,
                shop,
                None,
            ),
            (Location("/abc/app/next#top"), host, shop, Some("/next#top")),
            (Location("/abc/app"), host, shop, Some("/")),
            (Location("/abc/app?page=2"), host, shop, Some("/?page=2")),
            (Location("/abc/application"), host, shop, None),
            (Location("/other"), host, shop, None),
            (Location("/abc/app/next"), host, None, None),
            (
                Location("http://localhost:4000/next"),
                host,
                None,
                Some("http://shop.example.com/next"),
            ),
            (Location("http://LocalHost:4000"), None, None, Some("/")),
            (Location("http://localhost/next"), host, None, None),
            (Location("http://127.0.0.1:4001/next"), host, None, None),
            (Location("https://127.0.0.1:4000/next"), host, None, None),
            (Location("//127.0.0.1:4000/abc/app/next"), host, shop, None),
            (
                SetCookie("id=1; Path=/abc/app; HttpOnly"),
                host,
                shop,
                Some("id=1; Path=/; HttpOnly"),
            ),
            (
                SetCookie("id=1;path=/abc/app/cart"),
                host,
                shop,
                Some("id=1;path=/cart"),
            ),
            (SetCookie("path=/abc/app; Path=/other"), host, shop, None),
            (SetCookie("id=1; Path=/abc/apple"), host, shop, None),
            (SetCookie("id=1; Path=/abc/app"), host, None, None),
        ];
        for (header, host, context_path, expected) in cases {
            check(header, host, context_path, expected);
        }
    }
}
