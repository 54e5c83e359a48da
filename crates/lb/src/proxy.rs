//! One proxied request: route it, pick a backend, forward it, stream the response back.

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::task::{Context, Poll, ready};
use std::time::{Duration, SystemTime};

use arc_swap::ArcSwap;
use bytes::{Bytes, BytesMut};
use hyper::{Method, StatusCode};
use tokio::io::{AsyncWriteExt, copy_bidirectional};
use tokio::net::TcpStream;

use crate::downstream::{ClientBody, ClientRequest};
use crate::flight::{ClusterFlight, MemberFlight};
use crate::framing::{BodyDecoder, Decoded, push_content_length, push_header};
use crate::head::{Head, Name};
use crate::pool::{ConnectError, Pool};
use crate::rewrite::{self, ClientOrigin};
use crate::routing::{
    BackendTarget, ClusterTarget, CompiledTable, Unrouted, attempt_order, normalize_host,
};
use crate::stats::{uptime, uptime_ms};
use crate::table::ClusterKey;
use crate::upstream::{Connection, OutgoingRequest, ResponseHead, UpstreamError};

/// What every request on one accepted connection shares.
pub(crate) struct ConnContext {
    pub(crate) table: Arc<ArcSwap<CompiledTable>>,
    pub(crate) port: u16,
    /// The client's address, as `X-Forwarded-For` names it.
    pub(crate) client_ip: String,
}

/// A response for the client: its status, its headers other than the framing, its body.
pub(crate) struct ProxyResponse {
    pub(crate) status: StatusCode,
    pub(crate) headers: ResponseHeaders,
    pub(crate) body: ProxyBody,
}

/// The headers of a response for the client, other than its framing.
pub(crate) enum ResponseHeaders {
    /// The proxy's own answer, in plain text.
    Local,
    Member(MemberHeaders),
}

/// A member's response headers as the client gets them.
pub(crate) struct MemberHeaders {
    head: Head,
    /// Values the client gets instead of the member's, by the header's place in the head.
    replaced: Vec<(usize, String)>,
    /// The member's `Content-Length`, which the answer to a HEAD or a 304 keeps.
    length: Option<u64>,
    /// Whether the response switches protocols, which keeps the headers announcing it.
    switching: bool,
}

impl ResponseHeaders {
    /// Appends the header lines; `keeps_length` for an answer without a body that still says
    /// how long the body would have been.
    pub(crate) fn encode(&self, out: &mut Vec<u8>, keeps_length: bool) {
        let member = match self {
            ResponseHeaders::Local => {
                push_header(out, b"content-type", b"text/plain; charset=utf-8");
                // The proxy answers as the origin here, which must say when (RFC 9110 6.6.1).
                let date = httpdate::fmt_http_date(SystemTime::now());
                push_header(out, b"date", date.as_bytes());
                return;
            }
            ResponseHeaders::Member(member) => member,
        };
        let head = &member.head;
        let mut replaced = member.replaced.iter().peekable();
        for header in head.iter() {
            let value = match replaced.next_if(|(at, _)| *at == header.index) {
                Some((_, value)) => value.as_bytes(),
                None => header.value,
            };
            let framing = matches!(
                header.known,
                Some(Name::ContentLength | Name::TransferEncoding)
            );
            if !framing && !head.is_hop_by_hop(&header) {
                push_header(out, header.name, value);
            }
        }
        if let Some(length) = member.length.filter(|_| keeps_length) {
            push_content_length(out, length);
        }
        if member.switching
            && let Some(protocol) = head.value(Name::Upgrade)
        {
            keep_upgrade(out, protocol);
        }
    }
}

