//! A mock OpenAI-style inference server: streamed chat completions at a set token rate after a set time to first
//! token, `/health`, vLLM-named Prometheus `/metrics`, and a `/control` endpoint that tests use to make it fail
//! health, slow down, queue or die.
//!
//! Endpoints:
//! - `POST /v1/chat/completions` `{max_tokens?, stream?}`: with `stream: true`, SSE `data: {chunk}` events, one
//!   token per chunk, then a chunk with `finish_reason: "length"` and `data: [DONE]`; otherwise one JSON body at
//!   the end. The response header `x-steer-region` (and `system_fingerprint`) names the region.
//! - `GET /health`: 200 `ok`, or 503 `fail` after `/control {"health": "fail"}`.
//! - `GET /metrics`: `vllm:num_requests_running`, `vllm:num_requests_waiting`, `vllm:gpu_cache_usage_perc`,
//!   `vllm:kv_cache_usage_perc` (fractions 0..1, as vLLM reports them), `vllm:generation_tokens_total`.
//! - `POST /control` `{health?: "ok"|"fail", slow_factor?, queue_depth?, kv_cache_usage?, die?}`: returns the
//!   resulting state. `slow_factor` stretches TTFT and the time per token (also for streams already running);
//!   `queue_depth` is reported as waiting requests and delays each new request's first token by
//!   `queue_depth x ttft`; `die: true` makes the server crash: it stops accepting, and every open stream and
//!   connection is cut without its end (the binary exits the process).

use std::fmt::Write as _;
use std::future::Future;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde::{Deserialize, Serialize};
use serde_json::json;
use tokio::sync::watch;
use tokio::time::Instant;

/// Tokens in one completion when the request names none.
pub const MAX_TOKENS_DEFAULT: u32 = 16;
/// Most tokens one completion may ask for.
pub const MAX_TOKENS_MAX: u32 = 100_000;
/// KV-cache share one running request takes when no usage is set by `/control`.
const KV_PER_REQUEST: f64 = 0.05;
/// Largest slow factor accepted by `/control`.
const SLOW_FACTOR_MAX: f64 = 1_000.0;
/// How long after the `/control` reply a `die` takes effect, so the reply itself gets out.
const DIE_AFTER_MS: u64 = 20;

/// How the server behaves at start.
#[derive(Debug, Clone)]
pub struct MockConfig {
    /// Tokens per second of a stream.
    pub tokens_per_s: f64,
    /// Time to the first token.
    pub ttft: Duration,
    /// Region name reported in `x-steer-region`.
    pub region: String,
    /// Model name in responses and the `model_name` metric label.
    pub model: String,
}

impl Default for MockConfig {
    fn default() -> Self {
        MockConfig {
            tokens_per_s: 50.0,
            ttft: Duration::from_millis(50),
            region: "mock".into(),
            model: "mock".into(),
        }
    }
}

/// Health as set through `/control`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Health {
    /// `/health` answers 200.
    Ok,
    /// `/health` answers 503.
    Fail,
}

/// A `/control` request; absent fields stay as they are.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Control {
    /// Health to report.
    pub health: Option<Health>,
    /// Factor on TTFT and time per token (1 = configured speed).
    pub slow_factor: Option<f64>,
    /// Requests reported waiting; each new request waits `queue_depth x ttft` more before its first token.
    pub queue_depth: Option<u64>,
    /// KV-cache usage to report (0..1); without it, usage follows the running requests.
    pub kv_cache_usage: Option<f64>,
    /// Crash: stop accepting and cut every connection.
    pub die: Option<bool>,
}

/// The state `/control` returns.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct ControlState {
    /// Current health.
    pub health: Health,
    /// Current slow factor.
    pub slow_factor: f64,
    /// Current simulated queue.
    pub queue_depth: u64,
    /// KV-cache usage reported now.
    pub kv_cache_usage: f64,
    /// Requests streaming now.
    pub running: u64,
    /// Whether the server is dying.
    pub dying: bool,
}

