//! The workload served on real sockets, spoken to over HTTP/1.1.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::{Duration, Instant};

use bytes::Bytes;
use cairn_workload::{NamedPort, ResponseShape, Workload, WorkloadConfig};
use http_body_util::{BodyExt, Empty};
use hyper::Request;
use hyper::client::conn::http1::{self, SendRequest};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;
use tokio::sync::oneshot;
use tokio::time::timeout;

const LIMIT: Duration = Duration::from_secs(20);

fn config(member_id: &str) -> WorkloadConfig {
    WorkloadConfig {
        member_id: member_id.to_owned(),
        bind: IpAddr::V4(Ipv4Addr::LOCALHOST),
        ports: vec![
            NamedPort {
                name: "http".to_owned(),
                port: 0,
            },
            NamedPort {
                name: "admin".to_owned(),
                port: 0,
            },
        ],
        response: ResponseShape::default(),
        ballast_mb: 0,
        unhealthy_after: None,
    }
}

/// A running workload; dropping it shuts the workload down.
struct Running {
    addrs: Vec<(String, SocketAddr)>,
    _stop: oneshot::Sender<()>,
}

async fn start(config: WorkloadConfig) -> Running {
    let workload = Workload::bind(config).await.expect("bind");
    let addrs = workload.local_addrs();
    let (stop, stopped) = oneshot::channel::<()>();
    tokio::spawn(workload.run_until(async move {
        let _ = stopped.await;
    }));
    Running { addrs, _stop: stop }
}

impl Running {
    fn addr(&self, name: &str) -> SocketAddr {
        self.addrs
            .iter()
            .find(|(port, _)| port == name)
            .map(|(_, addr)| *addr)
            .expect("port")
    }
}

struct Reply {
    status: u16,
    member: Option<String>,
    body: String,
}

async fn connect(addr: SocketAddr) -> SendRequest<Empty<Bytes>> {
    let stream = TcpStream::connect(addr).await.expect("connect");
    let (sender, connection) = http1::handshake(TokioIo::new(stream))
        .await
        .expect("handshake");
    tokio::spawn(connection);
    sender
}

async fn send(sender: &mut SendRequest<Empty<Bytes>>, method: &str, path: &str) -> Reply {
    let request = Request::builder()
        .method(method)
        .uri(path)
        .header("host", "workload")
        .body(Empty::new())
        .expect("request");
    let response = sender.send_request(request).await.expect("response");
    let status = response.status().as_u16();
    let member = response
        .headers()
        .get("x-cairn-member")
        .and_then(|value| value.to_str().ok())
        .map(str::to_owned);
    let body = response
        .into_body()
        .collect()
        .await
        .expect("body")
        .to_bytes();
    Reply {
        status,
        member,
        body: String::from_utf8_lossy(&body).into_owned(),
    }
}

async fn request(addr: SocketAddr, method: &str, path: &str) -> Reply {
    send(&mut connect(addr).await, method, path).await
}

#[tokio::test]
async fn answers_every_endpoint() {
    timeout(LIMIT, async {
        let workload = start(config("m-7")).await;
        let http = workload.addr("http");
        let check = async |port: &str, method: &str, path: &str, status: u16, body: &str| {
            let reply = request(workload.addr(port), method, path).await;
            assert_eq!(reply.status, status, "{method} {path}: {}", reply.body);
            assert!(
                reply.body.starts_with(body),
                "{method} {path}: body {:?}",
                reply.body
            );
            assert_eq!(reply.member.as_deref(), Some("m-7"), "{method} {path}");
        };
        check("http", "GET", "/", 200, "member m-7 port http\n").await;
        check("admin", "GET", "/some/path", 200, "member m-7 port admin\n").await;
        check("http", "GET", "/healthz", 200, "ok").await;
        check(
            "http",
            "GET",
            "/?bytes=x",
            400,
            "query parameter bytes=\"x\"",
        )
        .await;
        check(
            "http",
            "GET",
            "/?latency_ms=9999999",
            400,
            "query parameter latency_ms",
        )
        .await;
        check("http", "GET", "/ballast", 405, "use POST").await;
        check(
            "http",
            "POST",
            "/ballast",
            400,
            "missing query parameter mb",
        )
        .await;
        check("http", "POST", "/ballast?mb=1", 200, "{\"ballast_mb\":1}").await;
        let inflight = request(http, "GET", "/inflight").await.body;
        let report: serde_json::Value = serde_json::from_str(&inflight).expect("json");
        assert_eq!(report["member"], "m-7");
        assert_eq!(report["in_flight"], 0);
        assert_eq!(report["served"], 2);
        assert_eq!(report["ballast_mb"], 1);
        assert_eq!(request(http, "GET", "/?bytes=5000").await.body.len(), 5000);
        assert_eq!(
            request(http, "GET", "/?bytes=3").await.body,
            "member m-7 port http\n"
        );
    })
    .await
    .expect("bounded");
}

