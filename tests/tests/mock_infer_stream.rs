//! The mock inference server streams exactly `max_tokens` tokens at the configured rate, and `/control` changes
//! what `/health` and `/metrics` say, slows streams, and kills the server.

use std::net::SocketAddr;
use std::time::Duration;

use steer_lab::client::{ClientConfig, http_request, stream_completion};
use steer_lab::mock_infer::{self, Exit, MockConfig};
use tokio::task::JoinHandle;

const LIMIT: Duration = Duration::from_secs(5);

async fn start(tokens_per_s: f64, ttft_ms: u64) -> (SocketAddr, JoinHandle<std::io::Result<Exit>>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let cfg = MockConfig {
        tokens_per_s,
        ttft: Duration::from_millis(ttft_ms),
        region: "eu-west".into(),
        ..Default::default()
    };
    // The server stops when the test's runtime ends.
    let task = tokio::spawn(mock_infer::serve(listener, cfg, std::future::pending()));
    (addr, task)
}

fn client(max_tokens: u32) -> ClientConfig {
    let mut c = ClientConfig::new("api.infer.example.com", "127.0.0.1:53".parse().unwrap(), 0);
    c.max_tokens = max_tokens;
    c
}

async fn control(addr: SocketAddr, body: &str) -> String {
    let (status, text) = http_request(addr, "POST", "/control", Some(body), LIMIT)
        .await
        .unwrap();
    assert_eq!(status, 200, "control {body}: {text}");
    text
}

#[tokio::test]
async fn stream_delivers_max_tokens_at_the_configured_rate() {
    let (addr, _server) = start(100.0, 50).await;
    let at = stream_completion(&client(20), addr, "api.infer.example.com").await;
    assert!(at.error.is_none(), "{at:?}");
    assert!(at.completed, "no [DONE]: {at:?}");
    assert_eq!(at.tokens, 20);
    assert_eq!(at.region.as_deref(), Some("eu-west"));
    // 50 ms to the first token, then 19 more at 10 ms each.
    let ttft = at.ttft_ms.unwrap();
    assert!((45.0..=120.0).contains(&ttft), "ttft {ttft} ms, configured 50");
    let streaming = at.duration_ms - ttft;
    assert!(
        (170.0..=320.0).contains(&streaming),
        "19 tokens took {streaming} ms, configured 190"
    );
}