/// Why [`serve`] returned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exit {
    /// The shutdown future completed.
    Shutdown,
    /// `/control {"die": true}`.
    Died,
}

#[derive(Debug)]
struct Shared {
    cfg: MockConfig,
    healthy: AtomicBool,
    slow_factor: Mutex<f64>,
    queue_depth: AtomicU64,
    kv_override: Mutex<Option<f64>>,
    running: AtomicU64,
    tokens_total: AtomicU64,
    requests: AtomicU64,
    died: watch::Sender<bool>,
}

impl Shared {
    fn slow(&self) -> f64 {
        *self.slow_factor.lock().expect("slow_factor lock")
    }

    fn kv_usage(&self) -> f64 {
        let running = self.running.load(Ordering::Relaxed) as f64;
        self.kv_override
            .lock()
            .expect("kv lock")
            .unwrap_or((running * KV_PER_REQUEST).min(1.0))
    }

    fn state(&self) -> ControlState {
        ControlState {
            health: if self.healthy.load(Ordering::Relaxed) {
                Health::Ok
            } else {
                Health::Fail
            },
            slow_factor: self.slow(),
            queue_depth: self.queue_depth.load(Ordering::Relaxed),
            kv_cache_usage: self.kv_usage(),
            running: self.running.load(Ordering::Relaxed),
            dying: *self.died.borrow(),
        }
    }
}

/// Counts a running request for as long as its response body lives (also when the client goes away).
#[derive(Debug)]
struct RunningGuard(Arc<Shared>);

impl RunningGuard {
    fn new(s: &Arc<Shared>) -> Self {
        s.running.fetch_add(1, Ordering::Relaxed);
        RunningGuard(Arc::clone(s))
    }
}

impl Drop for RunningGuard {
    fn drop(&mut self) {
        self.0.running.fetch_sub(1, Ordering::Relaxed);
    }
}

/// The part of a chat completion request the mock reads; other fields (messages, model, ...) are ignored.
#[derive(Debug, Deserialize)]
struct ChatRequest {
    #[serde(default)]
    stream: bool,
    max_tokens: Option<u32>,
    max_completion_tokens: Option<u32>,
}

/// Serves until `shutdown` completes or `/control` says die. The listener may come from any namespace.
pub async fn serve(
    listener: tokio::net::TcpListener,
    cfg: MockConfig,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<Exit> {
    let (died, mut died_rx) = watch::channel(false);
    let shared = Arc::new(Shared {
        cfg,
        healthy: AtomicBool::new(true),
        slow_factor: Mutex::new(1.0),
        queue_depth: AtomicU64::new(0),
        kv_override: Mutex::new(None),
        running: AtomicU64::new(0),
        tokens_total: AtomicU64::new(0),
        requests: AtomicU64::new(0),
        died,
    });
    let app = Router::new()
        .route("/v1/chat/completions", post(completions))
        .route("/health", get(health))
        .route("/metrics", get(metrics))
        .route("/control", post(control))
        .layer(middleware::from_fn_with_state(Arc::clone(&shared), cut_when_dead))
        .with_state(shared);
    tokio::select! {
        r = axum::serve(listener, app) => r.map(|()| Exit::Shutdown),
        () = shutdown => Ok(Exit::Shutdown),
        _ = died_rx.wait_for(|d| *d) => Ok(Exit::Died),
    }
}

/// After a die, a request on a kept-alive connection gets a body that fails at once, which cuts the connection.
async fn cut_when_dead(State(s): State<Arc<Shared>>, req: Request, next: Next) -> Response {
    if *s.died.borrow() {
        let stream =
            futures_util::stream::once(async { Err::<Bytes, _>(std::io::Error::other("server died")) });
        return Response::new(Body::from_stream(stream));
    }
    next.run(req).await
}

async fn health(State(s): State<Arc<Shared>>) -> Response {
    if s.healthy.load(Ordering::Relaxed) {
        (StatusCode::OK, "ok\n").into_response()
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "fail\n").into_response()
    }
}

