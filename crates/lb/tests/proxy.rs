//! The proxy end to end over real sockets on 127.0.0.1, with small hyper servers as members.

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::future::Future;
use std::net::{Ipv4Addr, SocketAddr, TcpListener as StdListener};
use std::num::NonZeroUsize;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use bytes::Bytes;
use cairn_lb::{
    Backend, ClusterKey, ClusterRoute, LbError, ListenerProtocol, ListenerRoute, LoadBalancer,
    RouteTable,
};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response, StatusCode};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio::task::JoinHandle;

const TEST_TIMEOUT: Duration = Duration::from_secs(60);

async fn bounded<F: Future>(test: F) -> F::Output {
    tokio::time::timeout(TEST_TIMEOUT, test)
        .await
        .expect("test timed out")
}

/// A member: answers with its name, echoes bodies on `/echo`, and on `/slow` waits for a permit.
struct TestBackend {
    name: String,
    addr: SocketAddr,
    accepting: JoinHandle<()>,
    /// Once set, every response closes its connection, as a stopping process would.
    dying: Arc<AtomicBool>,
    slow: Arc<Semaphore>,
    connections: Arc<AtomicUsize>,
}

impl TestBackend {
    async fn start(name: &str) -> TestBackend {
        TestBackend::start_closing_idle(name, None).await
    }

    /// A member that closes keep-alive connections idle for `idle_timeout`.
    async fn start_closing_idle(name: &str, idle_timeout: Option<Duration>) -> TestBackend {
        let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
            .await
            .expect("bind backend");
        let addr = listener.local_addr().expect("backend address");
        let dying = Arc::new(AtomicBool::new(false));
        let slow = Arc::new(Semaphore::new(0));
        let connections = Arc::new(AtomicUsize::new(0));
        let accepting = tokio::spawn(accept(
            listener,
            name.to_string(),
            Arc::clone(&dying),
            Arc::clone(&slow),
            Arc::clone(&connections),
            idle_timeout,
        ));
        TestBackend {
            name: name.to_string(),
            addr,
            accepting,
            dying,
            slow,
            connections,
        }
    }

    fn backend(&self) -> Backend {
        Backend::new(self.name.clone(), self.addr)
    }

    /// Stops listening, so connecting is refused; open connections close after their next response.
    async fn kill(self) {
        self.dying.store(true, Ordering::SeqCst);
        self.accepting.abort();
        // Awaiting the aborted task makes sure its listener is closed.
        let _ = self.accepting.await;
    }
}

async fn accept(
    listener: TcpListener,
    name: String,
    dying: Arc<AtomicBool>,
    slow: Arc<Semaphore>,
    connections: Arc<AtomicUsize>,
    idle_timeout: Option<Duration>,
) {
    let mut builder = http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(idle_timeout);
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            continue;
        };
        connections.fetch_add(1, Ordering::SeqCst);
        let name = name.clone();
        let dying = Arc::clone(&dying);
        let slow = Arc::clone(&slow);
        let service = service_fn(move |request: Request<Incoming>| {
            let name = name.clone();
            let dying = Arc::clone(&dying);
            let slow = Arc::clone(&slow);
            async move { Ok::<_, Infallible>(answer(request, &name, &dying, &slow).await) }
        });
        tokio::spawn(
            builder
                .serve_connection(TokioIo::new(stream), service)
                .with_upgrades(),
        );
    }
}

async fn answer(
    mut request: Request<Incoming>,
    name: &str,
    dying: &AtomicBool,
    slow: &Semaphore,
) -> Response<Full<Bytes>> {
    let seen = |header: &str| {
        request
            .headers()
            .get(header)
            .and_then(|value| value.to_str().ok())
            .unwrap_or("")
            .to_string()
    };
    let forwarded_for = seen("x-forwarded-for");
    let forwarded_proto = seen("x-forwarded-proto");
    if seen("upgrade") == "echo" && seen("connection") == "upgrade" {
        let upgrade = hyper::upgrade::on(&mut request);
        tokio::spawn(async move {
            if let Ok(upgraded) = upgrade.await {
                let (mut reader, mut writer) = tokio::io::split(TokioIo::new(upgraded));
                let _ = tokio::io::copy(&mut reader, &mut writer).await;
            }
        });
        return Response::builder()
            .status(StatusCode::SWITCHING_PROTOCOLS)
            .header("connection", "upgrade")
            .header("upgrade", "echo")
            .body(Full::default())
            .expect("valid response");
    }
    let body = match request.uri().path() {
        "/echo" => request
            .into_body()
            .collect()
            .await
            .map(|body| body.to_bytes())
            .unwrap_or_default(),
        "/slow" => {
            let _permit = slow.acquire().await;
            Bytes::from(name.to_string())
        }
        _ => Bytes::from(name.to_string()),
    };
    let mut response = Response::builder()
        .header("x-seen-forwarded-for", forwarded_for)
        .header("x-seen-forwarded-proto", forwarded_proto);
    if dying.load(Ordering::SeqCst) {
        response = response.header("connection", "close");
    }
    response.body(Full::new(body)).expect("valid response")
}

/// A port nobody listens on right now.
fn free_port() -> u16 {
    let listener = StdListener::bind((Ipv4Addr::LOCALHOST, 0)).expect("bind probe");
    listener.local_addr().expect("probe address").port()
}

fn key(alias: &str) -> ClusterKey {
    ClusterKey::new("app", alias)
}

fn cluster(alias: &str, hosts: &[&str], backends: Vec<Backend>) -> ClusterRoute {
    ClusterRoute::new(
        key(alias),
        hosts.iter().map(|host| host.to_string()).collect(),
        backends,
    )
}

fn table(listeners: Vec<(u16, Vec<ClusterRoute>)>) -> RouteTable {
    RouteTable {
        listeners: listeners
            .into_iter()
            .map(|(port, clusters)| (port, ListenerRoute::http(clusters)))
            .collect(),
    }
}

type TestClient = Client<HttpConnector, Full<Bytes>>;

fn new_client() -> TestClient {
    Client::builder(TokioExecutor::new()).build_http()
}

struct Answer {
    status: StatusCode,
    body: String,
    forwarded_for: String,
    forwarded_proto: String,
}

async fn send(
    client: &TestClient,
    port: u16,
    path: &str,
    host: Option<&str>,
    body: &str,
) -> Result<Answer, String> {
    let mut request = Request::builder()
        .method(if body.is_empty() { "GET" } else { "POST" })
        .uri(format!("http://127.0.0.1:{port}{path}"));
    if let Some(host) = host {
        request = request.header("host", host);
    }
    let request = request
        .body(Full::new(Bytes::from(body.to_string())))
        .map_err(|error| error.to_string())?;
    let response = client
        .request(request)
        .await
        .map_err(|error| format!("{error:?}"))?;
    let status = response.status();
    let seen = |header: &str| {
        response
            .headers()
            .get(header)
            .and_then(|value| value.to_str().ok())
            .unwrap_or("")
            .to_string()
    };
    let forwarded_for = seen("x-seen-forwarded-for");
    let forwarded_proto = seen("x-seen-forwarded-proto");
    let body = response
        .into_body()
        .collect()
        .await
        .map_err(|error| error.to_string())?
        .to_bytes();
    Ok(Answer {
        status,
        body: String::from_utf8_lossy(&body).into_owned(),
        forwarded_for,
        forwarded_proto,
    })
}

