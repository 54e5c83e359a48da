//! One proxied request: route it, pick a backend, forward it, stream the response back.

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::task::{Context, Poll, ready};
use std::time::Duration;

use arc_swap::ArcSwap;
use bytes::Bytes;
use bytes::BytesMut;
use hyper::header::{self, HeaderMap, HeaderName, HeaderValue};
use hyper::{Method, Request, Response, StatusCode, Uri, Version};
use tokio::io::{AsyncWriteExt, copy_bidirectional};
use tokio::net::TcpStream;

use crate::downstream::ClientBody;
use crate::flight::{ClusterFlight, MemberFlight};
use crate::framing::{BodyDecoder, Decoded};
use crate::pool::{ConnectError, Pool};
use crate::rewrite::{self, ClientOrigin};
use crate::routing::{BackendTarget, ClusterTarget, CompiledTable, Unrouted, attempt_order};
use crate::stats::{uptime, uptime_ms};
use crate::table::ClusterKey;
use crate::upstream::{Connection, OutgoingRequest, ResponseHead, UpstreamError};

/// What every request on one accepted connection shares.
pub(crate) struct ConnContext {
    pub(crate) table: Arc<ArcSwap<CompiledTable>>,
    pub(crate) port: u16,
    /// The client's address, ready to be sent as `X-Forwarded-For`.
    pub(crate) client_ip: HeaderValue,
}

static X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
static X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
static KEEP_ALIVE: HeaderName = HeaderName::from_static("keep-alive");
static PROXY_CONNECTION: HeaderName = HeaderName::from_static("proxy-connection");

pub(crate) async fn handle(
    context: &ConnContext,
    mut request: Request<ClientBody<'_>>,
) -> Response<ProxyBody> {
    let now = uptime();
    let (cluster, context_path) = {
        let table = context.table.load();
        match table.route(context.port, request_host(&request)) {
            Ok(routed) => (Arc::clone(routed.cluster), routed.context_path.cloned()),
            Err(unrouted) => return unrouted_response(context.port, unrouted),
        }
    };
    let second = now.as_secs();
    let now_ms = now.as_millis() as u64;
    let cluster = ClusterFlight::begin(cluster, second);
    let upgrade = requested_upgrade(&request);
    let upgrade_asked = upgrade.is_some();
    if context_path.is_some() && request.uri().path().split('/').any(is_dot_segment) {
        let message = format!(
            "the path {} has a `.` or `..` segment, which could leave the context path\n",
            request.uri().path()
        );
        return local_response(StatusCode::BAD_REQUEST, message);
    }
    prepare_request(&mut request, &context.client_ip);
    if let Some(protocol) = upgrade {
        keep_upgrade(request.headers_mut(), protocol);
    }
    let (mut parts, body) = request.into_parts();
    let mut request = OutgoingRequest::new(&parts, body, context_path.as_deref());
    // Safe to send twice: an idempotent method, no body and no protocol switch.
    let replayable = is_idempotent(&parts.method) && request.is_bodiless() && !upgrade_asked;
    let client_host = parts.headers.remove(header::HOST);
    drop(parts);

    let mut tried = 0usize;
    let mut last_error = None;
    let mut last_failure = None;
    let mut answered = None;
    for backend in attempt_order(&cluster.0.shared.next, &cluster.0.backends, now_ms) {
        let member = MemberFlight::begin(Arc::clone(&backend.counters), second);
        match exchange(backend, &mut request, replayable, &cluster.0).await {
            Ok((response, connection)) => {
                answered = Some((response, connection, Arc::clone(&backend.pool), member));
                break;
            }
            // The client's own body failed: no member is to blame, and none would do better.
            Err(Exchange::Failed(error @ UpstreamError::ClientBody(_))) => {
                member.cancel();
                return local_response(StatusCode::BAD_REQUEST, format!("{error}\n"));
            }
            Err(Exchange::Unreachable(error)) => {
                member.cancel();
                backend.pool.mark_suspect(uptime_ms());
                tracing::debug!(member = %backend.member_id, %error, "backend unreachable, trying the next one");
                tried += 1;
                last_error = Some(error);
            }
            Err(Exchange::Failed(error)) if replayable => {
                // Nothing was answered, so the client never learns the first member failed.
                member.0.failure();
                backend.pool.mark_suspect(uptime_ms());
                tracing::debug!(member = %backend.member_id, %error, "backend failed before answering, replaying on the next one");
                tried += 1;
                last_failure = Some((
                    failure_status(&error),
                    format!("member {} failed: {error}", backend.member_id),
                ));
            }
            Err(Exchange::Failed(error)) => {
                member.0.failure();
                cluster.0.shared.counters.failure();
                tracing::debug!(member = %backend.member_id, %error, "backend failed");
                let message = format!(
                    "member {} of cluster {} failed: {error}\n",
                    backend.member_id, cluster.0.shared.key
                );
                return local_response(failure_status(&error), message);
            }
        }
    }
    let Some((mut response, connection, pool, member)) = answered else {
        cluster.0.shared.counters.failure();
        if let Some((status, failure)) = last_failure {
            let key = &cluster.0.shared.key;
            let message =
                format!("no member of cluster {key} answered ({tried} tried), last: {failure}\n");
            return local_response(status, message);
        }
        return no_member_response(&cluster.0.shared.key, tried, last_error);
    };
    let client = ClientOrigin {
        host: client_host.as_ref().and_then(|host| host.to_str().ok()),
        context_path: context_path.as_deref(),
    };
    rewrite_for_client(&mut response.headers, pool.addr(), &client);
    relay(
        response,
        upgrade_asked,
        (connection, pool),
        (cluster, member),
    )
}