async fn metrics(State(s): State<Arc<Shared>>) -> Response {
    let model = &s.cfg.model;
    let kv = s.kv_usage();
    let gauges: [(&str, &str, String); 4] = [
        (
            "vllm:num_requests_running",
            "Number of requests currently running on GPU.",
            s.running.load(Ordering::Relaxed).to_string(),
        ),
        (
            "vllm:num_requests_waiting",
            "Number of requests waiting to be processed.",
            s.queue_depth.load(Ordering::Relaxed).to_string(),
        ),
        (
            "vllm:gpu_cache_usage_perc",
            "GPU KV-cache usage. 1 means 100 percent usage.",
            kv.to_string(),
        ),
        (
            "vllm:kv_cache_usage_perc",
            "KV-cache usage. 1 means 100 percent usage.",
            kv.to_string(),
        ),
    ];
    let mut text = String::new();
    for (name, help, value) in gauges {
        let _ = write!(
            text,
            "# HELP {name} {help}\n# TYPE {name} gauge\n{name}{{model_name=\"{model}\"}} {value}\n"
        );
    }
    let tokens = s.tokens_total.load(Ordering::Relaxed);
    let _ = write!(
        text,
        "# HELP vllm:generation_tokens_total Number of generation tokens processed.\n\
         # TYPE vllm:generation_tokens_total counter\nvllm:generation_tokens_total{{model_name=\"{model}\"}} {tokens}\n"
    );
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], text).into_response()
}

async fn control(State(s): State<Arc<Shared>>, axum::Json(c): axum::Json<Control>) -> Response {
    if let Some(f) = c.slow_factor {
        if !(f > 0.0 && f <= SLOW_FACTOR_MAX) {
            return (
                StatusCode::BAD_REQUEST,
                format!("slow_factor {f} outside (0, {SLOW_FACTOR_MAX}]\n"),
            )
                .into_response();
        }
        *s.slow_factor.lock().expect("slow_factor lock") = f;
    }
    if let Some(kv) = c.kv_cache_usage {
        if !(0.0..=1.0).contains(&kv) {
            return (
                StatusCode::BAD_REQUEST,
                format!("kv_cache_usage {kv} outside 0..=1\n"),
            )
                .into_response();
        }
        *s.kv_override.lock().expect("kv lock") = Some(kv);
    }
    if let Some(h) = c.health {
        s.healthy.store(h == Health::Ok, Ordering::Relaxed);
    }
    if let Some(q) = c.queue_depth {
        s.queue_depth.store(q, Ordering::Relaxed);
    }
    if c.die == Some(true) {
        let s2 = Arc::clone(&s);
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(DIE_AFTER_MS)).await;
            s2.died.send_replace(true);
        });
    }
    let mut state = s.state();
    state.dying |= c.die == Some(true);
    axum::Json(state).into_response()
}

fn chunk(s: &Shared, id: u64, created: u64, delta: &serde_json::Value, finish: Option<&str>) -> Bytes {
    let v = json!({
        "id": format!("chatcmpl-mock-{id}"),
        "object": "chat.completion.chunk",
        "created": created,
        "model": s.cfg.model,
        "system_fingerprint": s.cfg.region,
        "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
    });
    Bytes::from(format!("data: {v}\n\n"))
}

/// Where one stream is: the next token to send and when.
struct StreamState {
    shared: Arc<Shared>,
    _running: RunningGuard,
    id: u64,
    created: u64,
    next: u32,
    total: u32,
    at: Instant,
    died: watch::Receiver<bool>,
    done: bool,
}

