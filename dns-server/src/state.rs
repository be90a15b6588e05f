//! The server's state: the snapshot that queries read (swapped, never locked) and the control state
//! behind it (policy, telemetry, health) that ingest, drains, reloads and the tick change.

use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering::Relaxed;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::Context as _;
use arc_swap::ArcSwap;
use serde::{Deserialize, Serialize};
use steering_core::region_health::HealthState;
use steering_core::telemetry::{Limits, Telemetry};
use steering_core::{Policy, Snapshot, UnixMs};
use tokio::sync::Notify;

use crate::geo::Geo;
use crate::metrics::{AnswerCounters, Metrics};
use crate::tokens::Tokens;
use crate::zone::Zone;

/// How often the snapshot is rebuilt (and health evaluated) without any event.
pub const TICK: Duration = Duration::from_millis(250);
/// How often the policy file's mtime is checked.
pub const POLICY_POLL: Duration = Duration::from_secs(1);
/// How often telemetry and health are saved to the state file.
pub const STATE_SAVE_EVERY: Duration = Duration::from_secs(3);
/// A state file larger than this is not loaded.
pub const STATE_BYTES_MAX: u64 = 512 << 20;

#[must_use]
pub fn now_ms() -> UnixMs {
    UnixMs(
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64),
    )
}

/// What `--state FILE` holds.
#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StateFile {
    pub version: u32,
    pub saved_at: UnixMs,
    pub telemetry: Telemetry,
    pub health: HealthState,
}

/// Changed by ingest, drains, reloads and the tick; never touched by queries.
#[derive(Debug)]
pub struct Control {
    pub policy: Arc<Policy>,
    pub policy_path: PathBuf,
    pub policy_mtime: Option<SystemTime>,
    pub telemetry: Telemetry,
    pub health: HealthState,
    /// When the state file was last written by this process, or loaded at start.
    pub state_saved_at: Option<UnixMs>,
    pub state_loaded: bool,
}

/// Shared by every task.
pub struct Shared {
    pub snapshot: ArcSwap<Snapshot>,
    pub answers: ArcSwap<AnswerCounters>,
    pub zone: Zone,
    pub geo: Option<Geo>,
    pub metrics: Metrics,
    pub tokens: Tokens,
    pub control: Mutex<Control>,
    /// Wakes the tick task for an immediate rebuild.
    pub rebuild: Notify,
    pub state_path: Option<PathBuf>,
    pub seed: u64,
}

impl std::fmt::Debug for Shared {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Shared")
            .field("zone", &self.zone)
            .finish_non_exhaustive()
    }
}

/// Reads and compiles a policy file; the error text carries the located errors.
pub fn read_policy(path: &Path) -> anyhow::Result<Policy> {
    let meta = std::fs::metadata(path).with_context(|| format!("{}: cannot read", path.display()))?;
    if meta.len() > steering_core::policy::POLICY_BYTES_MAX as u64 {
        anyhow::bail!(
            "{}: larger than {} bytes",
            path.display(),
            steering_core::policy::POLICY_BYTES_MAX
        );
    }
    let text = std::fs::read_to_string(path).with_context(|| format!("{}: cannot read", path.display()))?;
    Policy::from_yaml(&path.display().to_string(), &text).map_err(|e| anyhow::anyhow!("{e}"))
}

/// The RTT table of the snapshot is rebuilt at most this often (reports arrive every interval from every
/// host; each would otherwise rebuild a table of up to a million rows).
pub const RTT_REFRESH: std::time::Duration = std::time::Duration::from_secs(1);

/// Loads the state file, if there is one.
pub fn read_state(path: &Path) -> anyhow::Result<Option<StateFile>> {
    let meta = match std::fs::metadata(path) {
        Ok(m) => m,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e).with_context(|| format!("{}: cannot read", path.display())),
    };
    if meta.len() > STATE_BYTES_MAX {
        anyhow::bail!("{}: larger than {STATE_BYTES_MAX} bytes", path.display());
    }
    let bytes = std::fs::read(path).with_context(|| format!("{}: cannot read", path.display()))?;
    let s: StateFile =
        serde_json::from_slice(&bytes).with_context(|| format!("{}: not a state file", path.display()))?;
    Ok(Some(s))
}

