//! The process-wide event bus. A published event is allocated once, as an `Arc`, and
//! shared by every subscriber; the channel is bounded, so a slow subscriber lags (and
//! is told how many events it missed) instead of making memory grow.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};

use tokio::sync::broadcast;

use crate::id::{StepId, TaskId};
use crate::time::Timestamp;

/// What happened. The names (`Kind::name`) are listed in `docs/events.md`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum EventKind {
    TaskCreated,
    TaskStarted,
    TaskCompleted,
    TaskFailed,
    TaskCancelled,
    /// An operator's retry or resolution moved the task out of `error`.
    TaskResumed,
    StepStarted,
    StepCompleted,
    StepRetrying,
    StepFailed,
    StepDeadLettered,
    /// An operator marked the failed step done.
    StepResolved,
    MemoryHigh,
    MemoryNormal,
}

impl EventKind {
    pub fn name(self) -> &'static str {
        match self {
            EventKind::TaskCreated => "task.created",
            EventKind::TaskStarted => "task.started",
            EventKind::TaskCompleted => "task.completed",
            EventKind::TaskFailed => "task.failed",
            EventKind::TaskCancelled => "task.cancelled",
            EventKind::TaskResumed => "task.resumed",
            EventKind::StepStarted => "step.started",
            EventKind::StepCompleted => "step.completed",
            EventKind::StepRetrying => "step.retrying",
            EventKind::StepFailed => "step.failed",
            EventKind::StepDeadLettered => "step.dead_lettered",
            EventKind::StepResolved => "step.resolved",
            EventKind::MemoryHigh => "memory.high",
            EventKind::MemoryNormal => "memory.normal",
        }
    }
}

/// One lifecycle event.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Event {
    pub kind: EventKind,
    /// None for events of the process itself (memory pressure).
    pub task_id: Option<TaskId>,
    pub step_id: Option<StepId>,
    /// The step's name, shared with the rest of the process rather than copied.
    pub step_name: Option<Arc<str>>,
    pub attempt: u32,
    pub at: Timestamp,
}

/// Why [`Subscription::recv`] returned no event.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum RecvError {
    #[error("subscriber lagged: {0} events were dropped")]
    Lagged(u64),
    #[error("the event bus is closed")]
    Closed,
}

/// Publishes events to every current subscriber.
#[derive(Clone, Debug)]
pub struct EventBus {
    tx: broadcast::Sender<Arc<Event>>,
    /// Events subscribers missed by lagging, for metrics.
    dropped: Arc<AtomicU64>,
}

impl EventBus {
    /// The process's bus: every engine of the process publishes on it unless its
    /// configuration names another (a test that counts one engine's events does).
    pub fn process() -> Self {
        static BUS: OnceLock<EventBus> = OnceLock::new();
        BUS.get_or_init(EventBus::default).clone()
    }

    /// A bus whose subscribers may fall `capacity` events behind before they lag.
    pub fn new(capacity: usize) -> Self {
        Self {
            tx: broadcast::channel(capacity.max(1)).0,
            dropped: Arc::new(AtomicU64::new(0)),
        }
    }

    /// Publishes `event`; returns how many subscribers will see it. The event is
    /// allocated once and shared, whatever the number of subscribers.
    pub fn publish(&self, event: Event) -> usize {
        self.tx.send(Arc::new(event)).unwrap_or(0)
    }

    /// A stream of the events published from now on.
    pub fn subscribe(&self) -> Subscription {
        Subscription {
            rx: self.tx.subscribe(),
            dropped: self.dropped.clone(),
        }
    }

