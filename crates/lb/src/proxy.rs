//! One proxied request: route it, pick a backend, forward it, stream the response back.

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};

use arc_swap::ArcSwap;
use bytes::Bytes;
use hyper::body::{Body, Frame, Incoming, SizeHint};
use hyper::header::{self, HeaderMap, HeaderName, HeaderValue};
use hyper::upgrade::OnUpgrade;
use hyper::{Request, Response, StatusCode, Uri, Version};
use hyper_util::rt::TokioIo;
use tokio::io::copy_bidirectional;

use crate::pool::{ConnectError, Pool, Sender};
use crate::routing::{BackendTarget, ClusterTarget, CompiledTable, Unrouted, attempt_order};
use crate::stats::{Counters, uptime};
use crate::table::ClusterKey;

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
    mut request: Request<Incoming>,
) -> Response<ProxyBody> {
    let now = uptime();
    let cluster = {
        let table = context.table.load();
        match table.route(context.port, request_host(&request)) {
            Ok(cluster) => Arc::clone(cluster),
            Err(unrouted) => return unrouted_response(context.port, unrouted),
        }
    };
    let second = now.as_secs();
    let now_ms = now.as_millis() as u64;
    let cluster = ClusterFlight::begin(cluster, second);
    let upgrade = requested_upgrade(&request);
    let client_upgrade = upgrade.as_ref().map(|_| hyper::upgrade::on(&mut request));
    prepare_request(&mut request, &context.client_ip);
    let replay = (upgrade.is_none() && is_replayable(&request)).then(|| {
        let (method, uri, version, headers) = (
            request.method().clone(),
            request.uri().clone(),
            request.version(),
            request.headers().clone(),
        );
        move || {
            let mut again = Request::new(Outgoing::Empty);
            *again.method_mut() = method.clone();
            *again.uri_mut() = uri.clone();
            *again.version_mut() = version;
            *again.headers_mut() = headers.clone();
            again
        }
    });
    if let Some(protocol) = upgrade {
        keep_upgrade(request.headers_mut(), protocol);
    }
    let mut request = request.map(|body| match replay {
        Some(_) => Outgoing::Empty,
        None => Outgoing::Streamed(body),
    });

    let mut tried = 0usize;
    let mut last_error = None;
    let mut last_failure = None;
    let mut answered = None;
    for backend in attempt_order(&cluster.0.shared.next, &cluster.0.backends, now_ms) {
        let member = MemberFlight::begin(Arc::clone(&backend.counters), second);
        match exchange(backend, request, now_ms).await {
            Ok((response, sender)) => {
                answered = Some((response, sender, Arc::clone(&backend.pool), member));
                break;
            }
            Err(Exchange::Unreachable(unsent, error)) => {
                member.cancel();
                backend.pool.mark_suspect(now_ms);
                tracing::debug!(member = %backend.member_id, %error, "backend unreachable, trying the next one");
                request = *unsent;
                tried += 1;
                last_error = Some(error);
            }
            Err(Exchange::Failed(error)) if replay.is_some() => {
                // Nothing was answered and the request has no body: another member can take it.
                member.0.failure();
                backend.pool.mark_suspect(now_ms);
                tracing::debug!(member = %backend.member_id, %error, "backend failed before answering, replaying on the next one");
                request = replay
                    .as_ref()
                    .map_or_else(|| Request::new(Outgoing::Empty), |again| again());
                tried += 1;
                last_failure = Some(format!("member {} failed: {error}", backend.member_id));
            }
            Err(Exchange::Failed(error)) => {
                member.0.failure();
                cluster.0.shared.counters.failure();
                tracing::debug!(member = %backend.member_id, %error, "backend failed");
                let message = format!(
                    "member {} of cluster {} failed: {error}\n",
                    backend.member_id, cluster.0.shared.key
                );
                return local_response(StatusCode::BAD_GATEWAY, message);
            }
        }
    }
    let Some((response, sender, pool, member)) = answered else {
        cluster.0.shared.counters.failure();
        if let Some(failure) = last_failure {
            let key = &cluster.0.shared.key;
            let message =
                format!("no member of cluster {key} answered ({tried} tried), last: {failure}\n");
            return local_response(StatusCode::BAD_GATEWAY, message);
        }
        return no_member_response(&cluster.0.shared.key, tried, last_error);
    };
    relay(response, client_upgrade, (sender, pool), (cluster, member))
}

