//! The UDP socket shim: a socket given to quinn that delays, jitters, drops,
//! duplicates, reorders, rate-limits or black-holes outgoing datagrams per peer, so
//! QUIC's own loss recovery and congestion control meet the faults as they would on
//! a real network.
//!
//! ```no_run
//! # async fn demo() -> std::io::Result<()> {
//! use std::time::Duration;
//! use qnet_common::shim::{self, LinkRule};
//!
//! let (endpoint, handle) = shim::endpoint(None, "127.0.0.1:0".parse().unwrap(), 7)?;
//! let peer = "127.0.0.1:4433".parse().unwrap();
//! let slow = LinkRule { delay: Duration::from_millis(20), loss: 0.01, ..LinkRule::default() };
//! handle.set_rule(Some(peer), slow).unwrap();
//! handle.set_rule(None, LinkRule::partition()).unwrap(); // everyone else: cut off
//! handle.clear_all(); // repair
//! # drop(endpoint); Ok(()) }
//! ```
//!
//! Only datagrams the shim *sends* are impaired; a two-way fault is a rule on each
//! side. Received datagrams pass through untouched.
//!
//! # How it works
//!
//! [`Shim`] implements quinn's [`AsyncUdpSocket`] over a tokio socket and quinn-udp,
//! as quinn's own tokio socket does, so GSO, GRO and ECN keep working. In
//! [`AsyncUdpSocket::try_send`], a datagram whose destination has no rule (or a
//! no-op one) goes straight out: one atomic load while no rule is installed at all,
//! one map lookup otherwise. A datagram under a rule is split into its GSO segments;
//! each gets its fate from the seeded RNG; those with no delay go out at once and the
//! rest wait in a min-heap that one tokio task drains with `sleep_until`, in due
//! order (first-in first-out on ties). Decisions never surface as errors to quinn:
//! a dropped datagram is a successful send, as on a real network.
//!
//! # Layout
//! - `rule`: [`LinkRule`], [`Distribution`] and [`RuleError`].
//! - `handle`: [`ShimHandle`] (the rule table, shared) and [`ShimStats`].
//! - `impair`: the pure core: fates from a rule and an RNG, and the delay queue.
//! - `latency`: [`latency_table`], classical latency from a topology.

mod handle;
mod impair;
mod latency;
mod rule;

use std::fmt;
use std::future::Future;
use std::io::{self, IoSliceMut};
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::task::{Context, Poll, ready};

use quinn::udp::{RecvMeta, Transmit, UdpSocketState};
use quinn::{AsyncUdpSocket, UdpPoller};
use tokio::io::Interest;
use tokio::sync::Notify;
use tokio::time::Instant;

pub use handle::{ShimHandle, ShimStats};
pub use latency::latency_table;
pub use rule::{Distribution, LinkRule, MAX_DELAY, REORDER_MIN_HOLD, RuleError};

use handle::{Counters, Shared, canonical};
use impair::{DelayQueue, Delayed, Impairer};

/// A UDP socket for quinn that impairs outgoing datagrams by the rules of its
/// [`ShimHandle`]. Build one with [`Shim::bind`] (or a whole endpoint with
/// [`endpoint`]) and give it to [`quinn::Endpoint::new_with_abstract_socket`].
///
/// Dropping the last reference stops the shim once the datagrams it has delayed
/// have left.
pub struct Shim {
    core: Arc<Core>,
}

/// The socket and delay queue, shared by the [`Shim`], its pollers and the
/// delay-queue task.
struct Core {
    io: tokio::net::UdpSocket,
    local_addr: SocketAddr,
    state: UdpSocketState,
    shared: Arc<Shared>,
    engine: Mutex<Engine>,
    /// Wakes the delay-queue task: an earlier datagram was queued, or the shim closed.
    wake: Notify,
    closed: AtomicBool,
}

/// The mutable part of the shim: decisions and the datagrams they delayed.
#[derive(Debug)]
struct Engine {
    impairer: Impairer,
    queue: DelayQueue,
}

impl Shim {
    /// Binds a UDP socket to `addr` and wraps it; `seed` seeds every random decision.
    /// Must be called inside a tokio runtime, which runs the delay queue.
    pub fn bind(addr: SocketAddr, seed: u64) -> io::Result<(Arc<Shim>, ShimHandle)> {
        Shim::wrap(std::net::UdpSocket::bind(addr)?, seed)
    }

