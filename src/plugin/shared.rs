//! What plugin instances on different workers share: key-value data with compare-and-swap,
//! queues, and metrics. The data and the queues sit behind short mutexes (a copy in or out is
//! all that happens under them); metric values are atomics, so counting never waits.

use super::abi::{MetricType, Status};
use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::Mutex;

/// Metrics a whole appliance may define (every plugin's together).
pub const MAX_METRICS: usize = 4096;
/// Bytes queued on one shared queue at most; beyond, enqueue fails.
const QUEUE_MAX_BYTES: usize = 16 << 20;

pub struct Queue {
    pub vm_id: Vec<u8>,
    pub name: Vec<u8>,
    items: VecDeque<Vec<u8>>,
    bytes: usize,
}

pub struct Metric {
    pub name: String,
    pub kind: MetricType,
}

/// A shared value and its CAS token.
type Entry = (Vec<u8>, u32);

pub struct Shared {
    data: Mutex<HashMap<Vec<u8>, Entry>>,
    queues: Mutex<Vec<Queue>>,
    /// One per queue id, bumped on every enqueue: instances that registered a queue compare it
    /// with what they saw last to know when to call `on_queue_ready`.
    queue_seq: Box<[AtomicU64]>,
    metric_defs: Mutex<Vec<Metric>>,
    metric_values: Box<[AtomicI64]>,
    /// Histograms keep a count and a sum here (values: the sum).
    metric_counts: Box<[AtomicU64]>,
}

/// Shared queues an appliance may have.
pub const MAX_QUEUES: usize = 1024;

impl Default for Shared {
    fn default() -> Shared {
        Shared {
            data: Mutex::default(),
            queues: Mutex::default(),
            queue_seq: (0..MAX_QUEUES).map(|_| AtomicU64::new(0)).collect(),
            metric_defs: Mutex::default(),
            metric_values: (0..MAX_METRICS).map(|_| AtomicI64::new(0)).collect(),
            metric_counts: (0..MAX_METRICS).map(|_| AtomicU64::new(0)).collect(),
        }
    }
}

impl Shared {
    /// The value and its CAS token; NotFound when the key is absent.
    pub fn get(&self, key: &[u8]) -> Result<(Vec<u8>, u32), Status> {
        let d = self.data.lock().unwrap_or_else(|e| e.into_inner());
        d.get(key).cloned().ok_or(Status::NotFound)
    }

    /// Sets the value if `cas` is 0 or matches the current token (CasMismatch otherwise).
    pub fn set(&self, key: &[u8], value: &[u8], cas: u32) -> Status {
        let mut d = self.data.lock().unwrap_or_else(|e| e.into_inner());
        match d.get_mut(key) {
            Some((v, token)) => {
                if cas != 0 && cas != *token {
                    return Status::CasMismatch;
                }
                v.clear();
                v.extend_from_slice(value);
                *token = token.wrapping_add(1).max(1);
            }
            None => {
                if cas != 0 {
                    return Status::CasMismatch;
                }
                d.insert(key.to_vec(), (value.to_vec(), 1));
            }
        }
        Status::Ok
    }

    /// The queue `vm_id`/`name`, made if new.
    pub fn register_queue(&self, vm_id: &[u8], name: &[u8]) -> Result<u32, Status> {
        let mut q = self.queues.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(i) = q.iter().position(|x| x.vm_id == vm_id && x.name == name) {
            return Ok(i as u32 + 1);
        }
        if q.len() >= MAX_QUEUES {
            return Err(Status::InternalFailure);
        }
        q.push(Queue { vm_id: vm_id.to_vec(), name: name.to_vec(), items: VecDeque::new(), bytes: 0 });
        Ok(q.len() as u32)
    }

    pub fn resolve_queue(&self, vm_id: &[u8], name: &[u8]) -> Result<u32, Status> {
        let q = self.queues.lock().unwrap_or_else(|e| e.into_inner());
        q.iter()
            .position(|x| (vm_id.is_empty() || x.vm_id == vm_id) && x.name == name)
            .map(|i| i as u32 + 1)
            .ok_or(Status::NotFound)
    }

    pub fn enqueue(&self, id: u32, value: &[u8]) -> Status {
        let mut q = self.queues.lock().unwrap_or_else(|e| e.into_inner());
        let Some(queue) = (id as usize).checked_sub(1).and_then(|i| q.get_mut(i)) else { return Status::NotFound };
        if queue.bytes + value.len() > QUEUE_MAX_BYTES {
            return Status::InternalFailure;
        }
        queue.bytes += value.len();
        queue.items.push_back(value.to_vec());
        self.queue_seq[id as usize - 1].fetch_add(1, Ordering::Release);
        Status::Ok
    }

    pub fn dequeue(&self, id: u32) -> Result<Vec<u8>, Status> {
        let mut q = self.queues.lock().unwrap_or_else(|e| e.into_inner());
        let Some(queue) = (id as usize).checked_sub(1).and_then(|i| q.get_mut(i)) else { return Err(Status::NotFound) };
        let v = queue.items.pop_front().ok_or(Status::Empty)?;
        queue.bytes -= v.len();
        Ok(v)
    }

    /// How many times queue `id` was enqueued to.
    pub fn queue_seq(&self, id: u32) -> u64 {
        (id as usize).checked_sub(1).and_then(|i| self.queue_seq.get(i)).map_or(0, |s| s.load(Ordering::Acquire))
    }