/// Waits until `at`, or returns false if the server dies first.
async fn wait_alive(at: Instant, died: &mut watch::Receiver<bool>) -> bool {
    let dead = tokio::select! {
        () = tokio::time::sleep_until(at) => false,
        _ = died.wait_for(|d| *d) => true,
    };
    !dead && !*died.borrow()
}

async fn completions(State(s): State<Arc<Shared>>, body: Bytes) -> Response {
    let req: ChatRequest = match serde_json::from_slice(&body) {
        Ok(r) => r,
        Err(e) => return (StatusCode::BAD_REQUEST, format!("bad request body: {e}\n")).into_response(),
    };
    let total = req
        .max_completion_tokens
        .or(req.max_tokens)
        .unwrap_or(MAX_TOKENS_DEFAULT)
        .min(MAX_TOKENS_MAX);
    let id = s.requests.fetch_add(1, Ordering::Relaxed);
    let created = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let queue = s.queue_depth.load(Ordering::Relaxed) as u32;
    let ttft = s.cfg.ttft.mul_f64(s.slow()) * (1 + queue);
    let region = HeaderValue::from_str(&s.cfg.region).unwrap_or(HeaderValue::from_static("invalid"));
    let st = StreamState {
        _running: RunningGuard::new(&s),
        id,
        created,
        next: 0,
        total,
        at: Instant::now() + ttft,
        died: s.died.subscribe(),
        done: false,
        shared: s,
    };
    if !req.stream {
        return whole(st, region).await;
    }
    let stream = futures_util::stream::unfold(st, |mut st| async move {
        if st.done {
            return None;
        }
        if !wait_alive(st.at, &mut st.died).await {
            // Ending the body with an error makes hyper cut the connection without the final chunk.
            st.done = true;
            return Some((Err(std::io::Error::other("server died")), st));
        }
        let s = &st.shared;
        let bytes = if st.next < st.total {
            let delta = if st.next == 0 {
                json!({"role": "assistant", "content": format!("t{} ", st.next)})
            } else {
                json!({"content": format!("t{} ", st.next)})
            };
            st.next += 1;
            s.tokens_total.fetch_add(1, Ordering::Relaxed);
            st.at += Duration::from_secs_f64(s.slow() / s.cfg.tokens_per_s);
            chunk(s, st.id, st.created, &delta, None)
        } else {
            st.done = true;
            let mut b = chunk(s, st.id, st.created, &json!({}), Some("length")).to_vec();
            b.extend_from_slice(b"data: [DONE]\n\n");
            Bytes::from(b)
        };
        Some((Ok(bytes), st))
    });
    let mut resp = Response::new(Body::from_stream(stream));
    let h = resp.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/event-stream"),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    h.insert("x-steer-region", region);
    resp
}

/// A non-streamed completion: the whole text after the whole generation time.
async fn whole(mut st: StreamState, region: HeaderValue) -> Response {
    let s = Arc::clone(&st.shared);
    let mut text = String::new();
    while st.next < st.total {
        if !wait_alive(st.at, &mut st.died).await {
            let stream =
                futures_util::stream::once(async { Err::<Bytes, _>(std::io::Error::other("server died")) });
            return Response::new(Body::from_stream(stream));
        }
        let _ = write!(text, "t{} ", st.next);
        st.next += 1;
        s.tokens_total.fetch_add(1, Ordering::Relaxed);
        st.at += Duration::from_secs_f64(s.slow() / s.cfg.tokens_per_s);
    }
    let body = json!({
        "id": format!("chatcmpl-mock-{}", st.id),
        "object": "chat.completion",
        "created": st.created,
        "model": s.cfg.model,
        "system_fingerprint": s.cfg.region,
        "choices": [{"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "length"}],
        "usage": {"prompt_tokens": 0, "completion_tokens": st.total, "total_tokens": st.total},
    });
    let mut resp = axum::Json(body).into_response();
    resp.headers_mut().insert("x-steer-region", region);
    resp
}