/// Rewrites the member's `Location` and, behind a context path, its cookie paths, so the
/// client can follow them.
fn rewrite_for_client(headers: &mut HeaderMap, member: SocketAddr, client: &ClientOrigin) {
    if let Some(location) = headers.get_mut(header::LOCATION) {
        rewrite_value(location, |location| {
            rewrite::location(location, member, client)
        });
    }
    let Some(context_path) = client.context_path else {
        return;
    };
    if let header::Entry::Occupied(mut cookies) = headers.entry(header::SET_COOKIE) {
        for cookie in cookies.iter_mut() {
            rewrite_value(cookie, |cookie| rewrite::cookie(cookie, context_path));
        }
    }
}

/// Replaces a header value with what `rewrite` makes of it, when it makes something.
fn rewrite_value(value: &mut HeaderValue, rewrite: impl FnOnce(&str) -> Option<String>) {
    let rewritten = value
        .to_str()
        .ok()
        .and_then(rewrite)
        .and_then(|text| HeaderValue::try_from(text).ok());
    if let Some(rewritten) = rewritten {
        *value = rewritten;
    }
}

/// A path segment the member would resolve against the one before it (`.`, `..`, or either
/// written with `%2e`).
fn is_dot_segment(segment: &str) -> bool {
    segment.len() <= 6
        && matches!(
            segment.to_ascii_lowercase().as_str(),
            "." | ".." | "%2e" | ".%2e" | "%2e." | "%2e%2e"
        )
}

/// Hands a member's response to the client: its body streams through, and the connection
/// goes back to the pool once the body was read to the end.
fn relay(
    response: ResponseHead,
    upgrade_asked: bool,
    (connection, pool): (Connection, Arc<Pool>),
    (cluster, member): (ClusterFlight, MemberFlight),
) -> Response<ProxyBody> {
    let ResponseHead {
        status,
        mut headers,
        body,
        keep_alive,
    } = response;
    cluster.0.shared.counters.response(status);
    member.0.response(status);
    if status == StatusCode::SWITCHING_PROTOCOLS {
        if upgrade_asked {
            return tunnel(headers, connection, (cluster, member));
        }
        cluster.0.shared.counters.failure();
        member.0.failure();
        let key = &cluster.0.shared.key;
        let message = format!("a member of cluster {key} switched protocols unasked\n");
        return local_response(StatusCode::BAD_GATEWAY, message);
    }
    strip_hop_by_hop(&mut headers);
    let mut upstream = Upstream {
        connection: Some(connection),
        body,
        pause_timeout: cluster.0.response_timeout,
        pool: keep_alive.then_some(pool),
        flight: Some((cluster, member)),
    };
    if upstream.body.is_done() {
        upstream.finish();
    }
    let mut response = Response::new(ProxyBody(Kind::Upstream(upstream)));
    *response.status_mut() = status;
    *response.headers_mut() = headers;
    response
}