/// Routes `request`, sends it to a member of its cluster, trying another when nothing of it
/// reached the first or it can be sent again, and returns the answer for the client: the
/// member's, or the proxy's own when no member can give one.
pub(crate) async fn handle(
    context: &ConnContext,
    request: &ClientRequest,
    body: ClientBody<'_>,
) -> ProxyResponse {
    let now = uptime();
    let host = request.host();
    let (cluster, context_path) = {
        let table = context.table.load();
        match table.route(context.port, host.map(normalize_host)) {
            Ok(routed) => (Arc::clone(routed.cluster), routed.context_path.cloned()),
            Err(unrouted) => return unrouted_response(context.port, unrouted),
        }
    };
    let second = now.as_secs();
    let now_ms = now.as_millis() as u64;
    let cluster = ClusterFlight::begin(cluster, second);
    let upgrade = requested_upgrade(&request.head);
    if context_path.is_some() && request.path().split('/').any(is_dot_segment) {
        let message = format!(
            "the path {} has a `.` or `..` segment, which could leave the context path\n",
            request.path()
        );
        return local_response(StatusCode::BAD_REQUEST, message);
    }
    let head = request_head(
        request,
        context_path.as_deref(),
        &context.client_ip,
        upgrade,
    );
    let declared_length = request.head.contains(Name::ContentLength);
    let method_is_head = request.method == Method::HEAD;
    let mut outgoing = OutgoingRequest::new(head, body, method_is_head, declared_length);
    // Safe to send twice: an idempotent method, no body and no protocol switch.
    let replayable = is_idempotent(&request.method) && outgoing.is_bodiless() && upgrade.is_none();

    let mut tried = 0usize;
    let mut last_error = None;
    let mut last_failure = None;
    let mut answered = None;
    for backend in attempt_order(&cluster.0.shared.next, &cluster.0.backends, now_ms) {
        let member = MemberFlight::begin(Arc::clone(&backend.counters), second);
        // A retry may come long after the request did, and the pool goes by its time.
        let attempt_ms = if tried == 0 { now_ms } else { uptime_ms() };
        match exchange(backend, &mut outgoing, replayable, &cluster.0, attempt_ms).await {
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
    let Some((response, connection, pool, member)) = answered else {
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
        host,
        context_path: context_path.as_deref(),
    };
    let replaced = rewrites_for_client(&response.head, pool.addr(), &client);
    relay(
        response,
        replaced,
        upgrade.is_some(),
        (connection, pool),
        (cluster, member),
    )
}

/// The member's `Location` and, behind a context path, its cookie paths, rewritten so the
/// client can follow them; by the header's place in the head.
fn rewrites_for_client(
    head: &Head,
    member: SocketAddr,
    client: &ClientOrigin,
) -> Vec<(usize, String)> {
    let mut replaced = Vec::new();
    for header in head.iter() {
        let text = || std::str::from_utf8(header.value).ok();
        let rewritten = match (header.known, client.context_path) {
            (Some(Name::Location), _) => {
                text().and_then(|location| rewrite::location(location, member, client))
            }
            (Some(Name::SetCookie), Some(context_path)) => {
                text().and_then(|cookie| rewrite::cookie(cookie, context_path))
            }
            _ => None,
        };
        if let Some(rewritten) = rewritten {
            replaced.push((header.index, rewritten));
        }
    }
    replaced
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
    replaced: Vec<(usize, String)>,
    upgrade_asked: bool,
    (connection, pool): (Connection, Arc<Pool>),
    (cluster, member): (ClusterFlight, MemberFlight),
) -> ProxyResponse {
    let ResponseHead {
        status,
        head,
        length,
        body,
        keep_alive,
    } = response;
    cluster.0.shared.counters.response(status);
    member.0.response(status);
    let switching = status == StatusCode::SWITCHING_PROTOCOLS;
    if switching && !upgrade_asked {
        cluster.0.shared.counters.failure();
        member.0.failure();
        let key = &cluster.0.shared.key;
        let message = format!("a member of cluster {key} switched protocols unasked\n");
        return local_response(StatusCode::BAD_GATEWAY, message);
    }
    let headers = ResponseHeaders::Member(MemberHeaders {
        head,
        replaced,
        length,
        switching,
    });
    if switching {
        let (member_stream, early) = connection.into_parts();
        let tunnel = Tunnel {
            member: member_stream,
            early,
            _flight: (cluster, member),
        };
        return ProxyResponse {
            status,
            headers,
            body: ProxyBody(Kind::Tunnel(Box::new(tunnel))),
        };
    }
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
    ProxyResponse {
        status,
        headers,
        body: ProxyBody(Kind::Upstream(upstream)),
    }
}

fn no_member_response(
    key: &ClusterKey,
    tried: usize,
    last_error: Option<ConnectError>,
) -> ProxyResponse {
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
    now_ms: u64,
) -> Result<(ResponseHead, Connection), Exchange> {
    let timeout = cluster.response_timeout;
    if let Some(mut connection) = backend.pool.take_idle(now_ms) {
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

/// The protocol a request asks to switch to (such as `websocket`), when it asks to: the value
/// of its first `Upgrade` header, the one sent on.
fn requested_upgrade(head: &Head) -> Option<&[u8]> {
    let protocol = head.value(Name::Upgrade)?;
    head.lists(Name::Connection, b"upgrade").then_some(protocol)
}

/// Appends the two hop-by-hop headers a protocol switch needs on the next hop.
fn keep_upgrade(out: &mut Vec<u8>, protocol: &[u8]) {
    push_header(out, b"connection", b"upgrade");
    push_header(out, b"upgrade", protocol);
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

/// The request line and headers sent to a member, up to the body's framing: in origin form
/// with `context_path` in front of the path, the client added to `X-Forwarded-For`, and
/// without hop-by-hop headers or `Expect`, since the client was already told to continue.
fn request_head(
    request: &ClientRequest,
    context_path: Option<&str>,
    client_ip: &str,
    upgrade: Option<&[u8]>,
) -> Vec<u8> {
    let head = &request.head;
    let mut out = Vec::with_capacity(256);
    out.extend_from_slice(request.method.as_str().as_bytes());
    out.push(b' ');
    let target = request.origin_target();
    // `OPTIONS *` asks about the server, not a path.
    if let Some(context_path) = context_path.filter(|_| target.starts_with('/')) {
        out.extend_from_slice(context_path.as_bytes());
    }
    out.extend_from_slice(target.as_bytes());
    out.extend_from_slice(b" HTTP/1.1\r\n");
    // The authority of an absolute-form target is the request's host.
    let authority = request.authority();
    for header in head.iter() {
        let replaced = match header.known {
            Some(
                Name::Expect | Name::ContentLength | Name::XForwardedFor | Name::XForwardedProto,
            ) => true,
            Some(Name::Host) => authority.is_some(),
            _ => false,
        };
        if !replaced && !head.is_hop_by_hop(&header) {
            push_header(&mut out, header.name, header.value);
        }
    }
    if let Some(authority) = authority {
        push_header(&mut out, b"host", authority.as_bytes());
    }
    out.extend_from_slice(b"x-forwarded-for: ");
    for earlier in head.values(Name::XForwardedFor) {
        out.extend_from_slice(earlier);
        out.extend_from_slice(b", ");
    }
    out.extend_from_slice(client_ip.as_bytes());
    out.extend_from_slice(b"\r\n");
    push_header(&mut out, b"x-forwarded-proto", b"http");
    if let Some(protocol) = upgrade {
        keep_upgrade(&mut out, protocol);
    }
    out
}

fn unrouted_response(port: u16, unrouted: Unrouted<'_>) -> ProxyResponse {
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

pub(crate) fn local_response(status: StatusCode, message: String) -> ProxyResponse {
    ProxyResponse {
        status,
        headers: ResponseHeaders::Local,
        body: ProxyBody(Kind::Local(Some(Bytes::from(message)))),
    }
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
    use crate::downstream::parse_client_request;
    use crate::upstream::parse_head;
    use proptest::prelude::*;
    use proptest::sample::select;

    fn client_request(head: &str) -> ClientRequest {
        match parse_client_request(head.as_bytes()) {
            Ok(Some(request)) => request,
            Ok(None) => panic!("incomplete head {head:?}"),
            Err(reason) => panic!("bad head {head:?}: {reason}"),
        }
    }

    /// Prepares the request `head` and checks the request line and headers sent on.
    fn check(head: &str, expected_line: &str, expected: &[&str]) {
        let request = client_request(head);
        let upgrade = requested_upgrade(&request.head);
        let sent = request_head(&request, None, "10.0.0.9", upgrade);
        let sent = String::from_utf8(sent).expect("ascii head");
        let mut lines: Vec<&str> = sent.split_terminator("\r\n").collect();
        let line = lines.remove(0);
        assert_eq!(line, expected_line, "request line of {head:?}");
        lines.sort();
        let mut expected = expected.to_vec();
        expected.sort();
        assert_eq!(lines, expected, "headers of {head:?}");
    }

    #[test]
    fn forwarded_headers_and_hop_by_hop_removal() {
        let forwarded = ["x-forwarded-for: 10.0.0.9", "x-forwarded-proto: http"];
        check(
            "GET /a?b=c HTTP/1.1\r\nHost: web\r\n\r\n",
            "GET /a?b=c HTTP/1.1",
            &["Host: web", forwarded[0], forwarded[1]],
        );
        check(
            "GET / HTTP/1.1\r\nHost: web\r\nConnection: keep-alive, X-Secret\r\n\
             Keep-Alive: timeout=5\r\nx-secret: 1\r\nTE: trailers\r\nUpgrade: h2c\r\n\
             Proxy-Authorization: basic x\r\nAccept: */*\r\nExpect: 100-continue\r\n\r\n",
            "GET / HTTP/1.1",
            &["Host: web", "Accept: */*", forwarded[0], forwarded[1]],
        );
        check(
            "GET / HTTP/1.0\r\nx-forwarded-for: 1.1.1.1\r\nX-Forwarded-For: 2.2.2.2\r\n\
             x-forwarded-proto: https\r\n\r\n",
            "GET / HTTP/1.1",
            &["x-forwarded-for: 1.1.1.1, 2.2.2.2, 10.0.0.9", forwarded[1]],
        );
        check(
            "GET http://web.example.com:8080/x?y HTTP/1.1\r\nHost: ignored\r\n\r\n",
            "GET /x?y HTTP/1.1",
            &["host: web.example.com:8080", forwarded[0], forwarded[1]],
        );
        check(
            "GET http://web?q HTTP/1.1\r\nHost: web\r\n\r\n",
            "GET /?q HTTP/1.1",
            &["host: web", forwarded[0], forwarded[1]],
        );
        check(
            "GET /a#fragment HTTP/1.1\r\nHost: web\r\nConnection: host, x-a\r\nX-A: 1\r\n\r\n",
            "GET /a HTTP/1.1",
            &["Host: web", forwarded[0], forwarded[1]],
        );
        check(
            "GET /chat HTTP/1.1\r\nHost: web\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n",
            "GET /chat HTTP/1.1",
            &[
                "Host: web",
                forwarded[0],
                forwarded[1],
                "connection: upgrade",
                "upgrade: websocket",
            ],
        );
    }

    #[test]
    fn host_of_a_request() {
        let cases = [
            (
                "GET / HTTP/1.1\r\nHost: Web.Example.com:8080\r\n\r\n",
                Some("Web.Example.com"),
            ),
            ("GET / HTTP/1.0\r\n\r\n", None),
            (
                "GET http://api.example.com/x HTTP/1.1\r\nHost: web.example.com\r\n\r\n",
                Some("api.example.com"),
            ),
            ("GET / HTTP/1.1\r\nHost: [::1]:80\r\n\r\n", Some("[::1]")),
        ];
        for (head, expected) in cases {
            let request = client_request(head);
            assert_eq!(request.host().map(normalize_host), expected, "{head:?}");
        }
    }

    /// Header lines a proxy must take care with, in any case, and others.
    fn header_lines() -> impl Strategy<Value = String> {
        let names = select(
            &[
                "hOST",
                "Connection",
                "Upgrade",
                "Content-Length",
                "transfer-encoding",
                "X-Forwarded-For",
                "x-forwarded-proto",
                "Expect",
                "TE",
                "Keep-Alive",
                "Location",
                "Set-Cookie",
                "X-A",
                "x-a",
            ][..],
        );
        let values = select(
            &[
                "",
                "close",
                "keep-alive, X-A",
                "Upgrade",
                "websocket",
                "5",
                "5, 5",
                "7, 8",
                "+5",
                "chunked",
                "gzip, chunked",
                "100-continue",
                "1.1.1.1",
                "/ctx/next",
                "http://127.0.0.1:9/ctx/x",
                "id=1; Path=/ctx/a",
                "web:80",
            ][..],
        );
        let extra = prop_oneof![3 => Just(String::new()), 1 => "[ -~]{0,4}"];
        let line = (names, values, extra)
            .prop_map(|(name, value, extra)| format!("{name}: {value}{extra}\r\n"));
        prop::collection::vec(line, 0..8).prop_map(|lines| lines.concat())
    }

    /// Whether `head` (a request or a response) parses whole, with none of the headers that
    /// describe the connection except the pair announcing a protocol switch, and with the
    /// body's framing only where `framing` allows it.
    fn forwards_cleanly(head: &[u8], response: bool, framing: bool) -> Result<(), String> {
        let mut slots = [httparse::EMPTY_HEADER; 64];
        let complete = if response {
            httparse::Response::new(&mut slots).parse(head)
        } else {
            httparse::Request::new(&mut slots).parse(head)
        };
        match complete {
            Ok(httparse::Status::Complete(length)) if length == head.len() => {}
            other => return Err(format!("does not parse whole: {other:?}")),
        }
        let names: Vec<String> = slots
            .iter()
            .take_while(|header| !header.name.is_empty())
            .map(|header| header.name.to_ascii_lowercase())
            .collect();
        let switching = names.iter().any(|name| name == "upgrade");
        for name in &names {
            let allowed = match name.as_str() {
                "connection" | "upgrade" => switching,
                "content-length" | "transfer-encoding" => framing,
                "te" | "keep-alive" => false,
                "expect" => response,
                _ => true,
            };
            if !allowed {
                return Err(format!("{name} is passed on"));
            }
        }
        Ok(())
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(1024))]

        /// Whatever a client sends is forwarded as a well-formed head or refused, never a
        /// panic.
        #[test]
        fn requests_are_forwarded_cleanly_or_refused(
            method in prop_oneof![
                6 => select(&["GET", "HEAD", "POST", "OPTIONS", "BREW"][..]),
                1 => select(&["CONNECT", "G T", ""][..]),
            ],
            target in prop_oneof![
                6 => select(&["/", "*", "/a?b", "http://web:8080/x", "/%2e%2e/"][..]),
                1 => select(&["web:80", "/\u{e9}", "/a b"][..]),
            ],
            version in prop_oneof![
                6 => select(&["HTTP/1.1", "HTTP/1.0"][..]),
                1 => select(&["HTTP/2.0", "HTTP/1.1x"][..]),
            ],
            host in select(&["Host: web\r\n", "Host: web\r\n", "Host: web\r\n", ""][..]),
            headers in header_lines(),
            tail in prop::collection::vec(any::<u8>(), 0..8),
            context_path in select(&[None, Some("/ctx")][..]),
        ) {
            let mut bytes = format!("{method} {target} {version}\r\n{host}{headers}\r\n").into_bytes();
            bytes.extend_from_slice(&tail);
            if let Ok(Some(request)) = parse_client_request(&bytes) {
                let upgrade = requested_upgrade(&request.head);
                let mut sent = request_head(&request, context_path, "10.0.0.9", upgrade);
                sent.extend_from_slice(b"\r\n");
                let sent_host = request.host().map(normalize_host);
                prop_assert_eq!(forwards_cleanly(&sent, false, false), Ok(()), "{}", String::from_utf8_lossy(&sent));
                let text = String::from_utf8_lossy(&sent).to_ascii_lowercase();
                prop_assert!(text.contains("\r\nx-forwarded-proto: http\r\n"), "{}", text);
                prop_assert!(text.lines().any(|line| line.starts_with("x-forwarded-for: ") && line.ends_with("10.0.0.9")), "{}", text);
                prop_assert_eq!(sent_host.is_some(), text.contains("\r\nhost: "), "{}", text);
            }
        }

        /// Whatever a member answers reaches the client as a well-formed head or as an error,
        /// never a panic.
        #[test]
        fn responses_are_passed_on_cleanly_or_rejected(
            status in prop_oneof![
                6 => select(&["200 OK", "101 Switching Protocols", "204 No Content", "304 Not Modified", "302 Found"][..]),
                1 => select(&["999 Odd", "20 Short", ""][..]),
            ],
            version in prop_oneof![
                6 => select(&["HTTP/1.1", "HTTP/1.0"][..]),
                1 => select(&["HTTP/3", "HTTP/1.1 "][..]),
            ],
            headers in header_lines(),
            body in prop::collection::vec(any::<u8>(), 0..8),
            method_is_head in any::<bool>(),
            context_path in select(&[None, Some("/ctx")][..]),
        ) {
            let mut bytes = format!("{version} {status}\r\n{headers}\r\n").into_bytes();
            bytes.extend_from_slice(&body);
            let mut buffer = BytesMut::from(&bytes[..]);
            if let Ok(Some(response)) = parse_head(&mut buffer, method_is_head) {
                let member = SocketAddr::from(([127, 0, 0, 1], 9));
                let client = ClientOrigin { host: Some("web"), context_path };
                let replaced = rewrites_for_client(&response.head, member, &client);
                let status = response.status;
                let headers = ResponseHeaders::Member(MemberHeaders {
                    head: response.head,
                    replaced,
                    length: response.length,
                    switching: status == StatusCode::SWITCHING_PROTOCOLS,
                });
                let mut sent = b"HTTP/1.1 200 OK\r\n".to_vec();
                let keeps_length = crate::framing::has_no_body(method_is_head, status);
                headers.encode(&mut sent, keeps_length);
                sent.extend_from_slice(b"\r\n");
                prop_assert_eq!(forwards_cleanly(&sent, true, keeps_length), Ok(()), "{}", String::from_utf8_lossy(&sent));
                let text = String::from_utf8_lossy(&sent).to_ascii_lowercase();
                let location = text.lines().find(|line| line.starts_with("location: "));
                prop_assert!(!location.is_some_and(|line| line.contains("127.0.0.1:9")), "{}", text);
            }
        }
    }
}
