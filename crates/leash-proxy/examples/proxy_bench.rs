//! The load generator and local upstream of `scripts/bench-proxy` (see there).
//!
//! ```text
//! proxy_bench --upstream 127.0.0.1:P --proxy http://127.0.0.1:Q/bench [--seconds 5] [--connections 16] [--delay-ms 0]
//! ```
//!
//! `--delay-ms`: the upstream waits this long before answering (a real API's time);
//! 0, the default, makes the run CPU-bound, the hardest case for the proxy.
//!
//! Serves a small JSON answer on `--upstream` (hyper, in this process), waits for the
//! proxy's `/healthz`, then in the same run measures, direct and through the proxy,
//! alternating: latency with one connection (p50, p99) and the request rate with
//! `--connections` keep-alive connections. Prints the figures and exits 1 if the proxy
//! adds more than 1 ms at p50 or keeps less than 0.7 of the direct rate.

use std::convert::Infallible;
use std::error::Error;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt as _, Empty, Full};
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use tokio::net::{TcpListener, TcpStream};

type R<T> = Result<T, Box<dyn Error + Send + Sync>>;

const BODY: &[u8] =
    br#"{"ok":true,"items":[1,2,3],"message":"a small JSON answer like most API calls get"}"#;

async fn upstream(l: TcpListener, delay: Duration) {
    loop {
        let Ok((s, _)) = l.accept().await else {
            continue;
        };
        let _ = s.set_nodelay(true);
        tokio::spawn(async move {
            let svc = hyper::service::service_fn(
                move |_req: Request<hyper::body::Incoming>| async move {
                    if !delay.is_zero() {
                        tokio::time::sleep(delay).await;
                    }
                    Ok::<_, Infallible>(Response::new(Full::new(Bytes::from_static(BODY))))
                },
            );
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(s), svc)
                .await;
        });
    }
}

/// One keep-alive connection sending GETs until `until`; the latencies in µs.
async fn drive(addr: SocketAddr, path: String, until: Instant) -> R<Vec<u32>> {
    let s = TcpStream::connect(addr).await?;
    s.set_nodelay(true)?;
    let (mut send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(s)).await?;
    tokio::spawn(conn);
    let mut lat = Vec::new();
    while Instant::now() < until {
        let req = Request::get(path.as_str())
            .header("host", addr.to_string())
            .body(Empty::<Bytes>::new())?;
        let t = Instant::now();
        let resp = send.send_request(req).await?;
        if !resp.status().is_success() {
            return Err(format!("status {}", resp.status()).into());
        }
        resp.into_body().collect().await?;
        lat.push(u32::try_from(t.elapsed().as_micros()).unwrap_or(u32::MAX));
    }
    Ok(lat)
}

struct Run {
    rate: f64,
    p50_us: u32,
    p99_us: u32,
}

async fn run(addr: SocketAddr, path: &str, conns: usize, secs: f64) -> R<Run> {
    let until = Instant::now() + Duration::from_secs_f64(secs);
    let start = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..conns {
        tasks.push(tokio::spawn(drive(addr, path.to_owned(), until)));
    }
    let mut all = Vec::new();
    for t in tasks {
        all.extend(t.await??);
    }
    let elapsed = start.elapsed().as_secs_f64();
    all.sort_unstable();
    let pct = |p: f64| {
        all.get(((all.len() as f64) * p) as usize)
            .copied()
            .unwrap_or(0)
    };
    Ok(Run {
        rate: all.len() as f64 / elapsed,
        p50_us: pct(0.5),
        p99_us: pct(0.99),
    })
}

fn arg(args: &[String], name: &str) -> Option<String> {
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1).cloned())
}

#[tokio::main(flavor = "multi_thread", worker_threads = 1)]
async fn main() -> R<()> {
    let args: Vec<String> = std::env::args().collect();
    let up: SocketAddr = arg(&args, "--upstream").ok_or("--upstream ADDR")?.parse()?;
    let proxy: hyper::Uri = arg(&args, "--proxy").ok_or("--proxy URL")?.parse()?;
    let secs: f64 = arg(&args, "--seconds").map_or(Ok(5.0), |s| s.parse())?;
    let conns: usize = arg(&args, "--connections").map_or(Ok(16), |s| s.parse())?;
    let delay: u64 = arg(&args, "--delay-ms").map_or(Ok(0), |s| s.parse())?;
    let paddr: SocketAddr = proxy
        .authority()
        .ok_or("--proxy has no host")?
        .as_str()
        .parse()?;
    let ppath = proxy.path().trim_end_matches('/').to_owned();
    tokio::spawn(upstream(
        TcpListener::bind(up).await?,
        Duration::from_millis(delay),
    ));
    // Wait for the proxy to hold its credential.
    let ready = Instant::now() + Duration::from_secs(30);
    loop {
        let ok = drive(paddr, "/healthz".into(), Instant::now())
            .await
            .is_ok()
            && run(paddr, &format!("{ppath}/warm"), 1, 0.2).await.is_ok();
        if ok {
            break;
        }
        if Instant::now() > ready {
            return Err("the proxy did not become ready".into());
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // Warm both paths, then alternate direct / proxied so drift hits both alike.
    run(up, "/warm", conns, 1.0).await?;
    run(paddr, &format!("{ppath}/warm"), conns, 1.0).await?;
    let (mut d1, mut p1, mut dn, mut pn) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for _ in 0..3 {
        d1.push(run(up, "/item", 1, secs / 3.0).await?);
        p1.push(run(paddr, &format!("{ppath}/item"), 1, secs / 3.0).await?);
        dn.push(run(up, "/item", conns, secs / 3.0).await?);
        pn.push(run(paddr, &format!("{ppath}/item"), conns, secs / 3.0).await?);
    }
    let med = |v: &[Run], f: fn(&Run) -> f64| {
        let mut x: Vec<f64> = v.iter().map(f).collect();
        x.sort_by(f64::total_cmp);
        x[x.len() / 2]
    };
    let (dp50, pp50) = (
        med(&d1, |r| f64::from(r.p50_us)),
        med(&p1, |r| f64::from(r.p50_us)),
    );
    let (dp99, pp99) = (
        med(&d1, |r| f64::from(r.p99_us)),
        med(&p1, |r| f64::from(r.p99_us)),
    );
    let (drate, prate) = (med(&dn, |r| r.rate), med(&pn, |r| r.rate));
    let added = (pp50 - dp50) / 1000.0;
    let ratio = prate / drate;
    println!(
        "one connection:  direct p50 {:.3} ms p99 {:.3} ms | proxied p50 {:.3} ms p99 {:.3} ms | added p50 {added:.3} ms",
        dp50 / 1000.0,
        dp99 / 1000.0,
        pp50 / 1000.0,
        pp99 / 1000.0
    );
    println!(
        "{conns} connections: direct {drate:.0} req/s | proxied {prate:.0} req/s | ratio {ratio:.2}"
    );
    let ok = added <= 1.0 && ratio >= 0.7;
    println!(
        "{}: added p50 <= 1 ms and ratio >= 0.7",
        if ok { "PASS" } else { "FAIL" }
    );
    if !ok {
        std::process::exit(1);
    }
    Ok(())
}