/// Hands a member's response to the client: its body streams through, and the connection
/// goes back to the pool once the body was read to the end.
fn relay(
    response: Response<Incoming>,
    client_upgrade: Option<OnUpgrade>,
    connection: (Sender, Arc<Pool>),
    (cluster, member): (ClusterFlight, MemberFlight),
) -> Response<ProxyBody> {
    let status = response.status();
    cluster.0.shared.counters.response(status);
    member.0.response(status);
    if status == StatusCode::SWITCHING_PROTOCOLS {
        if let Some(client) = client_upgrade {
            return tunnel(response, client, (cluster, member));
        }
        cluster.0.shared.counters.failure();
        member.0.failure();
        let key = &cluster.0.shared.key;
        let message = format!("a member of cluster {key} switched protocols unasked\n");
        return local_response(StatusCode::BAD_GATEWAY, message);
    }
    let (mut parts, body) = response.into_parts();
    strip_hop_by_hop(&mut parts.headers);
    let body = ProxyBody(Kind::Upstream(Upstream {
        body,
        connection: Some(connection),
        flight: Some((cluster, member)),
    }));
    Response::from_parts(parts, body)
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

/// What goes to a member: the client's body as it streams in, or nothing for a request that
/// has no body and so can be sent again to another member.
pub(crate) enum Outgoing {
    Streamed(Incoming),
    Empty,
}

impl Body for Outgoing {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        match self.get_mut() {
            Outgoing::Streamed(body) => Pin::new(body).poll_frame(cx),
            Outgoing::Empty => Poll::Ready(None),
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            Outgoing::Streamed(body) => body.is_end_stream(),
            Outgoing::Empty => true,
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            Outgoing::Streamed(body) => body.size_hint(),
            Outgoing::Empty => SizeHint::with_exact(0),
        }
    }
}

/// Safe to send twice: an idempotent method and no body.
fn is_replayable(request: &Request<Incoming>) -> bool {
    let idempotent = matches!(
        *request.method(),
        hyper::Method::GET | hyper::Method::HEAD | hyper::Method::OPTIONS | hyper::Method::TRACE
    );
    idempotent && request.body().is_end_stream()
}

enum Exchange {
    /// Nothing reached the backend, so the request may go to another one.
    Unreachable(Box<Request<Outgoing>>, ConnectError),
    Failed(hyper::Error),
}

