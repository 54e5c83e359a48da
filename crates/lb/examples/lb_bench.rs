//! The processes `bench/lb/run.sh` measures: a tiny backend answering a fixed body on a
//! single-threaded runtime, and Cairn's proxy in front of it on threads of its own.
//!
//! Usage: `lb_bench backend PORT` or `lb_bench proxy PORT BACKEND_PORT [THREADS]`.

use std::convert::Infallible;
use std::net::{Ipv4Addr, SocketAddr};
use std::num::NonZeroUsize;

use bytes::Bytes;
use cairn_lb::{
    Backend, ClusterKey, ClusterRoute, DEFAULT_DRAIN_GRACE, ListenerRoute, LoadBalancer, RouteTable,
};
use http_body_util::Full;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;

// The allocator of the `cairn` binary, so the proxy measured is the one that ships.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

const BODY: &[u8] = b"hello from the cairn benchmark backend\n";

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    match args
        .iter()
        .map(String::as_str)
        .collect::<Vec<_>>()
        .as_slice()
    {
        ["backend", port] => runtime.block_on(backend(port.parse()?)),
        ["proxy", port, backend_port] => runtime.block_on(proxy(
            port.parse()?,
            backend_port.parse()?,
            NonZeroUsize::MIN,
        )),
        ["proxy", port, backend_port, threads] => runtime.block_on(proxy(
            port.parse()?,
            backend_port.parse()?,
            threads.parse()?,
        )),
        _ => {
            Err("usage: lb_bench backend PORT | lb_bench proxy PORT BACKEND_PORT [THREADS]".into())
        }
    }
}

async fn backend(port: u16) -> Result<(), Box<dyn std::error::Error>> {
    let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, port)).await?;
    loop {
        let (stream, _) = listener.accept().await?;
        stream.set_nodelay(true)?;
        tokio::spawn(async move {
            let service = service_fn(|_: Request<hyper::body::Incoming>| async {
                let mut response = Response::new(Full::new(Bytes::from_static(BODY)));
                response.headers_mut().insert(
                    "content-type",
                    hyper::header::HeaderValue::from_static("text/plain"),
                );
                Ok::<_, Infallible>(response)
            });
            // A client closing its connection mid-request is normal at the end of a run.
            let _ = http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}

async fn proxy(
    port: u16,
    backend_port: u16,
    threads: NonZeroUsize,
) -> Result<(), Box<dyn std::error::Error>> {
    // On threads of its own, as `cairn up` runs it.
    let balancer =
        LoadBalancer::on_own_threads(Ipv4Addr::LOCALHOST.into(), DEFAULT_DRAIN_GRACE, threads)?;
    let cluster = ClusterRoute::new(
        ClusterKey::new("bench", "backend"),
        Vec::new(),
        vec![Backend::new(
            "backend-1",
            SocketAddr::from((Ipv4Addr::LOCALHOST, backend_port)),
        )],
    );
    let table = RouteTable {
        listeners: [(port, ListenerRoute::http(vec![cluster]))].into(),
    };
    balancer.publish(table).await?;
    tokio::signal::ctrl_c().await?;
    balancer.shutdown().await;
    Ok(())
}
