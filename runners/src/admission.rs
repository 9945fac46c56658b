//! Resource admission (README, "Admission"): one scheduler per process, shared by every run,
//! that admits a step only when its CPU and memory request fits.
//!
//! - CPU capacity = the cores available to this process
//!   (`std::thread::available_parallelism`, which honours cgroup quotas and affinity); no
//!   oversubscription. A step asks for 1 CPU by default; `cpu: 0` (I/O-bound) takes no slot.
//! - Memory = sysinfo's available memory (the cgroup's, if lower) minus a reserve (default
//!   256 MiB), refreshed at most every 100 ms, minus what admitted steps reserved (counted
//!   conservatively: a running step's reservation is subtracted even after its memory shows
//!   up as used). A step asking for no memory skips the memory check.
//! - A request larger than the capacity fails at once with `ResourceUnavailable` (equal is
//!   admitted); so does a memory request that does not fit while no step of ours holds
//!   memory (nothing we release would ever make room).
//! - Waiters are served first come, first served: a request never overtakes an earlier one
//!   that is still waiting (so a big request is not starved), except requests for nothing
//!   (`cpu: 0`, no memory), which are always admitted at once.
//! - Admission never waits on a CPU-usage sample.
//!
//! The engine still applies `max_parallel` on top of this.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use tokio::sync::oneshot;

use crate::errors::RunnerError;

/// Default memory kept free for the system and the agent.
pub(crate) const DEFAULT_MEMORY_RESERVE_MB: u64 = 256;
/// How often the available-memory figure is re-read at most.
pub(crate) const MEMORY_REFRESH: Duration = Duration::from_millis(100);

/// What one step asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Request {
    /// CPU slots (cores); 0 for an I/O-bound step.
    pub cpu: u32,
    /// Memory in MiB; 0 skips the memory check.
    pub memory_mb: u64,
}

impl Default for Request {
    /// One CPU, no memory.
    fn default() -> Request {
        Request {
            cpu: 1,
            memory_mb: 0,
        }
    }
}

impl Request {
    /// A request for `cpu` slots and `memory_mb` MiB.
    pub fn new(cpu: u32, memory_mb: u64) -> Request {
        Request { cpu, memory_mb }
    }

    fn is_free(&self) -> bool {
        self.cpu == 0 && self.memory_mb == 0
    }
}

/// Capacity settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AdmissionConfig {
    /// CPU slots; `None` = the cores available to the process.
    pub cpu: Option<u32>,
    /// Memory kept free, in MiB.
    pub memory_reserve_mb: u64,
    /// A fixed memory capacity in MiB instead of sysinfo's live figure (tests, or an
    /// operator's limit); the reserve is not subtracted from it.
    pub memory_mb: Option<u64>,
}

impl Default for AdmissionConfig {
    fn default() -> AdmissionConfig {
        AdmissionConfig {
            cpu: None,
            memory_reserve_mb: DEFAULT_MEMORY_RESERVE_MB,
            memory_mb: None,
        }
    }
}

/// The shared admission scheduler. Cheap to clone (an `Arc`); clones share capacity.
#[derive(Debug, Clone)]
pub struct Admission {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    cpu_capacity: u32,
    config: AdmissionConfig,
    state: Mutex<State>,
    memory: Mutex<MemoryProbe>,
}

#[derive(Debug, Default)]
struct State {
    cpu_used: u32,
    memory_used: u64,
    queue: VecDeque<Waiter>,
    next_id: u64,
}

#[derive(Debug)]
struct Waiter {
    id: u64,
    request: Request,
    tx: oneshot::Sender<()>,
}

struct MemoryProbe {
    system: Option<sysinfo::System>,
    read_at: Option<Instant>,
    /// Available MiB at the last read (cgroup-aware).
    available_mb: u64,
    /// Total MiB (cgroup-aware).
    total_mb: u64,
}

impl std::fmt::Debug for MemoryProbe {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MemoryProbe")
            .field("available_mb", &self.available_mb)
            .field("total_mb", &self.total_mb)
            .finish()
    }
}

impl MemoryProbe {
    fn refresh(&mut self, force: bool) {
        if !force && self.read_at.is_some_and(|t| t.elapsed() < MEMORY_REFRESH) {
            return;
        }
        if self.system.is_none() {
            self.system = sysinfo::System::new().ok();
        }
        let Some(sys) = self.system.as_mut() else {
            return;
        };
        sys.refresh_memory();
        let mut available = sys.available_memory();
        let mut total = sys.total_memory();
        if let Some(limits) = sys.cgroup_limits() {
            available = available.min(limits.free_memory);
            total = total.min(limits.total_memory);
        }
        self.available_mb = available / (1024 * 1024);
        self.total_mb = total / (1024 * 1024);
        self.read_at = Some(Instant::now());
    }
}