fn no_member_response(
    key: &ClusterKey,
    tried: usize,
    last_error: Option<ConnectError>,
) -> Response<ProxyBody> {
    match last_error {
        None => local_response(
            StatusCode::SERVICE_UNAVAILABLE,
            format!("cluster {key} has no members to send requests to\n"),
        ),
        Some(error) => local_response(
            StatusCode::BAD_GATEWAY,
            format!(
                "no member of cluster {key} accepted a connection ({tried} tried), last: {error}\n"
            ),
        ),
    }
}

/// 504 for a member too slow to answer, 502 for any other failure.
fn failure_status(error: &UpstreamError) -> StatusCode {
    match error {
        UpstreamError::TimedOut(_) => StatusCode::GATEWAY_TIMEOUT,
        _ => StatusCode::BAD_GATEWAY,
    }
}

fn is_idempotent(method: &Method) -> bool {
    matches!(
        *method,
        Method::GET | Method::HEAD | Method::OPTIONS | Method::TRACE
    )
}

enum Exchange {
    /// Nothing reached the backend, so the request may go to another one.
    Unreachable(ConnectError),
    Failed(UpstreamError),
}

/// Sends the request on an idle connection, or on a new one if there is none or the idle one
/// turns out closed while the request can still be sent whole.
async fn exchange(
    backend: &BackendTarget,
    request: &mut OutgoingRequest<'_>,
    replayable: bool,
    cluster: &ClusterTarget,
) -> Result<(ResponseHead, Connection), Exchange> {
    let timeout = cluster.response_timeout;
    if let Some(mut connection) = backend.pool.take_idle(uptime_ms()) {
        match connection.exchange(request, timeout).await {
            Ok(response) => return Ok((response, connection)),
            // A member too slow to answer is no closed connection: a new one would wait as long.
            Err(error @ UpstreamError::TimedOut(_)) => return Err(Exchange::Failed(error)),
            Err(error) if replayable || is_undelivered(&error, request) => {
                tracing::debug!(member = %backend.member_id, %error, "idle connection failed, sending on a new one");
            }
            Err(error) => return Err(Exchange::Failed(error)),
        }
    }
    let mut connection = backend
        .pool
        .connect()
        .await
        .map_err(Exchange::Unreachable)?;
    match connection.exchange(request, timeout).await {
        Ok(response) => Ok((response, connection)),
        Err(UpstreamError::WriteHead(source)) if request.is_unsent() => {
            let addr = backend.pool.addr();
            Err(Exchange::Unreachable(ConnectError::Closed { addr, source }))
        }
        Err(error) => Err(Exchange::Failed(error)),
    }
}

/// Whether a failed exchange left the request whole and unseen by the member.
fn is_undelivered(error: &UpstreamError, request: &OutgoingRequest) -> bool {
    matches!(error, UpstreamError::WriteHead(_)) && request.is_unsent()
}

/// The protocol a request asks to switch to (such as `websocket`), when it asks to.
fn requested_upgrade<B>(request: &Request<B>) -> Option<HeaderValue> {
    let protocol = request.headers().get(header::UPGRADE)?;
    request
        .headers()
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(','))
        .any(|option| option.trim().eq_ignore_ascii_case("upgrade"))
        .then(|| protocol.clone())
}

/// Puts back the two hop-by-hop headers a protocol switch needs on the next hop.
fn keep_upgrade(headers: &mut HeaderMap, protocol: HeaderValue) {
    headers.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
    headers.insert(header::UPGRADE, protocol);
}