    /// Wraps an already bound UDP socket, as [`Shim::bind`] does.
    pub fn wrap(socket: std::net::UdpSocket, seed: u64) -> io::Result<(Arc<Shim>, ShimHandle)> {
        let runtime = tokio::runtime::Handle::try_current()
            .map_err(|e| io::Error::other(format!("the UDP shim needs a tokio runtime: {e}")))?;
        // quinn-udp sets the socket non-blocking, as tokio requires.
        let state = UdpSocketState::new((&socket).into())?;
        let io = tokio::net::UdpSocket::from_std(socket)?;
        let local_addr = io.local_addr()?;
        let shared = Arc::new(Shared::default());
        let core = Arc::new(Core {
            io,
            local_addr,
            state,
            shared: shared.clone(),
            engine: Mutex::new(Engine {
                impairer: Impairer::new(seed),
                queue: DelayQueue::default(),
            }),
            wake: Notify::new(),
            closed: AtomicBool::new(false),
        });
        runtime.spawn(run_delay_queue(core.clone()));
        Ok((Arc::new(Shim { core }), ShimHandle::new(shared, local_addr)))
    }

    /// A handle on this shim's rules and counters.
    pub fn handle(&self) -> ShimHandle {
        ShimHandle::new(self.core.shared.clone(), self.core.local_addr)
    }
}

/// A quinn endpoint on a new [`Shim`] bound to `addr` (a server too if
/// `server_config` is given), with quinn's tokio runtime, and the handle that steers
/// its shim. Must be called inside a tokio runtime.
pub fn endpoint(
    server_config: Option<quinn::ServerConfig>,
    addr: SocketAddr,
    seed: u64,
) -> io::Result<(quinn::Endpoint, ShimHandle)> {
    let (shim, handle) = Shim::bind(addr, seed)?;
    let endpoint = quinn::Endpoint::new_with_abstract_socket(
        quinn::EndpointConfig::default(),
        server_config,
        shim,
        Arc::new(quinn::TokioRuntime),
    )?;
    Ok((endpoint, handle))
}

impl fmt::Debug for Shim {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Shim")
            .field("local_addr", &self.core.local_addr)
            .field("stats", &self.core.shared.stats)
            .finish_non_exhaustive()
    }
}

impl Drop for Shim {
    fn drop(&mut self) {
        self.core.closed.store(true, Ordering::Release);
        self.core.wake.notify_one();
    }
}

impl AsyncUdpSocket for Shim {
    fn create_io_poller(self: Arc<Self>) -> Pin<Box<dyn UdpPoller>> {
        Box::pin(Poller {
            core: self.core.clone(),
            writable: None,
        })
    }

    fn try_send(&self, transmit: &Transmit<'_>) -> io::Result<()> {
        match self.core.shared.rule_for(transmit.destination) {
            None => self.core.send_now(transmit),
            Some(rule) => {
                self.core.send_impaired(&rule, transmit);
                Ok(())
            }
        }
    }

    fn poll_recv(
        &self,
        cx: &mut Context<'_>,
        bufs: &mut [IoSliceMut<'_>],
        meta: &mut [RecvMeta],
    ) -> Poll<io::Result<usize>> {
        let core = &self.core;
        loop {
            ready!(core.io.poll_recv_ready(cx))?;
            if let Ok(n) = core.io.try_io(Interest::READABLE, || {
                core.state.recv((&core.io).into(), bufs, meta)
            }) {
                return Poll::Ready(Ok(n));
            }
        }
    }

    fn local_addr(&self) -> io::Result<SocketAddr> {
        self.core.io.local_addr()
    }

    fn max_transmit_segments(&self) -> usize {
        self.core.state.max_gso_segments()
    }

    fn max_receive_segments(&self) -> usize {
        self.core.state.gro_segments()
    }

    fn may_fragment(&self) -> bool {
        self.core.state.may_fragment()
    }
}

impl Core {
    fn engine(&self) -> MutexGuard<'_, Engine> {
        self.engine.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn stats(&self) -> &Counters {
        &self.shared.stats
    }

    /// Sends `transmit` as it is, or returns `WouldBlock` for quinn to retry.
    fn send_now(&self, transmit: &Transmit<'_>) -> io::Result<()> {
        self.io.try_io(Interest::WRITABLE, || {
            self.state.send((&self.io).into(), transmit)
        })?;
        Counters::add(&self.stats().sent, segments(transmit) as u64);
        Ok(())
    }

