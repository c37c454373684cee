//! Task panic isolation, shared by both engines: a panicking task is caught, logged with its
//! task id and panic message, counted (`tasks_panicked`) and dropped; its core keeps running.
//!
//! [`Isolated`] wraps every spawned future (the io_uring executor's and the baseline's tokio
//! tasks alike). `catch_unwind` around a poll costs nothing while nothing panics (a landing pad,
//! no allocation), so the wrapper is on every task. A panic that escapes a core's loop itself (a
//! mailbox job, say) is not a task's: the engine catches it around the loop, drains the core and
//! `Runtime::join` reports it as [`EngineError::CorePanicked`](crate::EngineError::CorePanicked).

use std::any::Any;
use std::future::Future;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::pin::Pin;
use std::task::{Context, Poll};

/// The message of a panic payload (`panic!("...")` carries a `&str` or a `String`).
pub(crate) fn panic_message(payload: &(dyn Any + Send)) -> String {
    if let Some(s) = payload.downcast_ref::<&str>() {
        (*s).to_owned()
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s.clone()
    } else {
        "non-string panic payload".to_owned()
    }
}

pin_project_lite::pin_project! {
    /// A task's future, with panics caught: a panicking poll logs, counts and completes the
    /// task, whose owner (the executor, tokio) then drops the future.
    pub(crate) struct Isolated<F> {
        #[pin]
        future: F,
        task: u64,
        panicked: bool,
    }
}

impl<F> Isolated<F> {
    /// Wraps task `task`'s future (`task` is the id the log line names).
    pub(crate) fn new(task: u64, future: F) -> Self {
        Self {
            future,
            task,
            panicked: false,
        }
    }
}

impl<F: Future<Output = ()>> Future for Isolated<F> {
    type Output = ();

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let this = self.project();
        if *this.panicked {
            return Poll::Ready(());
        }
        let future = this.future;
        // AssertUnwindSafe: after a panic the future is never polled again (its owner drops
        // it), so no broken invariant inside it is observed; state it shares with other tasks
        // (`Rc<RefCell<..>>`) is the program's to keep consistent, as with a panicking thread.
        match catch_unwind(AssertUnwindSafe(|| future.poll(cx))) {
            Ok(p) => p,
            Err(payload) => {
                *this.panicked = true;
                report(*this.task, &*payload);
                Poll::Ready(())
            }
        }
    }
}

/// Logs and counts task `task`'s panic on the calling core.
fn report(task: u64, payload: &(dyn Any + Send)) {
    let core = crate::current_core();
    tracing::error!(
        task,
        core = ?core,
        panic = %panic_message(payload),
        "task panicked; it was dropped and its core keeps running"
    );
    crate::runtime::with_current_counters(crate::Counters::add_task_panicked);
}