/// A granted request; the resources are released when it is dropped.
#[derive(Debug)]
pub struct Permit {
    inner: Option<Arc<Inner>>,
    request: Request,
}

impl Permit {
    /// What this permit holds.
    pub fn request(&self) -> Request {
        self.request
    }
}

impl Drop for Permit {
    fn drop(&mut self) {
        if let Some(inner) = self.inner.take() {
            let mut state = inner.lock_state();
            state.cpu_used -= self.request.cpu;
            state.memory_used -= self.request.memory_mb;
            inner.dispatch(&mut state);
        }
    }
}

impl Inner {
    fn lock_state(&self) -> MutexGuard<'_, State> {
        // Poisoning means a panic while holding the lock; the counters are still consistent
        // because every update is a single statement.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// (free MiB for admission before our reservations, capacity MiB).
    fn memory(&self, force: bool) -> (u64, u64) {
        if let Some(fixed) = self.config.memory_mb {
            return (fixed, fixed);
        }
        let mut probe = self.memory.lock().unwrap_or_else(|e| e.into_inner());
        probe.refresh(force);
        let reserve = self.config.memory_reserve_mb;
        (
            probe.available_mb.saturating_sub(reserve),
            probe.total_mb.saturating_sub(reserve),
        )
    }

    fn fits(&self, state: &State, request: Request) -> bool {
        if request.cpu > self.cpu_capacity - state.cpu_used {
            return false;
        }
        if request.memory_mb == 0 {
            return true;
        }
        let (free, _) = self.memory(false);
        request.memory_mb <= free.saturating_sub(state.memory_used)
    }

    fn grant(state: &mut State, request: Request) {
        state.cpu_used += request.cpu;
        state.memory_used += request.memory_mb;
    }

    /// Admits waiters from the front of the queue while they fit.
    fn dispatch(&self, state: &mut State) {
        while let Some(front) = state.queue.front() {
            if !self.fits(state, front.request) {
                break;
            }
            let Some(waiter) = state.queue.pop_front() else {
                break;
            };
            Inner::grant(state, waiter.request);
            if waiter.tx.send(()).is_err() {
                // The waiter gave up between our check and now: undo.
                state.cpu_used -= waiter.request.cpu;
                state.memory_used -= waiter.request.memory_mb;
            }
        }
    }

    fn check_capacity(&self, request: Request) -> Result<(), RunnerError> {
        if request.cpu > self.cpu_capacity {
            return Err(RunnerError::ResourceUnavailable(format!(
                "asks for {} CPUs, this machine has {}",
                request.cpu, self.cpu_capacity
            )));
        }
        if request.memory_mb > 0 {
            let (_, capacity) = self.memory(false);
            if request.memory_mb > capacity {
                return Err(RunnerError::ResourceUnavailable(format!(
                    "asks for {} MiB of memory, at most {} MiB can be given (after a {} MiB reserve)",
                    request.memory_mb, capacity, self.config.memory_reserve_mb
                )));
            }
        }
        Ok(())
    }

    /// A memory request that does not fit while none of ours holds memory never will.
    fn memory_hopeless(&self, state: &State, request: Request) -> Option<RunnerError> {
        if request.memory_mb == 0 || state.memory_used > 0 {
            return None;
        }
        let (free, _) = self.memory(true);
        (request.memory_mb > free).then(|| {
            RunnerError::ResourceUnavailable(format!(
                "asks for {} MiB of memory, {} MiB are available (after a {} MiB reserve)",
                request.memory_mb, free, self.config.memory_reserve_mb
            ))
        })
    }
}

/// Removes a waiter from the queue (or gives back its grant) if `acquire` is dropped.
struct QueueGuard<'a> {
    inner: &'a Arc<Inner>,
    id: u64,
    request: Request,
    rx: Option<oneshot::Receiver<()>>,
}

impl Drop for QueueGuard<'_> {
    fn drop(&mut self) {
        let Some(mut rx) = self.rx.take() else {
            return;
        };
        let mut state = self.inner.lock_state();
        if let Some(pos) = state.queue.iter().position(|w| w.id == self.id) {
            state.queue.remove(pos);
        } else if rx.try_recv().is_ok() {
            state.cpu_used -= self.request.cpu;
            state.memory_used -= self.request.memory_mb;
        }
        self.inner.dispatch(&mut state);
    }
}