    /// Applies `rule` to each datagram of `transmit`: drops, copies, sends at once or
    /// queues each.
    fn send_impaired(&self, rule: &LinkRule, transmit: &Transmit<'_>) {
        let now = Instant::now();
        let destination = canonical(transmit.destination);
        let size = transmit
            .segment_size
            .unwrap_or(transmit.contents.len())
            .max(1);
        let datagrams = transmit.contents.chunks(size);
        let count = datagrams.len();
        // Datagrams (indices into `datagrams`) to send now, after the lock is released.
        let mut immediate = Vec::with_capacity(count);
        let mut wake = false;
        let (mut dropped, mut duplicated, mut delayed, mut reordered) = (0, 0, 0, 0);
        {
            let mut engine = self.engine();
            let Engine { impairer, queue } = &mut *engine;
            for (i, datagram) in datagrams.clone().enumerate() {
                let fate = impairer.fate(rule, destination, datagram.len(), now);
                dropped += fate.dropped;
                duplicated += u64::from(fate.duplicated);
                reordered += fate.reordered;
                for due in fate.copies.into_iter().flatten() {
                    if due <= now {
                        immediate.push(i);
                    } else {
                        delayed += 1;
                        wake |= queue.push(
                            due,
                            transmit.destination,
                            transmit.ecn,
                            transmit.src_ip,
                            datagram,
                        );
                    }
                }
            }
        }
        let stats = self.stats();
        Counters::add(&stats.dropped, dropped);
        Counters::add(&stats.duplicated, duplicated);
        Counters::add(&stats.delayed, delayed);
        Counters::add(&stats.reordered, reordered);

        let mut blocked: Vec<&[u8]> = Vec::new();
        if immediate.len() == count && immediate.iter().enumerate().all(|(i, &j)| i == j) {
            // Every datagram goes now, once, in order: keep the GSO batch whole.
            if self.send_now(transmit).is_err() {
                blocked.extend(datagrams);
            }
        } else {
            let datagrams: Vec<&[u8]> = datagrams.collect();
            for i in immediate {
                let single = Transmit {
                    destination: transmit.destination,
                    ecn: transmit.ecn,
                    contents: datagrams[i],
                    segment_size: None,
                    src_ip: transmit.src_ip,
                };
                if !blocked.is_empty() || self.send_now(&single).is_err() {
                    blocked.push(datagrams[i]);
                }
            }
        }
        if !blocked.is_empty() {
            // The fates are decided; the socket being full must not re-roll them
            // (as a retry by quinn would), so the delay queue sends these as soon
            // as it can.
            let mut engine = self.engine();
            for datagram in blocked {
                wake |= engine.queue.push(
                    now,
                    transmit.destination,
                    transmit.ecn,
                    transmit.src_ip,
                    datagram,
                );
            }
        }
        if wake {
            self.wake.notify_one();
        }
    }

    /// Sends one delayed datagram, waiting for the socket to be writable.
    async fn send_delayed(&self, datagram: &Delayed) {
        let transmit = Transmit {
            destination: datagram.destination,
            ecn: datagram.ecn,
            contents: &datagram.contents,
            segment_size: None,
            src_ip: datagram.src_ip,
        };
        loop {
            let sent = match self.io.writable().await {
                Ok(()) => self.io.try_io(Interest::WRITABLE, || {
                    self.state.send((&self.io).into(), &transmit)
                }),
                Err(e) => Err(e),
            };
            match sent {
                Ok(()) => return Counters::add(&self.stats().sent, 1),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
                Err(e) => {
                    tracing::debug!(error = %e, to = %datagram.destination, "shim: delayed datagram lost");
                    return Counters::add(&self.stats().dropped, 1);
                }
            }
        }
    }
}

/// The delay-queue task: sends each queued datagram when it is due, until the shim
/// is dropped and the queue is empty.
async fn run_delay_queue(core: Arc<Core>) {
    let mut due = Vec::new();
    loop {
        let next = {
            let mut engine = core.engine();
            let now = Instant::now();
            due.extend(std::iter::from_fn(|| engine.queue.pop_due(now)));
            engine.queue.next_due()
        };
        for datagram in due.drain(..) {
            core.send_delayed(&datagram).await;
        }
        match next {
            Some(at) => {
                tokio::select! {
                    () = tokio::time::sleep_until(at) => {}
                    () = core.wake.notified() => {}
                }
            }
            None if core.closed.load(Ordering::Acquire) => break,
            None => core.wake.notified().await,
        }
    }
}

/// How many datagrams a transmit carries.
fn segments(transmit: &Transmit<'_>) -> usize {
    match transmit.segment_size {
        Some(size) if size > 0 => transmit.contents.len().div_ceil(size),
        _ => 1,
    }
}

/// Registers a task to be woken when the shim's socket is writable. Each poller
/// holds its own readiness future, so every connection task waiting on the socket
/// is woken (tokio's `poll_send_ready` would remember only the last waker).
struct Poller {
    core: Arc<Core>,
    writable: Option<Pin<Box<dyn Future<Output = io::Result<()>> + Send + Sync>>>,
}

impl fmt::Debug for Poller {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Poller").finish_non_exhaustive()
    }
}

impl UdpPoller for Poller {
    fn poll_writable(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = &mut *self;
        let writable = this.writable.get_or_insert_with(|| {
            let core = this.core.clone();
            Box::pin(async move { core.io.writable().await })
        });
        let result = writable.as_mut().poll(cx);
        if result.is_ready() {
            this.writable = None;
        }
        result
    }
}
