//! The shim's pure core: deciding each datagram's fate from a rule, a seeded RNG and a
//! clock reading, and the queue that holds delayed datagrams in due order. No
//! sockets and no tasks here; `super` drives it.

use std::cmp::{Ordering, Reverse};
use std::collections::{BinaryHeap, HashMap};
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use quinn::udp::EcnCodepoint;
use rand::rngs::StdRng;
use rand::{RngExt, SeedableRng};
use tokio::time::Instant;

use super::rule::{Distribution, LinkRule, REORDER_MIN_HOLD};

/// A rate-limited link drops a datagram when more than this much of its traffic is
/// already queued…
const QUEUE_SECONDS: f64 = 0.5;
/// …or, on slow links, when more than this many bytes are.
const QUEUE_MIN_BYTES: f64 = 64.0 * 1024.0;
/// Past this many tracked links, forget the idle ones.
const MAX_IDLE_LINKS: usize = 256;

/// What becomes of one datagram under a rule.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct Fate {
    /// When each copy (one, or two if duplicated) leaves; `None` for no copy. A time
    /// not after `now` means at once.
    pub copies: [Option<Instant>; 2],
    /// Copies dropped: by loss, blackhole or a full rate-limit queue.
    pub dropped: u64,
    /// True if the datagram was duplicated.
    pub duplicated: bool,
    /// Copies held back to be overtaken.
    pub reordered: u64,
}

/// Decides datagrams' fates: the seeded RNG and, per destination, when its
/// rate-limited link is free again.
#[derive(Debug)]
pub(crate) struct Impairer {
    rng: StdRng,
    busy_until: HashMap<SocketAddr, Instant>,
}

impl Impairer {
    /// An impairer whose every decision follows from `seed`.
    pub fn new(seed: u64) -> Impairer {
        Impairer {
            rng: StdRng::seed_from_u64(seed),
            busy_until: HashMap::new(),
        }
    }

    /// The fate of a datagram of `len` bytes sent to `peer` at `now` under `rule`
    /// (which must be valid: probabilities in [0, 1]).
    pub fn fate(&mut self, rule: &LinkRule, peer: SocketAddr, len: usize, now: Instant) -> Fate {
        let mut fate = Fate::default();
        if rule.blackhole || self.chance(rule.loss) {
            fate.dropped = 1;
            return fate;
        }
        fate.duplicated = self.chance(rule.duplicate);
        let copies = if fate.duplicated { 2 } else { 1 };
        for slot in fate.copies.iter_mut().take(copies) {
            let Some(sent) = self.serialize(rule, peer, len, now) else {
                fate.dropped += 1;
                continue;
            };
            let mut due = sent + rule.delay + self.jitter(rule);
            if self.chance(rule.reorder) {
                due += (rule.delay + rule.jitter).max(REORDER_MIN_HOLD);
                fate.reordered += 1;
            }
            *slot = Some(due);
        }
        fate
    }

    /// True with probability `p`.
    fn chance(&mut self, p: f64) -> bool {
        p > 0.0 && self.rng.random_bool(p.min(1.0))
    }

    /// When a datagram finishes going out on the rate-limited link to `peer`, or
    /// `None` if the link's queue is full; `now` if the rule sets no rate.
    fn serialize(
        &mut self,
        rule: &LinkRule,
        peer: SocketAddr,
        len: usize,
        now: Instant,
    ) -> Option<Instant> {
        let Some(rate) = rule.bandwidth.filter(|&r| r > 0) else {
            return Some(now);
        };
        if self.busy_until.len() > MAX_IDLE_LINKS {
            self.busy_until.retain(|_, free| *free > now);
        }
        let busy = self.busy_until.entry(peer).or_insert(now);
        let start = (*busy).max(now);
        let rate = rate as f64;
        let queued = (start - now).as_secs_f64() * rate;
        if queued + len as f64 > (rate * QUEUE_SECONDS).max(QUEUE_MIN_BYTES) {
            return None;
        }
        *busy = start + Duration::from_secs_f64(len as f64 / rate);
        Some(*busy)
    }

    /// A jitter sample in `[0, rule.jitter]`.
    fn jitter(&mut self, rule: &LinkRule) -> Duration {
        if rule.jitter.is_zero() {
            return Duration::ZERO;
        }
        let x = match rule.distribution {
            Distribution::Uniform => self.rng.random::<f64>(),
            Distribution::Normal => {
                // Box–Muller; 1 - u is in (0, 1], so the logarithm is finite.
                let u1 = 1.0 - self.rng.random::<f64>();
                let u2 = self.rng.random::<f64>();
                let z = (-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos();
                0.5 + z / 6.0
            }
            Distribution::Exponential => -(1.0 - self.rng.random::<f64>()).ln() / 5.0,
        };
        rule.jitter.mul_f64(x.clamp(0.0, 1.0))
    }
}

/// A datagram waiting in the [`DelayQueue`].
#[derive(Debug)]
pub(crate) struct Delayed {
    /// When it is due to leave.
    pub due: Instant,
    /// Order of arrival, so datagrams due at the same moment leave first-in first-out.
    seq: u64,
    /// Where it goes.
    pub destination: SocketAddr,
    /// Its ECN codepoint.
    pub ecn: Option<EcnCodepoint>,
    /// The source address quinn chose, if any.
    pub src_ip: Option<IpAddr>,
    /// The datagram.
    pub contents: Box<[u8]>,
}

impl PartialEq for Delayed {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other) == Ordering::Equal
    }
}