/// Answers a protocol switch; the client connection relays bytes both ways once the answer
/// is written, and the request stays in flight until the tunnel closes.
fn tunnel(
    mut headers: HeaderMap,
    connection: Connection,
    flight: (ClusterFlight, MemberFlight),
) -> Response<ProxyBody> {
    let (member, early) = connection.into_parts();
    let protocol = headers.get(header::UPGRADE).cloned();
    strip_hop_by_hop(&mut headers);
    if let Some(protocol) = protocol {
        keep_upgrade(&mut headers, protocol);
    }
    let tunnel = Tunnel {
        member,
        early,
        _flight: flight,
    };
    let mut response = Response::new(ProxyBody(Kind::Tunnel(Box::new(tunnel))));
    *response.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
    *response.headers_mut() = headers;
    response
}

/// A member connection that switched protocols, to be joined with its client's.
pub(crate) struct Tunnel {
    member: TcpStream,
    /// What the member sent right after its response head, which belongs to the new protocol.
    early: BytesMut,
    _flight: (ClusterFlight, MemberFlight),
}

impl Tunnel {
    /// Relays bytes both ways until either side closes; `client_early` is what the client
    /// sent after its request head.
    pub(crate) async fn run(
        mut self,
        client: &mut TcpStream,
        client_early: Bytes,
    ) -> io::Result<()> {
        client.write_all(&self.early).await?;
        self.member.write_all(&client_early).await?;
        copy_bidirectional(client, &mut self.member).await?;
        Ok(())
    }
}

/// The host a request asks for: the URI's authority in absolute form, else the `Host` header.
fn request_host<B>(request: &Request<B>) -> Option<&str> {
    let authority = match request.uri().authority() {
        Some(authority) => authority.as_str(),
        None => request.headers().get(header::HOST)?.to_str().ok()?,
    };
    Some(crate::routing::normalize_host(authority))
}

fn prepare_request<B>(request: &mut Request<B>, client_ip: &HeaderValue) {
    if request.uri().authority().is_some() {
        to_origin_form(request);
    }
    *request.version_mut() = Version::HTTP_11;
    let headers = request.headers_mut();
    strip_hop_by_hop(headers);
    // The client was already told to continue, since the proxy streams its body on.
    headers.remove(header::EXPECT);
    add_forwarded_for(headers, client_ip);
    headers.insert(X_FORWARDED_PROTO.clone(), HeaderValue::from_static("http"));
}

/// Backends expect `/path?query`; the authority of an absolute-form request becomes its `Host`.
fn to_origin_form<B>(request: &mut Request<B>) {
    let host = request
        .uri()
        .authority()
        .and_then(|authority| HeaderValue::from_str(authority.as_str()).ok());
    let path = request
        .uri()
        .path_and_query()
        .map_or_else(|| Uri::from_static("/"), |path| Uri::from(path.clone()));
    *request.uri_mut() = path;
    if let Some(host) = host {
        request.headers_mut().insert(header::HOST, host);
    }
}

fn add_forwarded_for(headers: &mut HeaderMap, client_ip: &HeaderValue) {
    let mut earlier = headers.get_all(&X_FORWARDED_FOR).iter().peekable();
    if earlier.peek().is_none() {
        headers.insert(X_FORWARDED_FOR.clone(), client_ip.clone());
        return;
    }
    let mut joined = Vec::new();
    for value in earlier.chain([client_ip]) {
        if !joined.is_empty() {
            joined.extend_from_slice(b", ");
        }
        joined.extend_from_slice(value.as_bytes());
    }
    if let Ok(joined) = HeaderValue::from_bytes(&joined) {
        headers.insert(X_FORWARDED_FOR.clone(), joined);
    }
}

fn is_hop_by_hop(name: &HeaderName) -> bool {
    [
        &header::CONNECTION,
        &header::TRANSFER_ENCODING,
        &header::TE,
        &header::TRAILER,
        &header::UPGRADE,
        &header::PROXY_AUTHENTICATE,
        &header::PROXY_AUTHORIZATION,
        &KEEP_ALIVE,
        &PROXY_CONNECTION,
    ]
    .contains(&name)
}