    /// The metric `name` (made if new; the same name gives the same id, of the first kind).
    pub fn define_metric(&self, kind: MetricType, name: &str) -> Result<u32, Status> {
        let mut defs = self.metric_defs.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(i) = defs.iter().position(|m| m.name == name) {
            return Ok(i as u32 + 1);
        }
        if defs.len() >= MAX_METRICS {
            return Err(Status::InternalFailure);
        }
        defs.push(Metric { name: name.to_owned(), kind });
        Ok(defs.len() as u32)
    }

    fn metric_kind(&self, id: u32) -> Option<MetricType> {
        let defs = self.metric_defs.lock().unwrap_or_else(|e| e.into_inner());
        (id as usize).checked_sub(1).and_then(|i| defs.get(i)).map(|m| m.kind)
    }

    pub fn increment_metric(&self, id: u32, by: i64) -> Status {
        match self.metric_kind(id) {
            Some(MetricType::Counter) if by < 0 => Status::BadArgument,
            Some(MetricType::Counter | MetricType::Gauge) => {
                self.metric_values[id as usize - 1].fetch_add(by, Ordering::Relaxed);
                Status::Ok
            }
            Some(MetricType::Histogram) => Status::BadArgument,
            None => Status::NotFound,
        }
    }

    pub fn record_metric(&self, id: u32, value: u64) -> Status {
        let i = id as usize;
        match self.metric_kind(id) {
            Some(MetricType::Counter | MetricType::Gauge) => {
                self.metric_values[i - 1].store(value as i64, Ordering::Relaxed);
                Status::Ok
            }
            Some(MetricType::Histogram) => {
                self.metric_values[i - 1].fetch_add(value as i64, Ordering::Relaxed);
                self.metric_counts[i - 1].fetch_add(1, Ordering::Relaxed);
                Status::Ok
            }
            None => Status::NotFound,
        }
    }

    pub fn get_metric(&self, id: u32) -> Result<u64, Status> {
        match self.metric_kind(id) {
            Some(MetricType::Counter | MetricType::Gauge) => {
                Ok(self.metric_values[id as usize - 1].load(Ordering::Relaxed) as u64)
            }
            Some(MetricType::Histogram) => Err(Status::BadArgument),
            None => Err(Status::NotFound),
        }
    }

    /// Every metric: name, kind, value (a histogram's sum) and count (histograms only).
    pub fn metrics(&self) -> Vec<(String, MetricType, i64, u64)> {
        let defs = self.metric_defs.lock().unwrap_or_else(|e| e.into_inner());
        defs.iter()
            .enumerate()
            .map(|(i, m)| {
                (
                    m.name.clone(),
                    m.kind,
                    self.metric_values[i].load(Ordering::Relaxed),
                    self.metric_counts[i].load(Ordering::Relaxed),
                )
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn data_with_cas() {
        let s = Shared::default();
        assert_eq!(s.get(b"k"), Err(Status::NotFound));
        assert_eq!(s.set(b"k", b"v1", 5), Status::CasMismatch, "no value yet: only cas 0");
        assert_eq!(s.set(b"k", b"v1", 0), Status::Ok);
        let (v, cas) = s.get(b"k").unwrap();
        assert_eq!(v, b"v1");
        assert_eq!(s.set(b"k", b"v2", cas), Status::Ok);
        assert_eq!(s.set(b"k", b"v3", cas), Status::CasMismatch, "a stale token");
        assert_eq!(s.get(b"k").unwrap().0, b"v2");
    }

    #[test]
    fn queues() {
        let s = Shared::default();
        let id = s.register_queue(b"vm", b"q").unwrap();
        assert_eq!(s.register_queue(b"vm", b"q"), Ok(id));
        assert_eq!(s.resolve_queue(b"vm", b"q"), Ok(id));
        assert_eq!(s.resolve_queue(b"vm", b"other"), Err(Status::NotFound));
        assert_eq!(s.dequeue(id), Err(Status::Empty));
        assert_eq!(s.enqueue(id, b"a"), Status::Ok);
        assert_eq!(s.queue_seq(id), 1);
        assert_eq!(s.dequeue(id).unwrap(), b"a");
        assert_eq!(s.enqueue(99, b"a"), Status::NotFound);
        assert_eq!(s.dequeue(0), Err(Status::NotFound));
    }

    #[test]
    fn metrics() {
        let s = Shared::default();
        let c = s.define_metric(MetricType::Counter, "requests").unwrap();
        assert_eq!(s.define_metric(MetricType::Counter, "requests"), Ok(c));
        assert_eq!(s.increment_metric(c, 2), Status::Ok);
        assert_eq!(s.increment_metric(c, -1), Status::BadArgument);
        assert_eq!(s.get_metric(c), Ok(2));
        let h = s.define_metric(MetricType::Histogram, "latency").unwrap();
        assert_eq!(s.record_metric(h, 10), Status::Ok);
        assert_eq!(s.record_metric(h, 30), Status::Ok);
        assert_eq!(s.get_metric(h), Err(Status::BadArgument));
        assert_eq!(s.get_metric(999), Err(Status::NotFound));
        let all = s.metrics();
        assert_eq!(all[1].2, 40);
        assert_eq!(all[1].3, 2);
    }
}