/// Sends a request that must succeed and returns the name of the member that answered.
async fn get_member(client: &TestClient, port: u16) -> String {
    let answer = send(client, port, "/", None, "")
        .await
        .expect("request through the proxy");
    assert_eq!(answer.status, StatusCode::OK, "body: {}", answer.body);
    answer.body
}

fn counts(names: impl IntoIterator<Item = String>) -> BTreeMap<String, usize> {
    let mut counts = BTreeMap::new();
    for name in names {
        *counts.entry(name).or_insert(0) += 1;
    }
    counts
}

#[tokio::test]
async fn spreads_requests_over_all_members() {
    bounded(async {
        let backends = [
            TestBackend::start("a").await,
            TestBackend::start("b").await,
            TestBackend::start("c").await,
        ];
        let (balancer, port) = balance(backends.iter().map(TestBackend::backend).collect()).await;
        assert_eq!(balancer.listening_ports(), [port]);

        let client = new_client();
        let mut names = Vec::new();
        for _ in 0..300 {
            names.push(get_member(&client, port).await);
        }
        for (name, count) in counts(names) {
            assert!(
                (90..=110).contains(&count),
                "{name} got {count} of 300 requests"
            );
        }

        let stats = balancer.stats();
        let web = stats.cluster(&key("web")).expect("stats of web");
        assert_eq!(
            (
                web.requests.total,
                web.requests.status_2xx,
                web.requests.in_flight
            ),
            (300, 300, 0)
        );
        assert_eq!(web.requests.failures, 0);
        let per_member: u64 = web.members.iter().map(|member| member.requests.total).sum();
        assert_eq!(per_member, 300);
        assert!(web.requests.per_second <= 300.0 / cairn_lb::RATE_WINDOW_SECS as f64);

        let answer = send(&client, port, "/echo", None, "a body that streams through")
            .await
            .expect("echo");
        assert_eq!(answer.body, "a body that streams through");
        assert_eq!(answer.forwarded_for, "127.0.0.1");
        assert_eq!(answer.forwarded_proto, "http");
        shut_down_and_check(&balancer, port).await;
    })
    .await;
}

/// Shuts `balancer` down and checks that nothing listens on `port` any more.
async fn shut_down_and_check(balancer: &LoadBalancer, port: u16) {
    balancer.shutdown().await;
    assert!(balancer.listening_ports().is_empty());
    assert!(
        send(&new_client(), port, "/", None, "").await.is_err(),
        "nothing listens after shutdown"
    );
}

#[tokio::test]
async fn a_proxy_on_threads_of_its_own_serves_and_shuts_down() {
    bounded(async {
        let backends = [TestBackend::start("a").await, TestBackend::start("b").await];
        let port = free_port();
        let grace = Duration::from_secs(1);
        let threads = NonZeroUsize::new(3).expect("non-zero");
        let balancer = LoadBalancer::on_own_threads(Ipv4Addr::LOCALHOST.into(), grace, threads)
            .expect("start the proxy's threads");
        let members = backends.iter().map(TestBackend::backend).collect();
        balancer
            .publish(table(vec![(port, vec![cluster("web", &[], members)])]))
            .await
            .expect("publish");
        let mut names = Vec::new();
        // A client connection of its own for each request, so the kernel spreads them.
        for _ in 0..30 {
            names.push(get_member(&new_client(), port).await);
        }
        let expected = BTreeMap::from([("a".to_string(), 15), ("b".to_string(), 15)]);
        assert_eq!(counts(names), expected);
        let web = balancer.stats().cluster(&key("web")).expect("web").clone();
        assert_eq!((web.requests.total, web.requests.in_flight), (30, 0));
        // One thread would have sent every request over one kept-alive connection per
        // member; each thread keeps its own.
        let member_connections: usize = backends
            .iter()
            .map(|backend| backend.connections.load(Ordering::SeqCst))
            .sum();
        assert!(
            member_connections > 2,
            "{member_connections} member connections: one thread served every request"
        );

        // The port closes on every thread, and opens again on every thread.
        balancer.publish(table(vec![])).await.expect("publish");
        assert!(
            send(&new_client(), port, "/", None, "").await.is_err(),
            "nothing listens on a port the table dropped"
        );
        let members = backends.iter().map(TestBackend::backend).collect();
        balancer
            .publish(table(vec![(port, vec![cluster("web", &[], members)])]))
            .await
            .expect("publish again");
        for _ in 0..10 {
            get_member(&new_client(), port).await;
        }

        shut_down_and_check(&balancer, port).await;
    })
    .await;
}

#[tokio::test]
async fn shared_port_routes_by_host() {
    bounded(async {
        let web = TestBackend::start("web-1").await;
        let api = TestBackend::start("api-1").await;
        let port = free_port();
        let balancer = LoadBalancer::new(Ipv4Addr::LOCALHOST.into());
        let clusters = vec![
            cluster(
                "web",
                &["web.example.com", "www.example.com"],
                vec![web.backend()],
            ),
            cluster("api", &["api.example.com"], vec![api.backend()]),
            cluster("empty", &["empty.example.com"], Vec::new()),
        ];
        balancer
            .publish(table(vec![(port, clusters)]))
            .await
            .expect("publish");

        let client = new_client();
        let cases: [(&str, StatusCode, &str); 6] = [
            ("web.example.com", StatusCode::OK, "web-1"),
            ("WWW.Example.com:8080", StatusCode::OK, "web-1"),
            ("api.example.com", StatusCode::OK, "api-1"),
            (
                "other.example.com",
                StatusCode::NOT_FOUND,
                "no cluster on port {port} answers to host other.example.com\n",
            ),
            (
                "empty.example.com",
                StatusCode::SERVICE_UNAVAILABLE,
                "cluster app/empty has no members to send requests to\n",
            ),
            ("api.example.com.", StatusCode::OK, "api-1"),
        ];
        for (host, status, body) in cases {
            let answer = send(&client, port, "/", Some(host), "")
                .await
                .expect("request");
            let body = body.replace("{port}", &port.to_string());
            assert_eq!(
                (answer.status, answer.body.as_str()),
                (status, body.as_str()),
                "host {host}"
            );
        }
        let stats = balancer.stats();
        let empty = stats.cluster(&key("empty")).expect("stats of empty");
        assert_eq!((empty.requests.total, empty.requests.failures), (1, 1));
    })
    .await;
}