/// Sends the request on an idle connection, or on a new one if there is none or the idle one
/// closed before taking the request.
async fn exchange(
    backend: &BackendTarget,
    mut request: Request<Outgoing>,
    now_ms: u64,
) -> Result<(Response<Incoming>, Sender), Exchange> {
    if let Some(mut sender) = backend.pool.take_idle(now_ms) {
        match sender.try_send_request(request).await {
            Ok(response) => return Ok((response, sender)),
            Err(mut error) => match error.take_message() {
                Some(unsent) => request = unsent,
                None => return Err(Exchange::Failed(error.into_error())),
            },
        }
    }
    let mut sender = match backend.pool.connect().await {
        Ok(sender) => sender,
        Err(error) => return Err(Exchange::Unreachable(Box::new(request), error)),
    };
    match sender.try_send_request(request).await {
        Ok(response) => Ok((response, sender)),
        Err(mut error) => match error.take_message() {
            Some(unsent) => {
                let addr = backend.pool.addr();
                let source = error.into_error();
                Err(Exchange::Unreachable(
                    Box::new(unsent),
                    ConnectError::Closed { addr, source },
                ))
            }
            None => Err(Exchange::Failed(error.into_error())),
        },
    }
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

/// Answers a protocol switch and relays bytes both ways once both sides have switched;
/// the request stays in flight until the tunnel closes.
fn tunnel(
    mut response: Response<Incoming>,
    client: OnUpgrade,
    flight: (ClusterFlight, MemberFlight),
) -> Response<ProxyBody> {
    let backend = hyper::upgrade::on(&mut response);
    tokio::spawn(async move {
        let _flight = flight;
        match tokio::try_join!(client, backend) {
            Ok((client, backend)) => {
                let relayed =
                    copy_bidirectional(&mut TokioIo::new(client), &mut TokioIo::new(backend)).await;
                if let Err(error) = relayed {
                    tracing::debug!(%error, "switched-protocol tunnel ended with an error");
                }
            }
            Err(error) => tracing::debug!(%error, "switching protocols failed"),
        }
    });
    let (mut parts, _) = response.into_parts();
    let protocol = parts.headers.get(header::UPGRADE).cloned();
    strip_hop_by_hop(&mut parts.headers);
    if let Some(protocol) = protocol {
        keep_upgrade(&mut parts.headers, protocol);
    }
    Response::from_parts(parts, ProxyBody(Kind::Local(None)))
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

fn local_response(status: StatusCode, message: String) -> Response<ProxyBody> {
    let mut response = Response::new(ProxyBody(Kind::Local(Some(Bytes::from(message)))));
    *response.status_mut() = status;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    response
}

/// Counts a request in its cluster from routing until the response body is done.
struct ClusterFlight(Arc<ClusterTarget>);

impl ClusterFlight {
    fn begin(cluster: Arc<ClusterTarget>, second: u64) -> ClusterFlight {
        cluster.shared.counters.begin(second);
        ClusterFlight(cluster)
    }
}

impl Drop for ClusterFlight {
    fn drop(&mut self) {
        self.0.shared.counters.end();
    }
}

/// Counts a request in the member it was sent to until the response body is done.
struct MemberFlight(Arc<Counters>);

impl MemberFlight {
    fn begin(counters: Arc<Counters>, second: u64) -> MemberFlight {
        counters.begin(second);
        MemberFlight(counters)
    }

    /// Takes back a request that never reached the member.
    fn cancel(self) {
        self.0.retract();
    }
}

impl Drop for MemberFlight {
    fn drop(&mut self) {
        self.0.end();
    }
}

/// A response body: streamed from a backend, or written by the proxy itself.
pub(crate) struct ProxyBody(Kind);

enum Kind {
    Upstream(Upstream),
    Local(Option<Bytes>),
}

struct Upstream {
    body: Incoming,
    /// Goes back to its pool once the body was read to the end.
    connection: Option<(Sender, Arc<Pool>)>,
    flight: Option<(ClusterFlight, MemberFlight)>,
}

impl Upstream {
    fn finish(&mut self) {
        if let Some((sender, pool)) = self.connection.take() {
            pool.put(sender);
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
}

impl Drop for Upstream {
    fn drop(&mut self) {
        if self.body.is_end_stream() {
            self.finish();
        }
    }
}

impl Body for ProxyBody {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        match &mut self.get_mut().0 {
            Kind::Local(message) => Poll::Ready(message.take().map(|data| Ok(Frame::data(data)))),
            Kind::Upstream(upstream) => {
                let frame = ready!(Pin::new(&mut upstream.body).poll_frame(cx));
                match &frame {
                    None => upstream.finish(),
                    Some(Err(_)) => upstream.fail(),
                    Some(Ok(_)) if upstream.body.is_end_stream() => upstream.finish(),
                    Some(Ok(_)) => {}
                }
                Poll::Ready(frame)
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        match &self.0 {
            Kind::Local(message) => message.is_none(),
            Kind::Upstream(upstream) => upstream.body.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match &self.0 {
            Kind::Local(message) => {
                SizeHint::with_exact(message.as_ref().map_or(0, |data| data.len() as u64))
            }
            Kind::Upstream(upstream) => upstream.body.size_hint(),
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