#[tokio::test]
async fn keeps_connections_alive() {
    timeout(LIMIT, async {
        let workload = start(config("keep")).await;
        let mut sender = connect(workload.addr("http")).await;
        for path in ["/", "/healthz", "/inflight", "/?bytes=100"] {
            let reply = send(&mut sender, "GET", path).await;
            assert_eq!(reply.status, 200, "{path}");
        }
    })
    .await
    .expect("bounded");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_requests_leave_health_responsive() {
    timeout(LIMIT, async {
        let workload = start(config("slow")).await;
        let http = workload.addr("http");
        let slow = tokio::spawn(request(http, "GET", "/?latency_ms=400&cpu_ms=400"));
        let mut seen_in_flight = false;
        while !slow.is_finished() {
            let asked = Instant::now();
            assert_eq!(request(http, "GET", "/healthz").await.status, 200);
            assert!(
                asked.elapsed() < Duration::from_millis(200),
                "health was slow"
            );
            let report: serde_json::Value =
                serde_json::from_str(&request(http, "GET", "/inflight").await.body).expect("json");
            seen_in_flight |= report["in_flight"] == 1;
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let started = Instant::now();
        assert_eq!(slow.await.expect("slow request").status, 200);
        assert!(started.elapsed() < Duration::from_millis(100));
        assert!(seen_in_flight, "the slow request never showed as in flight");
        let report: serde_json::Value =
            serde_json::from_str(&request(http, "GET", "/inflight").await.body).expect("json");
        assert_eq!(report["in_flight"], 0);
        assert_eq!(report["served"], 1);
    })
    .await
    .expect("bounded");
}

#[tokio::test]
async fn latency_and_cpu_defaults_apply() {
    timeout(LIMIT, async {
        let mut config = config("defaults");
        config.response = ResponseShape {
            bytes: 64,
            latency: Duration::from_millis(150),
            cpu: Duration::from_millis(50),
        };
        let workload = start(config).await;
        let asked = Instant::now();
        let reply = request(workload.addr("http"), "GET", "/").await;
        assert!(asked.elapsed() >= Duration::from_millis(200));
        assert_eq!(reply.body.len(), 64);
        let asked = Instant::now();
        request(workload.addr("http"), "GET", "/?latency_ms=0&cpu_ms=0").await;
        assert!(asked.elapsed() < Duration::from_millis(150));
    })
    .await
    .expect("bounded");
}

#[tokio::test]
async fn goes_unhealthy_when_told() {
    timeout(LIMIT, async {
        let mut config = config("sick");
        config.unhealthy_after = Some(Duration::ZERO);
        let workload = start(config).await;
        let reply = request(workload.addr("http"), "GET", "/healthz").await;
        assert_eq!((reply.status, reply.body.as_str()), (503, "unhealthy\n"));
    })
    .await
    .expect("bounded");
}

#[tokio::test]
async fn shutdown_lets_in_flight_requests_finish() {
    timeout(LIMIT, async {
        let workload = Workload::bind(config("drain")).await.expect("bind");
        let http = workload.local_addrs()[0].1;
        let (stop, stopped) = oneshot::channel::<()>();
        let served = tokio::spawn(workload.run_until(async move {
            let _ = stopped.await;
        }));
        let slow = tokio::spawn(request(http, "GET", "/?latency_ms=300"));
        tokio::time::sleep(Duration::from_millis(100)).await;
        stop.send(()).expect("stop");
        assert_eq!(slow.await.expect("slow").status, 200);
        served.await.expect("run_until returns");
        assert!(
            TcpStream::connect(http).await.is_err(),
            "still accepting after shutdown"
        );
    })
    .await
    .expect("bounded");
}

fn resident_mib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").expect("status");
    let line = status
        .lines()
        .find(|line| line.starts_with("VmRSS:"))
        .expect("VmRSS");
    let kib: u64 = line
        .split_whitespace()
        .nth(1)
        .and_then(|n| n.parse().ok())
        .expect("number");
    kib / 1024
}

#[tokio::test]
async fn ballast_is_resident_and_resizable() {
    timeout(LIMIT, async {
        let mut config = config("heavy");
        config.ballast_mb = 64;
        let before = resident_mib();
        let workload = start(config).await;
        let http = workload.addr("http");
        assert!(
            resident_mib() >= before + 60,
            "ballast at start is not resident"
        );
        assert_eq!(request(http, "POST", "/ballast?mb=0").await.status, 200);
        assert!(resident_mib() < before + 32, "ballast was not released");
        assert_eq!(request(http, "POST", "/ballast?mb=48").await.status, 200);
        assert!(
            resident_mib() >= before + 44,
            "ballast set at run time is not resident"
        );
        request(http, "POST", "/ballast?mb=0").await;
    })
    .await
    .expect("bounded");
}