    /// Calls `f` with every event published from now on (or with the number of events
    /// missed if it falls behind), on a thread of its own, until the bus is dropped.
    pub fn subscribe_fn(
        &self,
        mut f: impl FnMut(Delivery<'_>) + Send + 'static,
    ) -> std::thread::JoinHandle<()> {
        let mut sub = self.subscribe();
        std::thread::spawn(move || {
            loop {
                match sub.rx.blocking_recv() {
                    Ok(event) => f(Delivery::Event(&event)),
                    Err(broadcast::error::RecvError::Lagged(n)) => {
                        sub.dropped.fetch_add(n, Ordering::Relaxed);
                        f(Delivery::Lagged(n))
                    }
                    Err(broadcast::error::RecvError::Closed) => return,
                }
            }
        })
    }

    pub fn subscriber_count(&self) -> usize {
        self.tx.receiver_count()
    }

    /// Events that subscribers missed because they fell behind.
    pub fn dropped_events(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }
}

impl Default for EventBus {
    fn default() -> Self {
        Self::new(1024)
    }
}

/// What a callback subscriber is given.
#[derive(Debug)]
pub enum Delivery<'a> {
    Event(&'a Event),
    /// This many events were missed.
    Lagged(u64),
}

/// A stream of events from one bus.
#[derive(Debug)]
pub struct Subscription {
    rx: broadcast::Receiver<Arc<Event>>,
    dropped: Arc<AtomicU64>,
}

impl Subscription {
    /// The next event, or how many were missed if this subscriber fell behind.
    pub async fn recv(&mut self) -> Result<Arc<Event>, RecvError> {
        let received = self.rx.recv().await;
        self.map(received)
    }

    /// The next event if one is waiting.
    pub fn try_recv(&mut self) -> Option<Result<Arc<Event>, RecvError>> {
        match self.rx.try_recv() {
            Err(broadcast::error::TryRecvError::Empty) => None,
            Ok(e) => Some(Ok(e)),
            Err(broadcast::error::TryRecvError::Lagged(n)) => {
                Some(self.map(Err(broadcast::error::RecvError::Lagged(n))))
            }
            Err(broadcast::error::TryRecvError::Closed) => Some(Err(RecvError::Closed)),
        }
    }

    fn map(
        &self,
        received: Result<Arc<Event>, broadcast::error::RecvError>,
    ) -> Result<Arc<Event>, RecvError> {
        received.map_err(|e| match e {
            broadcast::error::RecvError::Lagged(n) => {
                self.dropped.fetch_add(n, Ordering::Relaxed);
                RecvError::Lagged(n)
            }
            broadcast::error::RecvError::Closed => RecvError::Closed,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(kind: EventKind) -> Event {
        Event {
            kind,
            task_id: Some(TaskId::new()),
            step_id: None,
            step_name: None,
            attempt: 0,
            at: Timestamp::now(),
        }
    }

    #[tokio::test(flavor = "current_thread")]
    async fn every_subscriber_shares_one_allocation() {
        let bus = EventBus::new(8);
        let mut a = bus.subscribe();
        let mut b = bus.subscribe();
        assert_eq!(bus.publish(event(EventKind::TaskStarted)), 2);
        let ea = a.recv().await.unwrap();
        let eb = b.recv().await.unwrap();
        assert!(Arc::ptr_eq(&ea, &eb));
        assert_eq!(ea.kind.name(), "task.started");
    }

    #[tokio::test(flavor = "current_thread")]
    async fn a_slow_subscriber_lags_and_is_told() {
        let bus = EventBus::new(2);
        let mut slow = bus.subscribe();
        for _ in 0..5 {
            bus.publish(event(EventKind::StepCompleted));
        }
        assert_eq!(slow.recv().await.unwrap_err(), RecvError::Lagged(3));
        assert!(slow.recv().await.is_ok());
        assert_eq!(bus.dropped_events(), 3);
    }

    #[test]
    fn callback_subscribers_get_every_event() {
        let bus = EventBus::new(16);
        let (tx, rx) = std::sync::mpsc::channel();
        let worker = bus.subscribe_fn(move |d| {
            if let Delivery::Event(e) = d {
                tx.send(e.kind).unwrap();
            }
        });
        bus.publish(event(EventKind::TaskStarted));
        bus.publish(event(EventKind::TaskCompleted));
        assert_eq!(rx.recv().unwrap(), EventKind::TaskStarted);
        assert_eq!(rx.recv().unwrap(), EventKind::TaskCompleted);
        drop(bus);
        worker.join().unwrap();
    }
}
