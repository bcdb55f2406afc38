//! A small single-threaded executor, one per worker, for the futures of intercepted flows
//! (hyper's connections, the relays). No tokio runtime, no thread per flow: the TCP layer wakes
//! a task when its socket can read or write, the worker runs the woken tasks between bursts.
//!
//! A waker is an `Arc` holding the task's id and a "queued" flag; waking pushes the id onto a
//! lock-free queue once until the task runs again. Task slots are reused; a generation in the
//! id makes a stale wake (for a finished task whose slot was reused) a no-op.
//!
//! Tasks spawn other tasks through [`spawn`], which puts them in a thread-local inbox that the
//! executor of the same thread (the worker's) drains; hyper's HTTP/2 executor uses it too.

use crossbeam_queue::SegQueue;
use std::cell::RefCell;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll, Wake, Waker};

type Task = Pin<Box<dyn Future<Output = ()>>>;

thread_local! {
    static INBOX: RefCell<Vec<Task>> = const { RefCell::new(Vec::new()) };
}

/// Runs `fut` on this thread's executor (the worker's), starting at its next run.
pub fn spawn(fut: impl Future<Output = ()> + 'static) {
    INBOX.with(|i| i.borrow_mut().push(Box::pin(fut)));
}

/// hyper's executor for the tasks it starts itself (HTTP/2 streams and connections).
#[derive(Clone, Copy, Debug, Default)]
pub struct LocalExec;

impl<F: Future + 'static> hyper::rt::Executor<F> for LocalExec {
    fn execute(&self, fut: F) {
        spawn(async move {
            fut.await;
        });
    }
}

struct TaskWaker {
    id: u64,
    queued: AtomicBool,
    ready: Arc<SegQueue<u64>>,
}

impl Wake for TaskWaker {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref()
    }

    fn wake_by_ref(self: &Arc<Self>) {
        if !self.queued.swap(true, Ordering::AcqRel) {
            self.ready.push(self.id);
        }
    }
}

struct Slot {
    task: Option<Task>,
    waker: Option<(Arc<TaskWaker>, Waker)>,
    gen: u32,
}

#[derive(Default)]
pub struct Executor {
    slots: Vec<Slot>,
    free: Vec<u32>,
    ready: Arc<SegQueue<u64>>,
    live: usize,
}

impl Executor {
    pub fn new() -> Executor {
        Executor::default()
    }

    /// Tasks not finished yet, those spawned since the last run included (a plugin's
    /// outbound call spawns one with no connection open: the worker must still run it).
    pub fn live(&self) -> usize {
        self.live + INBOX.with(|i| i.borrow().len())
    }

    /// Whether a task waits to run.
    pub fn has_ready(&self) -> bool {
        !self.ready.is_empty() || INBOX.with(|i| !i.borrow().is_empty())
    }

    fn adopt_spawned(&mut self) {
        let spawned = INBOX.with(|i| std::mem::take(&mut *i.borrow_mut()));
        for task in spawned {
            let idx = match self.free.pop() {
                Some(i) => i as usize,
                None => {
                    self.slots.push(Slot { task: None, waker: None, gen: 0 });
                    self.slots.len() - 1
                }
            };
            let s = &mut self.slots[idx];
            s.gen = s.gen.wrapping_add(1);
            let id = (s.gen as u64) << 32 | idx as u64;
            let w = Arc::new(TaskWaker { id, queued: AtomicBool::new(true), ready: self.ready.clone() });
            s.waker = Some((w.clone(), Waker::from(w)));
            s.task = Some(task);
            self.live += 1;
            self.ready.push(id);
        }
    }

    /// Polls woken tasks, at most `budget` polls, so packets are not starved. Returns how many
    /// polls it made.
    pub fn run(&mut self, budget: usize) -> usize {
        let mut polls = 0;
        self.adopt_spawned();
        while polls < budget {
            let Some(id) = self.ready.pop() else { break };
            let (idx, gen) = ((id & 0xffff_ffff) as usize, (id >> 32) as u32);
            let Some(s) = self.slots.get_mut(idx) else { continue };
            if s.gen != gen {
                continue;
            }
            let (Some(mut task), Some((flag, waker))) = (s.task.take(), s.waker.clone()) else { continue };
            flag.queued.store(false, Ordering::Release);
            polls += 1;
            let done = task.as_mut().poll(&mut Context::from_waker(&waker)).is_ready();
            let s = &mut self.slots[idx];
            if done {
                s.waker = None;
                self.free.push(idx as u32);
                self.live -= 1;
            } else {
                s.task = Some(task);
            }
            self.adopt_spawned();
        }
        polls
    }
}

/// A one-shot signal between tasks of one thread: `set` wakes whoever waits.
#[derive(Default)]
pub struct Signal {
    state: RefCell<(bool, Option<Waker>)>,
}

impl Signal {
    pub fn set(&self) {
        let w = {
            let mut s = self.state.borrow_mut();
            s.0 = true;
            s.1.take()
        };
        if let Some(w) = w {
            w.wake();
        }
    }

    /// Ready once set; otherwise remembers the waker.
    pub fn poll_set(&self, cx: &mut Context<'_>) -> Poll<()> {
        let mut s = self.state.borrow_mut();
        if s.0 {
            return Poll::Ready(());
        }
        s.1 = Some(cx.waker().clone());
        Poll::Pending
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::cell::Cell;
    use std::rc::Rc;

    #[test]
    fn runs_spawned_tasks_and_wakes_them() {
        let mut ex = Executor::new();
        let sig = Rc::new(Signal::default());
        let done = Rc::new(Cell::new(false));
        let (s, d) = (sig.clone(), done.clone());
        spawn(async move {
            std::future::poll_fn(|cx| s.poll_set(cx)).await;
            d.set(true);
        });
        ex.run(100);
        assert_eq!(ex.live(), 1);
        assert!(!done.get());
        assert!(!ex.has_ready(), "a pending task is not polled again until woken");
        sig.set();
        assert!(ex.has_ready());
        ex.run(100);
        assert!(done.get());
        assert_eq!(ex.live(), 0);
    }

    #[test]
    fn stale_wakes_are_ignored_and_slots_reused() {
        let mut ex = Executor::new();
        spawn(async {});
        ex.run(10);
        assert_eq!(ex.live(), 0);
        spawn(async {});
        spawn(async {});
        ex.run(10);
        assert_eq!(ex.live(), 0);
        assert_eq!(ex.slots.len(), 2, "the first slot was reused");
    }

    #[test]
    fn budget_limits_polls() {
        let mut ex = Executor::new();
        for _ in 0..10 {
            spawn(async {});
        }
        assert_eq!(ex.run(4), 4);
        assert_eq!(ex.live(), 6);
        assert_eq!(ex.run(100), 6);
    }
}