impl Shared {
    #[must_use]
    pub fn new(
        policy: Policy,
        policy_path: PathBuf,
        zone: Zone,
        geo: Option<Geo>,
        tokens: Tokens,
        state_path: Option<PathBuf>,
        state: Option<StateFile>,
    ) -> Shared {
        let now = now_ms();
        let policy = Arc::new(policy);
        let (telemetry, health, loaded_at) = match state {
            Some(s) => (s.telemetry, s.health, Some(s.saved_at)),
            None => (Telemetry::new(Limits::default()), HealthState::default(), None),
        };
        let seed = now.0 ^ u64::from(std::process::id()).rotate_left(32);
        let snap = Snapshot::build(policy.clone(), &telemetry, &health, now, seed, None);
        let answers = AnswerCounters::new(&policy);
        let policy_mtime = std::fs::metadata(&policy_path).and_then(|m| m.modified()).ok();
        Shared {
            snapshot: ArcSwap::from_pointee(snap),
            answers: ArcSwap::from_pointee(answers),
            zone,
            geo,
            metrics: Metrics::default(),
            tokens,
            control: Mutex::new(Control {
                policy,
                policy_path,
                policy_mtime,
                telemetry,
                health,
                state_saved_at: loaded_at,
                state_loaded: loaded_at.is_some(),
            }),
            rebuild: Notify::new(),
            state_path,
            seed,
        }
    }

    pub fn control(&self) -> MutexGuard<'_, Control> {
        self.control.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Rebuilds the snapshot from the control state and swaps it in. `evaluate` runs one health
    /// evaluation first (the periodic tick does; events only rebuild).
    pub fn rebuild_now(&self, evaluate: bool) {
        let started = tokio::time::Instant::now();
        let now = now_ms();
        let mut c = self.control();
        if evaluate {
            c.telemetry.expire(now);
            let Control {
                policy,
                telemetry,
                health,
                ..
            } = &mut *c;
            health.evaluate(policy, telemetry, now);
        }
        let prev = self.snapshot.load_full();
        // Health, drains and ramps are current in every snapshot; the RTT table (the costly part) is
        // rebuilt only when an estimate changed, and at most every RTT_REFRESH.
        let snap = Snapshot::build_with(
            c.policy.clone(),
            &c.telemetry,
            &c.health,
            now,
            self.seed,
            Some(&prev),
            RTT_REFRESH,
        );
        drop(c);
        self.snapshot.store(Arc::new(snap));
        self.metrics.snapshot_builds.fetch_add(1, Relaxed);
        self.metrics
            .snapshot_build_us_last
            .store(started.elapsed().as_micros() as u64, Relaxed);
    }

    /// Re-reads the policy file. A bad file is logged with its located errors and counted; the old
    /// policy keeps serving.
    pub fn reload(&self, why: &str) -> bool {
        let path = self.control().policy_path.clone();
        let mtime = std::fs::metadata(&path).and_then(|m| m.modified()).ok();
        let result = read_policy(&path).and_then(|p| {
            if p.zone.trim_end_matches('.') != self.zone.apex {
                anyhow::bail!(
                    "{}: zone {} is not the served zone {}.",
                    path.display(),
                    p.zone,
                    self.zone.apex
                );
            }
            Ok(p)
        });
        let mut c = self.control();
        c.policy_mtime = mtime;
        match result {
            Ok(p) => {
                let p = Arc::new(p);
                self.answers.store(Arc::new(AnswerCounters::new(&p)));
                c.policy = p;
                drop(c);
                self.metrics.reload_ok.fetch_add(1, Relaxed);
                tracing::info!(why, path = %path.display(), "policy reloaded");
                // Only rebuild: an extra health evaluation would shift the fall/rise counts.
                self.rebuild_now(false);
                true
            }
            Err(e) => {
                drop(c);
                self.metrics.reload_failed.fetch_add(1, Relaxed);
                tracing::error!(why, path = %path.display(), error = %e, "policy rejected; the old policy keeps serving");
                false
            }
        }
    }