#[tokio::test]
async fn killed_member_fails_no_request() {
    bounded(async {
        let mut backends = vec![
            TestBackend::start("a").await,
            TestBackend::start("b").await,
            TestBackend::start("c").await,
        ];
        let (balancer, port) = balance(backends.iter().map(TestBackend::backend).collect()).await;

        let sent = Arc::new(AtomicUsize::new(0));
        let clients: Vec<JoinHandle<Vec<Result<String, String>>>> = (0..4)
            .map(|_| {
                let sent = Arc::clone(&sent);
                tokio::spawn(async move {
                    let client = new_client();
                    let mut answers = Vec::new();
                    for _ in 0..200 {
                        sent.fetch_add(1, Ordering::SeqCst);
                        let answer = send(&client, port, "/", None, "").await;
                        answers.push(answer.and_then(|answer| match answer.status {
                            StatusCode::OK => Ok(answer.body),
                            status => Err(format!("{status}: {}", answer.body)),
                        }));
                    }
                    answers
                })
            })
            .collect();
        while sent.load(Ordering::SeqCst) < 200 {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        backends.remove(1).kill().await;
        let served_at_kill = balancer
            .stats()
            .cluster(&key("web"))
            .expect("web")
            .member("b")
            .expect("b")
            .requests
            .total;

        let mut answers = Vec::new();
        for client in clients {
            answers.extend(client.await.expect("client task"));
        }
        let failures: Vec<&String> = answers
            .iter()
            .filter_map(|answer| answer.as_ref().err())
            .collect();
        assert!(
            failures.is_empty(),
            "{} failed, first: {:?}",
            failures.len(),
            failures.first()
        );
        assert_eq!(answers.len(), 800);
        let web = balancer.stats().cluster(&key("web")).expect("web").clone();
        assert_eq!((web.requests.total, web.requests.failures), (800, 0));
        let served_by_b = web.member("b").expect("b").requests.total;
        assert!(
            served_by_b <= served_at_kill + 8,
            "b served {served_by_b} requests, {served_at_kill} when killed"
        );
        assert!(web.member("a").expect("a").requests.total > 300);
    })
    .await;
}

#[tokio::test]
async fn connections_the_member_closed_are_not_reused() {
    bounded(async {
        let backend = TestBackend::start_closing_idle("a", Some(Duration::from_millis(50))).await;
        let (balancer, port) = balance(vec![backend.backend()]).await;
        let client = new_client();
        for _ in 0..5 {
            assert_eq!(get_member(&client, port).await, "a");
            tokio::time::sleep(Duration::from_millis(120)).await;
        }
        let web = balancer.stats().cluster(&key("web")).expect("web").clone();
        assert_eq!((web.requests.total, web.requests.failures), (5, 0));
        assert_eq!(backend.connections.load(Ordering::SeqCst), 5);
    })
    .await;
}

#[tokio::test]
async fn switched_protocols_are_relayed_both_ways() {
    bounded(async {
        let backend = TestBackend::start("a").await;
        let (balancer, port) = balance(vec![backend.backend()]).await;
        let upgrade =
            b"GET /tunnel HTTP/1.1\r\nHost: web\r\nConnection: Upgrade\r\nUpgrade: echo\r\n\r\n";
        let mut stream = raw_send(port, upgrade).await;
        let mut head = Vec::new();
        while !head.ends_with(b"\r\n\r\n") {
            let mut byte = [0u8; 1];
            stream
                .read_exact(&mut byte)
                .await
                .expect("read the response head");
            head.push(byte[0]);
        }
        let head = String::from_utf8_lossy(&head).to_ascii_lowercase();
        assert!(head.starts_with("http/1.1 101 "), "{head}");
        assert!(head.contains("upgrade: echo\r\n"), "{head}");
        for message in [&b"ping"[..], b"a longer message"] {
            stream
                .write_all(message)
                .await
                .expect("write through the tunnel");
            let mut echoed = vec![0u8; message.len()];
            stream
                .read_exact(&mut echoed)
                .await
                .expect("read through the tunnel");
            assert_eq!(echoed, message);
        }
        let in_flight = || {
            balancer
                .stats()
                .cluster(&key("web"))
                .expect("web")
                .requests
                .in_flight
        };
        assert_eq!(in_flight(), 1, "an open tunnel is a request in flight");
        drop(stream);
        while in_flight() != 0 {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await;
}

#[tokio::test]
async fn draining_member_gets_no_new_requests() {
    bounded(async {
        let a = TestBackend::start("a").await;
        let b = TestBackend::start("b").await;
        let mut draining = b.backend();
        draining.draining = true;
        let (balancer, port) = balance(vec![a.backend(), draining.clone()]).await;
        let client = new_client();
        for _ in 0..20 {
            assert_eq!(get_member(&client, port).await, "a");
        }
        let mut all_draining = a.backend();
        all_draining.draining = true;
        balancer
            .publish(table(vec![(
                port,
                vec![cluster("web", &[], vec![all_draining, draining])],
            )]))
            .await
            .expect("publish");
        let answer = send(&client, port, "/", None, "").await.expect("request");
        assert_eq!(answer.status, StatusCode::SERVICE_UNAVAILABLE);
    })
    .await;
}

#[tokio::test]
async fn publishing_while_requests_flow() {
    bounded(async {
        let backends = [
            TestBackend::start("a").await,
            TestBackend::start("b").await,
            TestBackend::start("c").await,
        ];
        let port = free_port();
        let balancer = LoadBalancer::new(Ipv4Addr::LOCALHOST.into());
        let route = |members: &[&TestBackend]| {
            table(vec![(
                port,
                vec![cluster(
                    "web",
                    &[],
                    members.iter().map(|backend| backend.backend()).collect(),
                )],
            )])
        };
        balancer
            .publish(route(&[&backends[0], &backends[1]]))
            .await
            .expect("publish");

        let stop = Arc::new(AtomicBool::new(false));
        let clients: Vec<JoinHandle<(usize, Vec<String>)>> = (0..3)
            .map(|_| {
                let stop = Arc::clone(&stop);
                tokio::spawn(async move {
                    let client = new_client();
                    let (mut served, mut failures) = (0, Vec::new());
                    while !stop.load(Ordering::SeqCst) && served < 5_000 {
                        match send(&client, port, "/", None, "").await {
                            Ok(answer) if answer.status == StatusCode::OK => served += 1,
                            Ok(answer) => {
                                failures.push(format!("{}: {}", answer.status, answer.body))
                            }
                            Err(error) => failures.push(error),
                        }
                    }
                    (served, failures)
                })
            })
            .collect();
        let layouts = [[0, 1], [1, 2], [2, 0], [0, 1], [1, 2]];
        for layout in layouts {
            tokio::time::sleep(Duration::from_millis(30)).await;
            balancer
                .publish(route(&[&backends[layout[0]], &backends[layout[1]]]))
                .await
                .expect("publish");
        }
        tokio::time::sleep(Duration::from_millis(30)).await;
        stop.store(true, Ordering::SeqCst);
        let mut served = 0;
        for client in clients {
            let (count, failures) = client.await.expect("client task");
            assert!(failures.is_empty(), "{failures:?}");
            served += count;
        }
        assert!(served > 0);

        let client = new_client();
        let names = counts([
            get_member(&client, port).await,
            get_member(&client, port).await,
        ]);
        assert_eq!(names.keys().collect::<Vec<_>>(), ["b", "c"]);
        let stats = balancer.stats();
        let members: Vec<&str> = stats.clusters[0]
            .members
            .iter()
            .map(|member| member.member_id.as_str())
            .collect();
        assert_eq!(members, ["b", "c"]);

        let second_port = free_port();
        balancer
            .publish(table(vec![(
                second_port,
                vec![cluster("web", &[], vec![backends[0].backend()])],
            )]))
            .await
            .expect("publish on another port");
        assert_eq!(balancer.listening_ports(), [second_port]);
        assert_eq!(get_member(&client, second_port).await, "a");
        assert!(
            send(&new_client(), port, "/", None, "").await.is_err(),
            "the old port is closed"
        );
    })
    .await;
}

#[tokio::test]
async fn counters_follow_a_slow_request() {
    bounded(async {
        let backend = TestBackend::start("a").await;
        let (balancer, port) = balance(vec![backend.backend()]).await;
        let client = new_client();
        get_member(&client, port).await;

        let slow = tokio::spawn({
            let client = client.clone();
            async move { send(&client, port, "/slow", None, "").await }
        });
        let in_flight = || {
            let stats = balancer.stats();
            let web = stats.cluster(&key("web")).expect("web");
            (
                web.requests.in_flight,
                web.member("a").expect("a").requests.in_flight,
            )
        };
        while in_flight() != (1, 1) {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        backend.slow.add_permits(1);
        let answer = slow.await.expect("slow task").expect("slow request");
        assert_eq!(answer.body, "a");
        assert_eq!(in_flight(), (0, 0));

        let missing = send(&client, port, "/missing-but-answered", None, "")
            .await
            .expect("request");
        assert_eq!(missing.status, StatusCode::OK);
        let stats = balancer.stats();
        let web = stats.cluster(&key("web")).expect("web");
        let member = web.member("a").expect("a");
        assert_eq!((web.requests.total, web.requests.status_2xx), (3, 3));
        assert_eq!(
            (
                member.requests.total,
                member.requests.status_2xx,
                member.requests.in_flight
            ),
            (3, 3, 0)
        );
    })
    .await;
}

#[tokio::test]
async fn a_client_that_goes_away_takes_its_request_with_it() {
    bounded(async {
        let backend = TestBackend::start("a").await;
        let (balancer, port) = balance(vec![backend.backend()]).await;
        let in_flight = || {
            let stats = balancer.stats();
            stats.cluster(&key("web")).expect("web").requests.in_flight
        };
        let client = raw_send(port, b"GET /slow HTTP/1.1\r\nHost: web\r\n\r\n").await;
        while in_flight() != 1 {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        drop(client);
        // The member never answers, yet the request ends: the proxy saw its client close.
        while in_flight() != 0 {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        let member = balancer.stats().cluster(&key("web")).expect("web").clone();
        assert_eq!(member.requests.status_2xx, 0);
        balancer.shutdown().await;
    })
    .await;
}

#[tokio::test]
async fn unreachable_members_give_bad_gateway() {
    bounded(async {
        let dead = SocketAddr::from((Ipv4Addr::LOCALHOST, free_port()));
        let (balancer, port) = balance(vec![Backend::new("gone", dead)]).await;
        let answer = send(&new_client(), port, "/", None, "")
            .await
            .expect("request");
        assert_eq!(answer.status, StatusCode::BAD_GATEWAY);
        assert!(
            answer
                .body
                .starts_with("no member of cluster app/web accepted a connection (1 tried)"),
            "{}",
            answer.body
        );
        let web = balancer.stats().cluster(&key("web")).expect("web").clone();
        assert_eq!(
            (
                web.requests.failures,
                web.member("gone").expect("gone").requests.total
            ),
            (1, 0)
        );
    })
    .await;
}

/// A socket another program holds a port with; `shared` sets `SO_REUSEPORT`, with which the
/// kernel would let a socket of the same user that sets it too share the port.
fn occupy_port(shared: bool) -> tokio::net::TcpListener {
    let socket = tokio::net::TcpSocket::new_v4().expect("socket");
    socket.set_reuseport(shared).expect("SO_REUSEPORT");
    socket
        .bind((Ipv4Addr::LOCALHOST, 0).into())
        .expect("bind a free port");
    socket.listen(16).expect("listen")
}

#[tokio::test]
async fn a_port_that_cannot_be_bound_is_reported_and_the_rest_serves() {
    bounded(async {
        for (holder_shares, threads) in [(false, 0), (true, 0), (false, 2), (true, 2)] {
            let case =
                format!("holder with SO_REUSEPORT: {holder_shares}, proxy threads: {threads}");
            let backend = TestBackend::start("a").await;
            let taken = occupy_port(holder_shares);
            let taken_port = taken.local_addr().expect("taken address").port();
            let port = free_port();
            let balancer = match NonZeroUsize::new(threads) {
                None => LoadBalancer::new(Ipv4Addr::LOCALHOST.into()),
                Some(threads) => LoadBalancer::on_own_threads(
                    Ipv4Addr::LOCALHOST.into(),
                    Duration::from_secs(1),
                    threads,
                )
                .expect("proxy threads"),
            };
            let routes = table(vec![
                (
                    taken_port,
                    vec![cluster("web", &[], vec![backend.backend()])],
                ),
                (port, vec![cluster("web", &[], vec![backend.backend()])]),
            ]);
            let error = balancer
                .publish(routes.clone())
                .await
                .expect_err(&format!("{case}: the taken port fails"));
            assert!(
                matches!(error, LbError::Bind { port, .. } if port == taken_port),
                "{case}: {error}"
            );
            assert!(
                error
                    .to_string()
                    .starts_with(&format!("cannot listen on port {taken_port}: ")),
                "{case}: {error}"
            );
            assert_eq!(balancer.listening_ports(), [port], "{case}");
            assert_eq!(get_member(&new_client(), port).await, "a", "{case}");

            drop(taken);
            balancer
                .publish(routes)
                .await
                .unwrap_or_else(|error| panic!("{case}: the port is free now: {error}"));
            let mut expected = vec![port, taken_port];
            expected.sort();
            assert_eq!(balancer.listening_ports(), expected, "{case}");
            assert_eq!(get_member(&new_client(), taken_port).await, "a", "{case}");
        }
    })
    .await;
}

#[test]
fn route_table_reads_from_json() {
    let json = r#"{"listeners": {"8080": {"clusters": [{
        "key": {"application": "shop", "alias": "web"},
        "hosts": ["shop.web.cairn.local"],
        "backends": [{"member_id": "m1", "addr": "127.0.0.1:9000"}, {"member_id": "m2", "addr": "[::1]:9001", "draining": true}]
    }]}}}"#;
    let table: RouteTable = serde_json::from_str(json).expect("valid table");
    let backends = &table.listeners[&8080].clusters[0].backends;
    assert_eq!((backends[0].draining, backends[1].draining), (false, true));
    let again: RouteTable =
        serde_json::from_str(&serde_json::to_string(&table).expect("serialize"))
            .expect("parse again");
    assert_eq!(again, table);
}

/// A member written on raw sockets, answering by path with each body framing HTTP/1.1 has;
/// every body starts with the request head it received, lower-cased.
async fn raw_member(listener: TcpListener) {
    let own = listener.local_addr().expect("member address");
    loop {
        let Ok((mut stream, _)) = listener.accept().await else {
            continue;
        };
        tokio::spawn(async move {
            let mut buffer = Vec::new();
            while let Some((head, body)) = read_raw_request(&mut stream, &mut buffer).await {
                let seen = format!("{head}body={body}\n");
                let path = head.split(' ').nth(1).unwrap_or_default().to_string();
                let response = match path.as_str() {
                    // A length beside the chunked coding is to be ignored.
                    "/chunked" => {
                        let (first, rest) = seen.split_at(seen.len() / 2);
                        format!(
                            "HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\ncontent-length: 999\r\n\r\n{:x}\r\n{first}\r\n{:x};ext=1\r\n{rest}\r\n0\r\nx-trailer: 1\r\n\r\n",
                            first.len(),
                            rest.len()
                        )
                    }
                    "/until-close" => format!("HTTP/1.0 200 OK\r\n\r\n{seen}"),
                    "/continue" => format!(
                        "HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\ncontent-length: {}\r\n\r\n{seen}",
                        seen.len()
                    ),
                    "/no-content" => "HTTP/1.1 204 No Content\r\n\r\n".to_string(),
                    // A redirect to itself, as a member that knows only its own address sends.
                    p if p.ends_with("/cookie") => "HTTP/1.1 200 OK\r\nset-cookie: id=1; Path=/abc/app; HttpOnly\r\ncontent-length: 0\r\n\r\n".to_string(),
                    p if p.ends_with("/redirect") => format!(
                        "HTTP/1.1 302 Found\r\nlocation: http://{own}/abc/app/next\r\ncontent-length: 0\r\n\r\n"
                    ),
                    "/endless" => {
                        let first =
                            "HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n5\r\nhello\r\n";
                        let _ = stream.write_all(first.as_bytes()).await;
                        // A stream that never ends, such as server-sent events.
                        tokio::time::sleep(Duration::from_secs(3600)).await;
                        return;
                    }
                    _ => format!(
                        "HTTP/1.1 200 OK\r\ncontent-length: {}\r\n\r\n{seen}",
                        seen.len()
                    ),
                };
                // A HEAD response carries the length its GET would have, and no body; a rude
                // member sends the body all the same.
                let response = match head.starts_with("head ") && path != "/rude-head" {
                    true => response
                        .split_once("\r\n\r\n")
                        .map(|(head, _)| format!("{head}\r\n\r\n"))
                        .unwrap_or(response),
                    false => response,
                };
                if stream.write_all(response.as_bytes()).await.is_err() || path == "/until-close" {
                    return;
                }
            }
        });
    }
}

/// Reads one request: its head lower-cased, and its body per `content-length` or chunked.
async fn read_raw_request(
    stream: &mut tokio::net::TcpStream,
    buffer: &mut Vec<u8>,
) -> Option<(String, String)> {
    let mut fill = async |buffer: &mut Vec<u8>| {
        let mut chunk = [0u8; 4096];
        let read = stream
            .read(&mut chunk)
            .await
            .ok()
            .filter(|&read| read > 0)?;
        buffer.extend_from_slice(&chunk[..read]);
        Some(())
    };
    let end = loop {
        if let Some(end) = buffer.windows(4).position(|window| window == b"\r\n\r\n") {
            break end + 4;
        }
        fill(buffer).await?;
    };
    let head = String::from_utf8_lossy(&buffer[..end]).to_ascii_lowercase();
    buffer.drain(..end);
    let length = head
        .lines()
        .find_map(|line| line.strip_prefix("content-length: "))
        .and_then(|length| length.trim().parse::<usize>().ok());
    let body = if let Some(length) = length {
        while buffer.len() < length {
            fill(buffer).await?;
        }
        buffer.drain(..length).collect()
    } else if head.contains("transfer-encoding: chunked") {
        while !buffer.ends_with(b"0\r\n\r\n") {
            fill(buffer).await?;
        }
        std::mem::take(buffer)
    } else {
        Vec::new()
    };
    let head = head.replace("\r\n", "|");
    Some((head, String::from_utf8_lossy(&body).replace("\r\n", "|")))
}

/// A load balancer serving one cluster `web` of `members` on a free port.
async fn balance(members: Vec<Backend>) -> (LoadBalancer, u16) {
    let port = free_port();
    let balancer = LoadBalancer::new(Ipv4Addr::LOCALHOST.into());
    balancer
        .publish(table(vec![(port, vec![cluster("web", &[], members)])]))
        .await
        .expect("publish");
    (balancer, port)
}

/// Opens a connection to the proxy and writes `bytes` on it.
async fn raw_send(port: u16, bytes: &[u8]) -> tokio::net::TcpStream {
    let mut stream = tokio::net::TcpStream::connect((Ipv4Addr::LOCALHOST, port))
        .await
        .expect("connect to the proxy");
    stream.write_all(bytes).await.expect("send to the proxy");
    stream
}

/// A member on raw sockets answering as [`raw_member`] does.
async fn start_raw_member() -> Backend {
    let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
        .await
        .expect("bind member");
    let member = Backend::new("raw", listener.local_addr().expect("member address"));
    tokio::spawn(raw_member(listener));
    member
}

/// Sends `request` (its head without the blank line) on a connection of its own and checks
/// the status and a piece of the answer, lower-cased.
async fn check_exchange(port: u16, request: &str, status: &str, expected: &str) {
    let answer = raw_exchange(port, &format!("{request}\r\nConnection: close\r\n\r\n")).await;
    assert!(
        answer.starts_with(&format!("http/1.1 {status}\r\n")) && answer.contains(expected),
        "port {port}, {request:?}: {answer}"
    );
}

/// Sends raw bytes to the proxy and reads responses until the connection closes.
async fn raw_exchange(port: u16, requests: &str) -> String {
    let mut stream = raw_send(port, requests.as_bytes()).await;
    let mut received = Vec::new();
    stream
        .read_to_end(&mut received)
        .await
        .expect("read the responses");
    String::from_utf8_lossy(&received).to_ascii_lowercase()
}

#[tokio::test]
async fn every_body_framing_passes_through() {
    bounded(async {
        let member = start_raw_member().await;
        let (balancer, port) = balance(vec![member]).await;
        let client = new_client();

        for path in ["/chunked", "/until-close", "/continue", "/length"] {
            let answer = send(&client, port, path, None, "").await.expect(path);
            assert_eq!(answer.status, StatusCode::OK, "{path}");
            let expected_head = format!("get {path} http/1.1|host: 127.0.0.1:{port}|");
            assert!(answer.body.starts_with(&expected_head), "{path}: {}", answer.body);
            assert!(answer.body.ends_with("|body=\n"), "{path}: {}", answer.body);
        }
        // Bytes past a response's end make its connection unfit for the next request.
        let responses = raw_exchange(
            port,
            "HEAD /rude-head HTTP/1.1\r\nHost: web\r\n\r\n\
             POST /length HTTP/1.1\r\nHost: web\r\nContent-Length: 2\r\nConnection: close\r\n\r\nhi",
        )
        .await;
        assert_eq!(responses.matches("http/1.1 200 ok\r\n").count(), 2, "{responses}");
        assert!(responses.contains("body=hi"), "{responses}");

        let answer = send(&client, port, "/no-content", None, "").await.expect("204");
        assert_eq!((answer.status, answer.body.as_str()), (StatusCode::NO_CONTENT, ""));

        // A chunked upload with an expectation, then a HEAD, on one client connection.
        let responses = raw_exchange(
            port,
            "POST /length HTTP/1.1\r\nHost: web\r\nTransfer-Encoding: chunked\r\nExpect: 100-continue\r\n\r\n\
             5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n\
             HEAD /length HTTP/1.1\r\nHost: web\r\nConnection: close\r\n\r\n",
        )
        .await;
        let (upload, head) = responses
            .split_once("http/1.1 200 ok\r\n")
            .and_then(|(_, rest)| rest.split_once("http/1.1 200 ok\r\n"))
            .unwrap_or_else(|| panic!("two final responses expected: {responses}"));
        assert!(upload.contains("transfer-encoding: chunked|"), "{upload}");
        assert!(!upload.contains("expect"), "the expectation was met by the proxy: {upload}");
        assert!(upload.contains("body=5|hello|6| world|0||"), "{upload}");
        assert!(head.contains("content-length: "), "a HEAD answer keeps its length: {head}");
        assert!(head.ends_with("\r\n\r\n"), "a HEAD answer has no body: {head}");

        let web = balancer.stats().cluster(&key("web")).expect("web").clone();
        assert_eq!((web.requests.total, web.requests.failures), (9, 0));
        balancer.shutdown().await;
    })
    .await;
}

#[tokio::test]
async fn context_paths_go_in_front_of_the_path_and_come_off_redirects_and_cookies() {
    bounded(async {
        let web = start_raw_member().await;
        let api = start_raw_member().await;
        let mut shop = cluster("web", &["shop.example.com", "web.example.com"], vec![web]);
        shop.context_paths =
            BTreeMap::from([("shop.example.com".to_string(), "/abc/app".to_string())]);
        let (alone, shared) = (free_port(), free_port());
        let balancer = LoadBalancer::new(Ipv4Addr::LOCALHOST.into());
        balancer
            .publish(table(vec![
                (alone, vec![shop.clone()]),
                (
                    shared,
                    vec![shop, cluster("api", &["api.example.com"], vec![api])],
                ),
            ]))
            .await
            .expect("publish");

        // A client's request, the status it gets, and what its answer holds: the member's
        // echo of the request line it received, or a header of the member's response.
        let cases = [
            (
                "GET /index.php?x=1 HTTP/1.1\r\nHost: shop.example.com",
                "200 ok",
                "\r\n\r\nget /abc/app/index.php?x=1 http/1.1|",
            ),
            (
                "GET / HTTP/1.1\r\nHost: SHOP.example.com:80",
                "200 ok",
                "\r\n\r\nget /abc/app/ http/1.1|",
            ),
            (
                "GET http://shop.example.com/a HTTP/1.1\r\nHost: web.example.com",
                "200 ok",
                "\r\n\r\nget /abc/app/a http/1.1|",
            ),
            (
                "OPTIONS * HTTP/1.1\r\nHost: shop.example.com",
                "200 ok",
                "\r\n\r\noptions * http/1.1|",
            ),
            (
                "GET /index.php HTTP/1.1\r\nHost: web.example.com",
                "200 ok",
                "\r\n\r\nget /index.php http/1.1|",
            ),
            (
                "GET /a/../../admin HTTP/1.1\r\nHost: shop.example.com",
                "400 bad request",
                "`..` segment",
            ),
            (
                "GET /%2E%2e/admin HTTP/1.1\r\nHost: shop.example.com",
                "400 bad request",
                "`..` segment",
            ),
            // A fragment is not sent on, and cannot hide a `..` segment.
            (
                "GET /..#x HTTP/1.1\r\nHost: shop.example.com",
                "400 bad request",
                "`..` segment",
            ),
            (
                "GET /index.php#top HTTP/1.1\r\nHost: shop.example.com",
                "200 ok",
                "\r\n\r\nget /abc/app/index.php http/1.1|",
            ),
            (
                "GET /a/../b HTTP/1.1\r\nHost: web.example.com",
                "200 ok",
                "\r\n\r\nget /a/../b http/1.1|",
            ),
            // The member's redirect to itself and its cookie path are ones the client can follow.
            (
                "GET /redirect HTTP/1.1\r\nHost: shop.example.com",
                "302 found",
                "\r\nlocation: http://shop.example.com/next\r\n",
            ),
            (
                "GET /redirect HTTP/1.1\r\nHost: web.example.com",
                "302 found",
                "\r\nlocation: http://web.example.com/abc/app/next\r\n",
            ),
            (
                "GET /cookie HTTP/1.1\r\nHost: shop.example.com",
                "200 ok",
                "\r\nset-cookie: id=1; path=/; httponly\r\n",
            ),
            (
                "GET /cookie HTTP/1.1\r\nHost: web.example.com",
                "200 ok",
                "\r\nset-cookie: id=1; path=/abc/app; httponly\r\n",
            ),
        ];
        for port in [alone, shared] {
            for (request, status, expected) in cases {
                check_exchange(port, request, status, expected).await;
            }
        }
        check_exchange(
            shared,
            "GET /v1 HTTP/1.1\r\nHost: api.example.com",
            "200 ok",
            "\r\n\r\nget /v1 http/1.1|",
        )
        .await;
        balancer.shutdown().await;
    })
    .await;
}

#[tokio::test]
async fn members_too_slow_to_answer_time_out() {
    bounded(async {
        let hung = TestBackend::start("hung").await;
        let quick = TestBackend::start("quick").await;
        quick.slow.add_permits(100);
        let port = free_port();
        let balancer = LoadBalancer::new(Ipv4Addr::LOCALHOST.into());
        let mut route = cluster("web", &[], vec![hung.backend()]);
        route.response_timeout_ms = Some(200);
        balancer
            .publish(table(vec![(port, vec![route.clone()])]))
            .await
            .expect("publish");
        let client = new_client();
        for body in ["", "a body"] {
            let started = std::time::Instant::now();
            let answer = send(&client, port, "/slow", None, body)
                .await
                .expect("an answer");
            assert_eq!(
                answer.status,
                StatusCode::GATEWAY_TIMEOUT,
                "{}",
                answer.body
            );
            assert!(
                answer.body.contains("did not answer within 200 ms"),
                "{}",
                answer.body
            );
            assert!(
                started.elapsed() < Duration::from_secs(5),
                "{:?}",
                started.elapsed()
            );
        }

        // Once the slow member is no longer suspect, round robin sends it every other request;
        // a GET it does not answer in time is replayed on the quick member.
        route.backends.push(quick.backend());
        balancer
            .publish(table(vec![(port, vec![route])]))
            .await
            .expect("publish");
        tokio::time::sleep(Duration::from_millis(1_100)).await;
        for _ in 0..2 {
            let answer = send(&client, port, "/slow", None, "")
                .await
                .expect("an answer");
            assert_eq!(
                (answer.status, answer.body.as_str()),
                (StatusCode::OK, "quick")
            );
        }
        let stats = balancer.stats();
        let web = stats.cluster(&key("web")).expect("web");
        let failures = |member: &str| web.member(member).expect(member).requests.failures;
        assert_eq!((failures("hung"), failures("quick")), (3, 0));
    })
    .await;
}

#[tokio::test]
async fn a_body_that_stalls_is_cut_after_the_response_timeout() {
    bounded(async {
        let member = start_raw_member().await;
        let port = free_port();
        let balancer = LoadBalancer::new(Ipv4Addr::LOCALHOST.into());
        let mut route = cluster("web", &[], vec![member]);
        route.response_timeout_ms = Some(300);
        balancer
            .publish(table(vec![(port, vec![route])]))
            .await
            .expect("publish");
        let started = std::time::Instant::now();
        // The member sends a head and one chunk, then nothing more.
        let received = raw_exchange(port, "GET /endless HTTP/1.1\r\nHost: web\r\n\r\n").await;
        let took = started.elapsed();
        assert!(received.contains("5\r\nhello\r\n"), "{received}");
        assert!(
            !received.ends_with("0\r\n\r\n"),
            "a cut body does not look whole: {received}"
        );
        assert!(
            took >= Duration::from_millis(300),
            "cut before the timeout: {took:?}"
        );
        assert!(took < Duration::from_secs(5), "cut late: {took:?}");
        let stats = balancer.stats();
        let web = stats.cluster(&key("web")).expect("web");
        assert_eq!(web.member("raw").expect("raw").requests.failures, 1);
        assert_eq!(web.requests.in_flight, 0);
        balancer.shutdown().await;
    })
    .await;
}

/// A tcp member: answers every read with its name and what it read.
async fn tcp_member(name: &'static str) -> (Backend, JoinHandle<()>) {
    let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
        .await
        .expect("bind member");
    let member = Backend::new(name, listener.local_addr().expect("member address"));
    let accepting = tokio::spawn(async move {
        loop {
            let Ok((mut stream, _)) = listener.accept().await else {
                continue;
            };
            tokio::spawn(async move {
                let mut buffer = [0u8; 1024];
                while let Ok(read @ 1..) = stream.read(&mut buffer).await {
                    let mut answer = format!("{name}:").into_bytes();
                    answer.extend_from_slice(&buffer[..read]);
                    if stream.write_all(&answer).await.is_err() {
                        return;
                    }
                }
            });
        }
    });
    (member, accepting)
}

/// Opens a connection through the proxy, sends `ping` and returns who answered, still open.
async fn tcp_ping(port: u16) -> (String, tokio::net::TcpStream) {
    let mut stream = tokio::net::TcpStream::connect((Ipv4Addr::LOCALHOST, port))
        .await
        .expect("connect to the proxy");
    stream.write_all(b"ping").await.expect("send ping");
    let mut answer = [0u8; 6];
    stream
        .read_exact(&mut answer)
        .await
        .expect("read the answer");
    let answer = String::from_utf8_lossy(&answer).into_owned();
    let (name, echoed) = answer.split_once(':').expect("name:ping");
    assert_eq!(echoed, "ping");
    (name.to_string(), stream)
}

#[tokio::test]
async fn tcp_ports_relay_connections_round_robin() {
    bounded(async {
        let (a, a_accepting) = tcp_member("a").await;
        let (b, _b_accepting) = tcp_member("b").await;
        let port = free_port();
        let balancer = LoadBalancer::new(Ipv4Addr::LOCALHOST.into());
        let db = cluster("db", &[], vec![a, b]);
        let routes = RouteTable {
            listeners: [(port, ListenerRoute::tcp(db.clone()))].into(),
        };
        balancer.publish(routes).await.expect("publish");

        let mut open = Vec::new();
        for _ in 0..4 {
            open.push(tcp_ping(port).await);
        }
        let names = counts(open.iter().map(|(name, _)| name.clone()));
        assert_eq!(names, BTreeMap::from([("a".into(), 2), ("b".into(), 2)]));
        let in_flight = || {
            balancer
                .stats()
                .cluster(&key("db"))
                .expect("db")
                .requests
                .in_flight
        };
        assert_eq!(in_flight(), 4, "an open connection is a request in flight");
        drop(open);
        while in_flight() != 0 {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }

        // A member that stopped listening is passed over.
        a_accepting.abort();
        let _ = a_accepting.await;
        for _ in 0..3 {
            assert_eq!(tcp_ping(port).await.0, "b");
        }
        let db_stats = balancer.stats().cluster(&key("db")).expect("db").clone();
        assert_eq!(
            (db_stats.requests.total, db_stats.requests.failures),
            (7, 0)
        );

        // A tcp port has no host names to choose by, so it serves its first cluster only.
        let shared = ListenerRoute {
            protocol: ListenerProtocol::Tcp,
            ..ListenerRoute::http(vec![db, cluster("cache", &[], vec![])])
        };
        let error = balancer
            .publish(RouteTable {
                listeners: [(port, shared)].into(),
            })
            .await
            .expect_err("a shared tcp port is reported");
        assert_eq!(
            error.to_string(),
            format!(
                "tcp port {port} carries no host name, so it serves app/db only, not app/cache"
            )
        );
        assert_eq!(tcp_ping(port).await.0, "b");
        balancer.shutdown().await;
    })
    .await;
}

#[tokio::test]
async fn a_stream_that_never_ends_holds_a_shutdown_only_for_the_grace_period() {
    bounded(async {
        let member = start_raw_member().await;
        let port = free_port();
        let grace = Duration::from_millis(300);
        let balancer = LoadBalancer::with_drain_grace(Ipv4Addr::LOCALHOST.into(), grace);
        balancer
            .publish(table(vec![(port, vec![cluster("web", &[], vec![member])])]))
            .await
            .expect("publish");
        let mut stream = raw_send(port, b"GET /endless HTTP/1.1\r\nHost: web\r\n\r\n").await;
        let mut received = Vec::new();
        while !String::from_utf8_lossy(&received).contains("hello") {
            let mut chunk = [0u8; 256];
            let read = stream.read(&mut chunk).await.expect("read the stream");
            assert!(read > 0, "the stream ended early");
            received.extend_from_slice(&chunk[..read]);
        }

        let started = std::time::Instant::now();
        balancer.shutdown().await;
        let took = started.elapsed();
        assert!(took >= grace, "the stream got no grace: {took:?}");
        assert!(
            took < grace + Duration::from_secs(5),
            "shutdown took {took:?}"
        );
        let mut rest = Vec::new();
        let _ = stream.read_to_end(&mut rest).await;
        let web = balancer.stats();
        assert!(web.clusters.is_empty(), "the table is empty after shutdown");
    })
    .await;
}

#[tokio::test]
async fn a_member_answering_before_the_upload_is_through_is_heard() {
    bounded(async {
        // Refuses every upload as soon as it has the head, reads no body, and closes a moment later.
        let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
            .await
            .expect("bind member");
        let member = Backend::new("strict", listener.local_addr().expect("member address"));
        tokio::spawn(async move {
            loop {
                let Ok((mut stream, _)) = listener.accept().await else {
                    continue;
                };
                tokio::spawn(async move {
                    let mut head = Vec::new();
                    let mut byte = [0u8; 1];
                    while !head.ends_with(b"\r\n\r\n") {
                        if stream.read_exact(&mut byte).await.is_err() {
                            return;
                        }
                        head.push(byte[0]);
                    }
                    let refusal = "HTTP/1.1 413 Content Too Large\r\ncontent-length: 4\r\nconnection: close\r\n\r\nbig!";
                    let _ = stream.write_all(refusal.as_bytes()).await;
                    tokio::time::sleep(Duration::from_millis(500)).await;
                });
            }
        });
        let (_balancer, port) = balance(vec![member]).await;
        let upload = "x".repeat(32 << 20);
        let answer = send(&new_client(), port, "/upload", None, &upload)
            .await
            .expect("an answer");
        assert_eq!(
            (answer.status, answer.body.as_str()),
            (StatusCode::PAYLOAD_TOO_LARGE, "big!")
        );
    })
    .await;
}

#[tokio::test]
async fn requests_the_proxy_cannot_serve_are_refused_with_their_reason() {
    bounded(async {
        let member = start_raw_member().await;
        let (balancer, port) = balance(vec![member]).await;
        let long = "a".repeat(70_000);
        let cases = [
            (
                "GET / HTTP/2.0\r\n\r\n",
                "505",
                "only http/1.0 and http/1.1 are served",
            ),
            (
                "POST / HTTP/1.1\r\nHost: web\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n",
                "400",
                "both content-length and transfer-encoding",
            ),
            (
                "POST / HTTP/1.1\r\nHost: web\r\nTransfer-Encoding: gzip\r\n\r\n",
                "501",
                "transfer-encoding \"gzip\" is not supported",
            ),
            (
                "GET / HTTP/1.1\r\nHost: web\r\nExpect: magic\r\n\r\n",
                "417",
                "the expectation \"magic\"",
            ),
            (
                "CONNECT web:443 HTTP/1.1\r\nHost: web\r\n\r\n",
                "405",
                "connect is not served",
            ),
            (
                "GET / HTTP/1.1\r\nHost: web\r\nBad Header: 1\r\n\r\n",
                "400",
                "invalid request head",
            ),
            (
                &format!("GET /{long} HTTP/1.1\r\n\r\n"),
                "431",
                "larger than 65536 bytes",
            ),
        ];
        for (request, status, reason) in cases {
            let answer = raw_exchange(port, request).await;
            let head = answer.lines().next().unwrap_or_default();
            assert!(
                head.starts_with(&format!("http/1.1 {status} "))
                    && answer.contains("connection: close\r\n")
                    && answer.contains(reason),
                "{:.60}: {answer}",
                request
            );
        }
        let web = balancer.stats().cluster(&key("web")).expect("web").clone();
        assert_eq!(
            web.requests.total, 0,
            "no refused request reached the member"
        );
        balancer.shutdown().await;
    })
    .await;
}

#[tokio::test]
async fn http_10_and_pipelined_requests_are_answered_in_order() {
    bounded(async {
        let member = start_raw_member().await;
        let (balancer, port) = balance(vec![member]).await;
        // Pipelined on one connection: an HTTP/1.0 request that keeps the connection, two
        // HTTP/1.1 ones, and an HTTP/1.0 one whose chunked answer is delimited by the close.
        let answers = raw_exchange(
            port,
            "GET /a HTTP/1.0\r\nConnection: keep-alive\r\n\r\n\
             GET /b HTTP/1.1\r\nHost: web\r\n\r\n\
             POST /c HTTP/1.1\r\nHost: web\r\nContent-Length: 2\r\n\r\nhi\
             GET /chunked HTTP/1.0\r\n\r\n",
        )
        .await;
        let answers: Vec<&str> = answers.split("http/1.1 200 ok\r\n").skip(1).collect();
        assert_eq!(answers.len(), 4, "{answers:?}");
        assert!(
            answers[0].contains("connection: keep-alive\r\n"),
            "{}",
            answers[0]
        );
        assert!(answers[0].contains("get /a http/1.1|"), "{}", answers[0]);
        assert!(answers[1].contains("get /b http/1.1|"), "{}", answers[1]);
        assert!(answers[2].contains("post /c http/1.1|") && answers[2].contains("body=hi"));
        let last = answers[3];
        assert!(
            last.contains("connection: close\r\n") && !last.contains("transfer-encoding"),
            "an HTTP/1.0 client gets a body of unknown length up to the close: {last}"
        );
        assert!(last.contains("get /chunked http/1.1|"), "{last}");
        balancer.shutdown().await;
    })
    .await;
}

#[tokio::test(start_paused = true)]
async fn clients_slow_to_send_a_head_are_let_go() {
    let member = start_raw_member().await;
    let (balancer, port) = balance(vec![member]).await;
    // Time stands still until every task waits, then jumps to the next timer: the header
    // read timeout of 30 s passes at once.
    let started = tokio::time::Instant::now();
    let answer = raw_exchange(port, "GET / HTTP/1.1\r\nHost: we").await;
    assert!(answer.starts_with("http/1.1 408 "), "{answer}");
    assert!(
        answer.contains("no complete request head arrived in time"),
        "{answer}"
    );
    let idle = raw_exchange(port, "GET /length HTTP/1.1\r\nHost: web\r\n\r\n").await;
    assert!(
        idle.starts_with("http/1.1 200 ") && idle.ends_with("body=\n"),
        "{idle}"
    );
    assert!(
        started.elapsed() >= Duration::from_secs(60),
        "{:?}",
        started.elapsed()
    );
    balancer.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn a_client_that_stops_reading_is_given_up_on() {
    // A member answering with a body far larger than the sockets hold.
    let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
        .await
        .expect("bind member");
    let member = Backend::new("big", listener.local_addr().expect("member address"));
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut buffer = Vec::new();
                read_raw_request(&mut stream, &mut buffer).await;
                let head = "HTTP/1.1 200 OK\r\ncontent-length: 1073741824\r\n\r\n";
                let _ = stream.write_all(head.as_bytes()).await;
                let block = vec![b'x'; 1 << 16];
                while stream.write_all(&block).await.is_ok() {}
            });
        }
    });
    let (balancer, port) = balance(vec![member]).await;
    let in_flight = || {
        let stats = balancer.stats();
        stats.cluster(&key("web")).expect("web").requests.in_flight
    };
    let started = tokio::time::Instant::now();
    let _silent = raw_send(port, b"GET / HTTP/1.1\r\nHost: web\r\n\r\n").await;
    while in_flight() != 1 {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    // Nothing reads the response: once the sockets are full, the proxy waits 60 s, then ends
    // the request.
    while in_flight() != 0 {
        assert!(
            started.elapsed() < Duration::from_secs(600),
            "the request is still in flight"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        started.elapsed() >= Duration::from_secs(60),
        "{:?}",
        started.elapsed()
    );
    balancer.shutdown().await;
}