impl Eq for Delayed {}

impl PartialOrd for Delayed {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Delayed {
    fn cmp(&self, other: &Self) -> Ordering {
        (self.due, self.seq).cmp(&(other.due, other.seq))
    }
}

/// Delayed datagrams, earliest due first (ties first-in first-out).
#[derive(Debug, Default)]
pub(crate) struct DelayQueue {
    heap: BinaryHeap<Reverse<Delayed>>,
    seq: u64,
}

impl DelayQueue {
    /// Queues a datagram; true if it is now the earliest due, so the driver's timer
    /// must be brought forward.
    pub fn push(
        &mut self,
        due: Instant,
        destination: SocketAddr,
        ecn: Option<EcnCodepoint>,
        src_ip: Option<IpAddr>,
        contents: &[u8],
    ) -> bool {
        let earliest = self.next_due().is_none_or(|next| due < next);
        self.seq += 1;
        self.heap.push(Reverse(Delayed {
            due,
            seq: self.seq,
            destination,
            ecn,
            src_ip,
            contents: contents.into(),
        }));
        earliest
    }

    /// Takes the earliest datagram if it is due at `now`.
    pub fn pop_due(&mut self, now: Instant) -> Option<Delayed> {
        if self.next_due()? > now {
            return None;
        }
        self.heap.pop().map(|Reverse(d)| d)
    }

    /// When the earliest datagram is due.
    pub fn next_due(&self) -> Option<Instant> {
        self.heap.peek().map(|Reverse(d)| d.due)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn peer() -> SocketAddr {
        "127.0.0.1:9".parse().unwrap()
    }

    #[test]
    fn same_seed_same_fates() {
        let rule = LinkRule {
            jitter: Duration::from_millis(5),
            distribution: Distribution::Normal,
            loss: 0.2,
            duplicate: 0.2,
            reorder: 0.2,
            ..LinkRule::default()
        };
        let now = Instant::now();
        let run = |seed| {
            let mut imp = Impairer::new(seed);
            (0..200)
                .map(|_| imp.fate(&rule, peer(), 1200, now))
                .collect::<Vec<_>>()
        };
        assert_eq!(run(7), run(7));
        assert_ne!(run(7), run(8));
    }

    #[test]
    fn jitter_stays_in_range_for_every_distribution() {
        let now = Instant::now();
        for distribution in [
            Distribution::Uniform,
            Distribution::Normal,
            Distribution::Exponential,
        ] {
            let rule = LinkRule::latency(
                Duration::from_millis(10),
                Duration::from_millis(30),
                distribution,
            );
            let mut imp = Impairer::new(1);
            for _ in 0..1000 {
                let due = imp.fate(&rule, peer(), 100, now).copies[0].unwrap();
                let delay = due - now;
                assert!(
                    (Duration::from_millis(10)..=Duration::from_millis(30)).contains(&delay),
                    "{distribution:?}: {delay:?}"
                );
            }
        }
    }

    #[test]
    fn bandwidth_spaces_datagrams_and_drops_when_the_queue_is_full() {
        let rule = LinkRule {
            bandwidth: Some(100_000),
            ..LinkRule::default()
        };
        let now = Instant::now();
        let mut imp = Impairer::new(1);
        let first = imp.fate(&rule, peer(), 1000, now).copies[0].unwrap();
        let second = imp.fate(&rule, peer(), 1000, now).copies[0].unwrap();
        assert_eq!(first - now, Duration::from_millis(10));
        assert_eq!(second - now, Duration::from_millis(20));
        // The queue holds max(0.5 s × 100 kB/s, 64 KiB) = 65536 bytes.
        let dropped: u64 = (0..100)
            .map(|_| imp.fate(&rule, peer(), 1000, now).dropped)
            .sum();
        assert_eq!(dropped, 100 - 63);
    }

    #[test]
    fn queue_pops_in_due_order_then_fifo() {
        let now = Instant::now();
        let mut q = DelayQueue::default();
        let later = now + Duration::from_millis(5);
        assert!(q.push(later, peer(), None, None, b"b"));
        assert!(!q.push(later, peer(), None, None, b"c"));
        assert!(q.push(now, peer(), None, None, b"a"));
        assert!(q.pop_due(now).is_some_and(|d| &*d.contents == b"a"));
        assert!(q.pop_due(now).is_none());
        let order: Vec<_> = std::iter::from_fn(|| q.pop_due(later))
            .map(|d| d.contents)
            .collect();
        assert_eq!(order, [b"b".as_slice().into(), b"c".as_slice().into()]);
    }
}