    /// Whether the policy file changed since it was last read.
    pub fn policy_changed(&self) -> bool {
        let c = self.control();
        let mtime = std::fs::metadata(&c.policy_path).and_then(|m| m.modified()).ok();
        mtime.is_some() && mtime != c.policy_mtime
    }

    /// Writes the state file atomically (temporary file + rename).
    pub fn save_state(&self) -> anyhow::Result<()> {
        let Some(path) = &self.state_path else {
            return Ok(());
        };
        let now = now_ms();
        let bytes = {
            let c = self.control();
            let s = StateFileRef {
                version: 1,
                saved_at: now,
                telemetry: &c.telemetry,
                health: &c.health,
            };
            serde_json::to_vec(&s)?
        };
        let tmp = path.with_extension(format!("tmp.{}", std::process::id()));
        std::fs::write(&tmp, &bytes).with_context(|| format!("{}: cannot write", tmp.display()))?;
        std::fs::rename(&tmp, path)
            .with_context(|| format!("{}: cannot rename into place", path.display()))?;
        self.control().state_saved_at = Some(now);
        Ok(())
    }
}

#[derive(Serialize)]
struct StateFileRef<'a> {
    version: u32,
    saved_at: UnixMs,
    telemetry: &'a Telemetry,
    health: &'a HealthState,
}

/// The tick: rebuild every [`TICK`] and on demand, watch the policy file, save the state.
pub async fn background(shared: Arc<Shared>, shutdown: tokio_util_shutdown::Shutdown) {
    let mut tick = tokio::time::interval(TICK);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut poll = tokio::time::interval(POLICY_POLL);
    let mut save = tokio::time::interval(STATE_SAVE_EVERY);
    #[cfg(unix)]
    let mut hup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()).ok();
    loop {
        #[cfg(unix)]
        let hup_fut = async {
            match hup.as_mut() {
                Some(h) => h.recv().await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            () = shutdown.wait() => break,
            _ = tick.tick() => {
                let s = shared.clone();
                let _ = tokio::task::spawn_blocking(move || s.rebuild_now(true)).await;
            }
            () = shared.rebuild.notified() => {
                let s = shared.clone();
                let _ = tokio::task::spawn_blocking(move || s.rebuild_now(false)).await;
            }
            _ = poll.tick() => {
                if shared.policy_changed() {
                    let s = shared.clone();
                    let _ = tokio::task::spawn_blocking(move || s.reload("file changed")).await;
                }
            }
            _ = hup_fut => {
                let s = shared.clone();
                let _ = tokio::task::spawn_blocking(move || s.reload("SIGHUP")).await;
            }
            _ = save.tick() => save_logged(&shared).await,
        }
    }
    save_logged(&shared).await;
}

async fn save_logged(shared: &Arc<Shared>) {
    if shared.state_path.is_none() {
        return;
    }
    let s = shared.clone();
    let r = tokio::task::spawn_blocking(move || s.save_state()).await;
    match r {
        Ok(Ok(())) => {
            shared.metrics.state_saves.fetch_add(1, Relaxed);
        }
        Ok(Err(e)) => {
            shared.metrics.state_save_failures.fetch_add(1, Relaxed);
            tracing::warn!(error = %e, "state not saved");
        }
        Err(e) => tracing::warn!(error = %e, "state save task failed"),
    }
}

/// A shutdown signal that many tasks can wait on.
pub mod tokio_util_shutdown {
    use tokio::sync::watch;

    #[derive(Debug, Clone)]
    pub struct Shutdown(watch::Receiver<bool>);

    #[derive(Debug)]
    pub struct Trigger(watch::Sender<bool>);

    #[must_use]
    pub fn channel() -> (Trigger, Shutdown) {
        let (tx, rx) = watch::channel(false);
        (Trigger(tx), Shutdown(rx))
    }

    impl Trigger {
        pub fn fire(&self) {
            let _ = self.0.send(true);
        }
    }

    impl Shutdown {
        pub async fn wait(&self) {
            let mut rx = self.0.clone();
            let _ = rx.wait_for(|v| *v).await;
        }
    }
}