#[tokio::test]
async fn slow_factor_stretches_the_stream() {
    let (addr, _server) = start(200.0, 10).await;
    control(addr, r#"{"slow_factor": 4}"#).await;
    let at = stream_completion(&client(10), addr, "h").await;
    assert_eq!((at.tokens, at.completed), (10, true), "{at:?}");
    // 4 x (10 ms + 9 x 5 ms) = 220 ms.
    assert!(
        at.duration_ms >= 200.0,
        "slowed stream took only {} ms",
        at.duration_ms
    );
}

#[tokio::test]
async fn control_health_fail_makes_health_503() {
    let (addr, _server) = start(100.0, 10).await;
    assert_eq!(
        http_request(addr, "GET", "/health", None, LIMIT).await.unwrap().0,
        200
    );
    control(addr, r#"{"health": "fail"}"#).await;
    assert_eq!(
        http_request(addr, "GET", "/health", None, LIMIT).await.unwrap().0,
        503
    );
    control(addr, r#"{"health": "ok"}"#).await;
    assert_eq!(
        http_request(addr, "GET", "/health", None, LIMIT).await.unwrap().0,
        200
    );
    let (status, _) = http_request(addr, "POST", "/control", Some(r#"{"bogus": 1}"#), LIMIT)
        .await
        .unwrap();
    assert!(
        (400..500).contains(&status),
        "unknown control field accepted: {status}"
    );
}

/// The value of metric `name` as printed.
fn metric<'a>(text: &'a str, name: &str) -> &'a str {
    let line = text
        .lines()
        .find(|l| l.starts_with(&format!("{name}{{")))
        .unwrap_or_else(|| panic!("no {name} in\n{text}"));
    line.rsplit(' ').next().unwrap()
}

#[tokio::test]
async fn metrics_use_vllm_names_with_the_set_values() {
    let (addr, _server) = start(20.0, 10).await;
    control(addr, r#"{"queue_depth": 7, "kv_cache_usage": 0.42}"#).await;
    control(addr, r#"{"queue_depth": 0}"#).await;
    control(addr, r#"{"queue_depth": 7}"#).await;
    // One stream open while the metrics are read (20 tokens at 20/s: about 1 s, plus 8 x TTFT of queueing).
    let stream = tokio::spawn(async move { stream_completion(&client(20), addr, "h").await });
    tokio::time::sleep(Duration::from_millis(300)).await;
    let (status, text) = http_request(addr, "GET", "/metrics", None, LIMIT).await.unwrap();
    assert_eq!(status, 200);
    assert!(text.contains("# TYPE vllm:num_requests_running gauge"), "{text}");
    assert_eq!(metric(&text, "vllm:num_requests_running"), "1", "{text}");
    assert_eq!(metric(&text, "vllm:num_requests_waiting"), "7", "{text}");
    assert!(
        (metric(&text, "vllm:gpu_cache_usage_perc").parse::<f64>().unwrap() - 0.42).abs() < 1e-9,
        "{text}"
    );
    assert!(
        (metric(&text, "vllm:kv_cache_usage_perc").parse::<f64>().unwrap() - 0.42).abs() < 1e-9,
        "{text}"
    );
    let at = stream.await.unwrap();
    assert_eq!(at.tokens, 20, "{at:?}");
    // 7 queued ahead: first token after 8 x 10 ms.
    assert!(
        at.ttft_ms.unwrap() >= 75.0,
        "queue did not delay the first token: {at:?}"
    );
    let (_, text) = http_request(addr, "GET", "/metrics", None, LIMIT).await.unwrap();
    assert_eq!(metric(&text, "vllm:num_requests_running"), "0", "{text}");
    assert_eq!(metric(&text, "vllm:generation_tokens_total"), "20", "{text}");
}

#[tokio::test]
async fn die_cuts_open_streams_and_stops_accepting() {
    let (addr, server) = start(50.0, 10).await;
    let stream = tokio::spawn(async move { stream_completion(&client(200), addr, "h").await });
    tokio::time::sleep(Duration::from_millis(200)).await;
    let reply = control(addr, r#"{"die": true}"#).await;
    assert!(reply.contains(r#""dying":true"#), "{reply}");
    let at = stream.await.unwrap();
    assert!(
        !at.completed && at.error.is_some(),
        "stream survived the crash: {at:?}"
    );
    assert!(at.tokens > 0 && at.tokens < 200, "{at:?}");
    assert_eq!(server.await.unwrap().unwrap(), Exit::Died);
    assert!(
        http_request(addr, "GET", "/health", None, LIMIT).await.is_err(),
        "dead server still answers"
    );
}

#[test]
fn binary_reports_listening_and_exits_1_on_die() {
    let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_steer-mock-infer"));
    cmd.args([
        "--listen",
        "127.0.0.1:0",
        "--tokens-per-s",
        "100",
        "--ttft-ms",
        "5",
        "--region",
        "ap-south",
    ]);
    let mut child = steer_lab::netns::ChildGuard::spawn("steer-mock-infer", cmd).unwrap();
    let line = child
        .wait_for_line(|l| l.starts_with("listening "), LIMIT)
        .unwrap();
    let addr: SocketAddr = line["listening ".len()..].parse().unwrap();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let at = stream_completion(&client(3), addr, "h").await;
        assert_eq!(
            (at.tokens, at.completed, at.region.as_deref()),
            (3, true, Some("ap-south")),
            "{at:?}"
        );
        control(addr, r#"{"die": true}"#).await;
    });
    let status = child.wait_exit(LIMIT).expect("the mock still runs after die");
    assert_eq!(status.code(), Some(1), "a dying mock exits 1: {status}");
}
