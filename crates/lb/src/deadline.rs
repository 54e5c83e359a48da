//! A deadline moved with every request and reached rarely. Moving it only records when it is
//! due; the timer under it stays where it is and, when it fires early, is moved then. So a
//! request costs no timer registration, and the runtime is not woken to learn of a nearer
//! timer, which a fresh timeout per request would do.

use std::pin::Pin;
use std::task::{Context, Poll, ready};

use tokio::time::{Instant, Sleep};

pub(crate) struct Deadline {
    timer: Pin<Box<Sleep>>,
    due: Instant,
}

impl Deadline {
    /// A deadline due at `due`.
    pub(crate) fn new(due: Instant) -> Deadline {
        Deadline {
            timer: Box::pin(tokio::time::sleep_until(due)),
            due,
        }
    }

    /// Makes the deadline due at `due`; the timer moves only when it would fire too late, or
    /// already fired.
    pub(crate) fn set(&mut self, due: Instant) {
        self.due = due;
        if self.timer.deadline() > due || self.timer.is_elapsed() {
            self.timer.as_mut().reset(due);
        }
    }

    /// Ready once the deadline is reached.
    pub(crate) fn poll_reached(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        loop {
            ready!(self.timer.as_mut().poll(cx));
            if Instant::now() >= self.due {
                return Poll::Ready(());
            }
            self.timer.as_mut().reset(self.due);
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[tokio::test(start_paused = true)]
    async fn fires_when_due_however_often_it_moved() {
        let start = Instant::now();
        let mut deadline = Deadline::new(start + Duration::from_secs(10));
        for second in 1..=5 {
            tokio::time::advance(Duration::from_secs(1)).await;
            deadline.set(start + Duration::from_secs(10 + second));
        }
        std::future::poll_fn(|cx| deadline.poll_reached(cx)).await;
        assert_eq!(start.elapsed(), Duration::from_secs(15));
        // A nearer deadline moves the timer back.
        deadline.set(Instant::now() + Duration::from_secs(20));
        deadline.set(Instant::now() + Duration::from_secs(2));
        std::future::poll_fn(|cx| deadline.poll_reached(cx)).await;
        assert_eq!(start.elapsed(), Duration::from_secs(17));
    }
}