/// Removes the headers that describe one connection rather than the message (RFC 9110 7.6.1).
fn strip_hop_by_hop(headers: &mut HeaderMap) {
    if !headers.keys().any(is_hop_by_hop) {
        return;
    }
    let listed: Vec<HeaderName> = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(','))
        .filter_map(|name| HeaderName::from_bytes(name.trim().as_bytes()).ok())
        .filter(|name| !is_hop_by_hop(name))
        .collect();
    for name in listed {
        headers.remove(name);
    }
    let present: Vec<HeaderName> = headers
        .keys()
        .filter(|name| is_hop_by_hop(name))
        .cloned()
        .collect();
    for name in present {
        headers.remove(name);
    }
}

fn unrouted_response(port: u16, unrouted: Unrouted<'_>) -> Response<ProxyBody> {
    let message = match unrouted {
        Unrouted::PortNotServed => format!("port {port} serves no cluster\n"),
        Unrouted::NoHost => {
            format!("no cluster on port {port} can be chosen: the request names no host\n")
        }
        Unrouted::UnknownHost(host) => {
            format!("no cluster on port {port} answers to host {host}\n")
        }
    };
    local_response(StatusCode::NOT_FOUND, message)
}

pub(crate) fn local_response(status: StatusCode, message: String) -> Response<ProxyBody> {
    let mut response = Response::new(ProxyBody(Kind::Local(Some(Bytes::from(message)))));
    *response.status_mut() = status;
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    // The proxy answers as the origin here, which must say when (RFC 9110 section 6.6.1).
    let date = httpdate::fmt_http_date(std::time::SystemTime::now());
    if let Ok(date) = HeaderValue::try_from(date) {
        headers.insert(header::DATE, date);
    }
    response
}

/// A response body: streamed from a backend, written by the proxy itself, or a tunnel.
pub(crate) struct ProxyBody(Kind);

enum Kind {
    Upstream(Upstream),
    Local(Option<Bytes>),
    Tunnel(Box<Tunnel>),
}

struct Upstream {
    /// Taken once the body is read to the end or fails.
    connection: Option<Connection>,
    body: BodyDecoder,
    /// The longest the member may pause within the body, its cluster's response timeout.
    pause_timeout: Duration,
    /// Where the connection goes once the body was read, when the member keeps it open.
    pool: Option<Arc<Pool>>,
    flight: Option<(ClusterFlight, MemberFlight)>,
}

impl Upstream {
    fn finish(&mut self) {
        if let (Some(connection), Some(pool)) = (self.connection.take(), self.pool.take())
            && connection.is_drained()
        {
            pool.put(connection);
        }
        self.flight = None;
    }

    fn fail(&mut self) {
        self.connection = None;
        if let Some((cluster, member)) = self.flight.take() {
            cluster.0.shared.counters.failure();
            member.0.failure();
        }
    }

    fn poll_data(&mut self, cx: &mut Context<'_>) -> Poll<Result<Option<Bytes>, UpstreamError>> {
        loop {
            let Some(connection) = self.connection.as_mut() else {
                return Poll::Ready(Ok(None));
            };
            match connection.decode(&mut self.body)? {
                Decoded::Data(data) => return Poll::Ready(Ok(Some(data))),
                Decoded::Done => return Poll::Ready(Ok(None)),
                Decoded::NeedMore => {}
            }
            if ready!(connection.poll_read_body(cx, self.pause_timeout))? == 0 {
                self.body.end_of_stream()?;
                // A body that ends with the connection leaves nothing to reuse.
                self.pool = None;
            }
        }
    }
}

impl Drop for Upstream {
    fn drop(&mut self) {
        if self.body.is_done() {
            self.finish();
        }
    }
}