impl Admission {
    /// A scheduler with the given capacity settings.
    pub fn new(config: AdmissionConfig) -> Admission {
        let cpu_capacity = config.cpu.unwrap_or_else(|| {
            std::thread::available_parallelism()
                .map(|n| u32::try_from(n.get()).unwrap_or(u32::MAX))
                .unwrap_or(1)
        });
        Admission {
            inner: Arc::new(Inner {
                cpu_capacity,
                config,
                state: Mutex::new(State::default()),
                memory: Mutex::new(MemoryProbe {
                    system: None,
                    read_at: None,
                    available_mb: 0,
                    total_mb: 0,
                }),
            }),
        }
    }

    /// CPU slots in total.
    pub fn cpu_capacity(&self) -> u32 {
        self.inner.cpu_capacity
    }

    /// Memory MiB that can be given at most (total minus reserve, or the fixed capacity).
    pub fn memory_capacity_mb(&self) -> u64 {
        self.inner.memory(false).1
    }

    /// `(cpu slots, memory MiB)` held by permits now.
    pub fn in_use(&self) -> (u32, u64) {
        let state = self.inner.lock_state();
        (state.cpu_used, state.memory_used)
    }

    /// Number of requests waiting.
    pub fn waiting(&self) -> usize {
        self.inner.lock_state().queue.len()
    }

    /// Admits at once if the request fits and nobody is waiting; `Ok(None)` if it would
    /// have to wait; `Err(ResourceUnavailable)` if it can never fit.
    pub fn try_acquire(&self, request: Request) -> Result<Option<Permit>, RunnerError> {
        if request.is_free() {
            return Ok(Some(self.permit(request)));
        }
        self.inner.check_capacity(request)?;
        let mut state = self.inner.lock_state();
        if state.queue.is_empty() && self.inner.fits(&state, request) {
            Inner::grant(&mut state, request);
            return Ok(Some(self.permit(request)));
        }
        Ok(None)
    }

    /// Waits (first come, first served) until `request` fits and returns its permit.
    /// Fails at once with `ResourceUnavailable` when it can never fit. Cancel-safe: dropping
    /// the future leaves the queue.
    pub async fn acquire(&self, request: Request) -> Result<Permit, RunnerError> {
        if request.is_free() {
            return Ok(self.permit(request));
        }
        self.inner.check_capacity(request)?;
        let (tx, rx) = oneshot::channel();
        let id = {
            let mut state = self.inner.lock_state();
            if state.queue.is_empty() && self.inner.fits(&state, request) {
                Inner::grant(&mut state, request);
                return Ok(self.permit(request));
            }
            if state.cpu_used + request.cpu <= self.inner.cpu_capacity
                && let Some(err) = self.inner.memory_hopeless(&state, request)
            {
                return Err(err);
            }
            let id = state.next_id;
            state.next_id += 1;
            state.queue.push_back(Waiter { id, request, tx });
            id
        };
        let mut guard = QueueGuard {
            inner: &self.inner,
            id,
            request,
            rx: Some(rx),
        };
        loop {
            let Some(rx) = guard.rx.as_mut() else {
                return Err(RunnerError::ResourceUnavailable(
                    "the admission request lost its place".to_string(),
                ));
            };
            if request.memory_mb == 0 {
                // Only a release can make room: wait for the grant.
                if rx.await.is_ok() {
                    guard.rx = None;
                    return Ok(self.permit(request));
                }
                return Err(RunnerError::ResourceUnavailable(
                    "the admission scheduler was dropped".to_string(),
                ));
            }
            // Memory can also free up outside the agent: re-check now and then.
            tokio::select! {
                r = rx => {
                    guard.rx = None;
                    if r.is_ok() {
                        return Ok(self.permit(request));
                    }
                    return Err(RunnerError::ResourceUnavailable(
                        "the admission scheduler was dropped".to_string(),
                    ));
                }
                _ = tokio::time::sleep(MEMORY_REFRESH) => {
                    let mut state = self.inner.lock_state();
                    self.inner.dispatch(&mut state);
                    let first = state.queue.front().is_some_and(|w| w.id == id);
                    if first
                        && state.cpu_used + request.cpu <= self.inner.cpu_capacity
                        && let Some(err) = self.inner.memory_hopeless(&state, request)
                    {
                        drop(state);
                        return Err(err);
                    }
                }
            }
        }
    }

    fn permit(&self, request: Request) -> Permit {
        Permit {
            inner: (!request.is_free()).then(|| Arc::clone(&self.inner)),
            request,
        }
    }
}

impl Default for Admission {
    fn default() -> Admission {
        Admission::new(AdmissionConfig::default())
    }
}
