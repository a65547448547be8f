//! How a backend stream takes messages from its queue: in batches when busy, at once when
//! quiet.
//!
//! tonic encodes every message the stream yields without waiting into one HTTP/2 write,
//! and each write costs a system call here and a wake-up of the backend. Events arrive
//! spread out (each socket's read is its own wake-up), so without help every event would
//! leave alone. A stream that went idle less than `window` ago is busy: new messages are
//! held until `window` after that moment, or until `BATCH_MAX` are held, and then leave
//! together. A stream idle for longer sends at once, so a quiet stream adds no delay.
//! With no window, a stream woken by a few messages lets the tasks already waiting to run
//! go first (one turn of the scheduler): those are typically other sockets' events of the
//! same batch of readiness.

use std::collections::VecDeque;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::sync::mpsc;
use tokio::time::{Instant, Sleep};

/// Most messages one batch holds back: 32 events of a few hundred bytes fill a write
/// without making the first wait for a large one. The held messages are still charged to
/// the stream's queue budget, so holding them costs no memory beyond its bounds.
pub(super) const BATCH_MAX: usize = 32;

pub(super) struct Batches<T> {
    rx: mpsc::Receiver<T>,
    window: Duration,
    /// The last poll found the queue empty, at `idle_at`.
    idle: bool,
    idle_at: Instant,
    /// While holding: when the batch leaves at the latest, and what it holds.
    hold: Option<Pin<Box<Sleep>>>,
    held: VecDeque<T>,
    /// Without a window: this wake-up has already let the others go first.
    deferred: bool,
}

impl<T> Batches<T> {
    pub(super) fn new(rx: mpsc::Receiver<T>, window: Duration) -> Self {
        let held = VecDeque::new();
        Self { rx, window, idle: true, idle_at: Instant::now(), hold: None, held, deferred: false }
    }

    /// The next message to send; `None` once the queue is closed and everything is sent.
    pub(super) fn poll_next(&mut self, cx: &mut Context<'_>) -> Poll<Option<T>> {
        if self.hold.is_none()
            && self.idle
            && !self.window.is_zero()
            && !self.rx.is_empty()
            && self.idle_at.elapsed() < self.window
        {
            self.hold = Some(Box::pin(tokio::time::sleep_until(self.idle_at + self.window)));
        }
        if self.hold.is_some() {
            if self.poll_hold(cx).is_pending() {
                return Poll::Pending;
            }
            self.hold = None;
            self.idle &= self.held.is_empty();
        }
        if let Some(m) = self.held.pop_front() {
            return Poll::Ready(Some(m));
        }
        if self.window.is_zero() && self.idle && !self.deferred && (1..BATCH_MAX).contains(&self.rx.len()) {
            self.deferred = true;
            cx.waker().wake_by_ref();
            return Poll::Pending;
        }
        self.deferred = false;
        match self.rx.poll_recv(cx) {
            Poll::Ready(Some(m)) => {
                self.idle = false;
                Poll::Ready(Some(m))
            }
            Poll::Ready(None) => Poll::Ready(None),
            Poll::Pending => {
                if !self.idle {
                    self.idle = true;
                    self.idle_at = Instant::now();
                }
                Poll::Pending
            }
        }
    }

    /// Takes queued messages into the batch until it is full, the queue is empty or
    /// closed, or the window ends. Ready once the batch should leave.
    fn poll_hold(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        while self.held.len() < BATCH_MAX {
            match self.rx.poll_recv(cx) {
                Poll::Ready(Some(m)) => self.held.push_back(m),
                Poll::Ready(None) => return Poll::Ready(()),
                Poll::Pending => {
                    return match self.hold.as_mut() {
                        Some(timer) => timer.as_mut().poll(cx),
                        None => Poll::Ready(()),
                    };
                }
            }
        }
        Poll::Ready(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures::task::noop_waker_ref;

    const WINDOW: Duration = Duration::from_millis(10);

    async fn next(b: &mut Batches<u32>) -> Option<u32> {
        std::future::poll_fn(|cx| b.poll_next(cx)).await
    }

    fn poll_once(b: &mut Batches<u32>) -> Poll<Option<u32>> {
        b.poll_next(&mut Context::from_waker(noop_waker_ref()))
    }

    /// A stream that has sent one message and found its queue empty: busy from then on.
    async fn busy(window: Duration) -> (mpsc::Sender<u32>, Batches<u32>) {
        let (tx, rx) = mpsc::channel(100);
        let mut b = Batches::new(rx, window);
        tokio::time::advance(window * 2).await;
        tx.send(0).await.unwrap();
        assert_eq!(next(&mut b).await, Some(0));
        assert_eq!(poll_once(&mut b), Poll::Pending);
        (tx, b)
    }

    #[tokio::test(start_paused = true)]
    async fn a_busy_stream_holds_new_messages_until_its_window_ends_then_sends_them_together() {
        let (tx, mut b) = busy(WINDOW).await;
        let idle_since = Instant::now();
        tx.send(1).await.unwrap();
        tx.send(2).await.unwrap();
        assert_eq!(poll_once(&mut b), Poll::Pending, "held, not sent");
        assert_eq!(next(&mut b).await, Some(1));
        assert_eq!(idle_since.elapsed(), WINDOW, "the batch left when the window ended");
        assert_eq!(poll_once(&mut b), Poll::Ready(Some(2)), "the rest of the batch leaves with it");
    }

    #[tokio::test(start_paused = true)]
    async fn a_full_batch_leaves_at_once_and_order_is_kept() {
        let (tx, mut b) = busy(WINDOW).await;
        let started = Instant::now();
        let n = BATCH_MAX as u32 + 8;
        for i in 1..=n {
            tx.send(i).await.unwrap();
        }
        for i in 1..=n {
            assert_eq!(poll_once(&mut b), Poll::Ready(Some(i)), "message {i}");
        }
        assert_eq!(started.elapsed(), Duration::ZERO);
    }

    #[tokio::test(start_paused = true)]
    async fn a_stream_idle_longer_than_its_window_sends_at_once() {
        let (tx, mut b) = busy(WINDOW).await;
        tokio::time::advance(WINDOW).await;
        tx.send(1).await.unwrap();
        assert_eq!(poll_once(&mut b), Poll::Ready(Some(1)));
    }

    #[tokio::test(start_paused = true)]
    async fn without_a_window_nothing_waits_for_a_timer() {
        let (tx, mut b) = busy(Duration::ZERO).await;
        let started = Instant::now();
        tx.send(1).await.unwrap();
        tx.send(2).await.unwrap();
        // One turn of the scheduler for the others, then the messages in order.
        assert_eq!(poll_once(&mut b), Poll::Pending);
        assert_eq!(poll_once(&mut b), Poll::Ready(Some(1)));
        assert_eq!(poll_once(&mut b), Poll::Ready(Some(2)));
        assert_eq!(started.elapsed(), Duration::ZERO);
    }

    #[tokio::test(start_paused = true)]
    async fn a_held_batch_is_sent_before_the_end_when_the_queue_closes() {
        let (tx, mut b) = busy(WINDOW).await;
        tx.send(1).await.unwrap();
        assert_eq!(poll_once(&mut b), Poll::Pending);
        drop(tx);
        assert_eq!(poll_once(&mut b), Poll::Ready(Some(1)));
        assert_eq!(poll_once(&mut b), Poll::Ready(None));
    }
}