impl ProxyBody {
    /// The next piece of the body; `None` at its end.
    pub(crate) fn poll_data(
        &mut self,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Bytes, UpstreamError>>> {
        match &mut self.0 {
            Kind::Local(message) => Poll::Ready(message.take().map(Ok)),
            Kind::Tunnel(_) => Poll::Ready(None),
            Kind::Upstream(upstream) => {
                let polled = ready!(upstream.poll_data(cx));
                if polled.is_err() {
                    upstream.fail();
                } else if upstream.body.is_done() {
                    upstream.finish();
                }
                Poll::Ready(polled.transpose())
            }
        }
    }

    pub(crate) fn is_end_stream(&self) -> bool {
        match &self.0 {
            Kind::Local(message) => message.is_none(),
            Kind::Tunnel(_) => true,
            Kind::Upstream(upstream) => upstream.body.is_done(),
        }
    }

    /// The length of what is left of the body, when known before it is read.
    pub(crate) fn exact_length(&self) -> Option<u64> {
        match &self.0 {
            Kind::Local(message) => Some(message.as_ref().map_or(0, |data| data.len() as u64)),
            Kind::Tunnel(_) => Some(0),
            Kind::Upstream(upstream) => upstream.body.remaining(),
        }
    }

    /// The tunnel of a protocol switch, to be joined with the client connection.
    pub(crate) fn take_tunnel(&mut self) -> Option<Box<Tunnel>> {
        match std::mem::replace(&mut self.0, Kind::Local(None)) {
            Kind::Tunnel(tunnel) => Some(tunnel),
            other => {
                self.0 = other;
                None
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Prepares a request with the given URI and headers and checks the headers sent on.
    fn check(uri: &str, headers: &[(&str, &str)], expected_uri: &str, expected: &[(&str, &str)]) {
        let mut builder = Request::builder().uri(uri);
        for (name, value) in headers {
            builder = builder.header(*name, *value);
        }
        let mut request = builder.body(()).expect("valid request");
        prepare_request(&mut request, &HeaderValue::from_static("10.0.0.9"));
        assert_eq!(request.uri(), expected_uri, "uri of {uri}");
        assert_eq!(request.version(), Version::HTTP_11);
        let mut sent: Vec<(&str, &str)> = request
            .headers()
            .iter()
            .map(|(name, value)| (name.as_str(), value.to_str().expect("ascii header")))
            .collect();
        sent.sort();
        let mut expected = expected.to_vec();
        expected.sort();
        assert_eq!(sent, expected, "headers of {uri} {headers:?}");
    }

    #[test]
    fn forwarded_headers_and_hop_by_hop_removal() {
        let forwarded = [
            ("x-forwarded-for", "10.0.0.9"),
            ("x-forwarded-proto", "http"),
        ];
        check(
            "/a?b=c",
            &[("host", "web")],
            "/a?b=c",
            &[("host", "web"), forwarded[0], forwarded[1]],
        );
        check(
            "/",
            &[
                ("host", "web"),
                ("connection", "keep-alive, X-Secret"),
                ("keep-alive", "timeout=5"),
                ("x-secret", "1"),
                ("te", "trailers"),
                ("upgrade", "h2c"),
                ("proxy-authorization", "basic x"),
                ("accept", "*/*"),
            ],
            "/",
            &[
                ("host", "web"),
                ("accept", "*/*"),
                forwarded[0],
                forwarded[1],
            ],
        );
        check(
            "/",
            &[
                ("x-forwarded-for", "1.1.1.1"),
                ("X-Forwarded-For", "2.2.2.2"),
                ("x-forwarded-proto", "https"),
            ],
            "/",
            &[
                ("x-forwarded-for", "1.1.1.1, 2.2.2.2, 10.0.0.9"),
                forwarded[1],
            ],
        );
        check(
            "http://web.example.com:8080/x?y",
            &[("host", "ignored")],
            "/x?y",
            &[("host", "web.example.com:8080"), forwarded[0], forwarded[1]],
        );
    }

    #[test]
    fn host_of_a_request() {
        let cases: [(&str, Option<&str>, Option<&str>); 4] = [
            ("/", Some("Web.Example.com:8080"), Some("Web.Example.com")),
            ("/", None, None),
            (
                "http://api.example.com/x",
                Some("web.example.com"),
                Some("api.example.com"),
            ),
            ("/", Some("[::1]:80"), Some("[::1]")),
        ];
        for (uri, host, expected) in cases {
            let mut builder = Request::builder().uri(uri);
            if let Some(host) = host {
                builder = builder.header(header::HOST, host);
            }
            let request = builder.body(()).expect("valid request");
            assert_eq!(request_host(&request), expected, "{uri} with host {host:?}");
        }
    }
}
