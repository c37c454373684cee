//! Timer structure tests of the io_uring engine: what a core keeps for its timers is bounded by
//! the timers that are live, not by every timer ever armed (a dropped `Sleep` leaves nothing
//! behind, even with a long-lived timer in front of it).

mod common;

use std::future::{poll_fn, Future};
use std::pin::pin;
use std::task::Poll;
use std::time::{Duration, Instant};

use common::run;
use ringrpc_engine::uring::{Sleep, Uring};
use ringrpc_engine::Engine;

/// Timers armed and dropped by [`dropped_timers_leave_nothing`].
const ARMED_AND_DROPPED: u64 = 10_000_000;
/// How often that test checks the structure's size while it runs (so the old structure fails
/// after the first million instead of after ten).
const CHECK_EVERY: u64 = 1_000_000;

/// Polls `sleep` once with the calling task's waker; it must stay pending (arms the timer).
async fn arm(sleep: &mut std::pin::Pin<&mut Sleep>) {
    poll_fn(|cx| {
        assert!(sleep.as_mut().poll(cx).is_pending(), "a 600 s sleep fired");
        Poll::Ready(())
    })
    .await;
}

/// 10 million 600 s sleeps armed and dropped behind one live sleep that is due first: the core's
/// timer structure holds the live one only.
#[test]
fn dropped_timers_leave_nothing() {
    let sizes = run::<Uring, _, _>(1, || async {
        let live = Uring::sleep(Duration::from_secs(300));
        let mut live = pin!(live);
        arm(&mut live).await;
        assert_eq!(Sleep::timers_armed(), 1);
        let mut sizes = Vec::new();
        let deadline = Instant::now() + Duration::from_secs(600);
        for i in 1..=ARMED_AND_DROPPED {
            {
                let mut sleep = pin!(Uring::sleep_until(deadline));
                arm(&mut sleep).await;
            }
            if i % CHECK_EVERY == 0 {
                let armed = Sleep::timers_armed();
                sizes.push((i, armed));
                if armed > 1 {
                    break;
                }
            }
        }
        sizes
    });
    for (dropped, armed) in &sizes {
        assert!(
            *armed <= 1,
            "after {dropped} sleeps armed and dropped, {armed} timer entries remain"
        );
    }
    assert_eq!(sizes.len() as u64, ARMED_AND_DROPPED / CHECK_EVERY);
}

/// The live sleep in front still fires, and a fired sleep polled again stays complete.
#[test]
fn live_timer_fires_after_drops() {
    run::<Uring, _, _>(1, || async {
        let start = Instant::now();
        let mut live = pin!(Uring::sleep(Duration::from_millis(20)));
        arm(&mut live).await;
        for _ in 0..100_000 {
            let mut sleep = pin!(Uring::sleep(Duration::from_secs(600)));
            arm(&mut sleep).await;
        }
        live.as_mut().await;
        assert!(start.elapsed() >= Duration::from_millis(20));
        assert_eq!(Sleep::timers_armed(), 0);
        live.as_mut().await;
    });
}

/// `Sleep::reset` moves an armed sleep later, earlier, and re-arms a completed one.
#[test]
fn reset_moves_a_sleep() {
    run::<Uring, _, _>(1, || async {
        let start = Instant::now();
        let mut sleep = pin!(Uring::sleep(Duration::from_millis(5)));
        arm(&mut sleep).await;
        sleep.reset(start + Duration::from_millis(40));
        assert_eq!(Sleep::timers_armed(), 1, "moved in place, not armed twice");
        sleep.as_mut().await;
        assert!(start.elapsed() >= Duration::from_millis(40));
        // Completed, then reset: waits again.
        let again = Instant::now();
        sleep.reset(again + Duration::from_millis(10));
        sleep.as_mut().await;
        assert!(again.elapsed() >= Duration::from_millis(10));
        // Reset far away and then near: the near deadline wins.
        let near = Instant::now();
        sleep.reset(near + Duration::from_secs(600));
        arm(&mut sleep).await;
        sleep.reset(near + Duration::from_millis(5));
        sleep.as_mut().await;
        assert!(near.elapsed() < Duration::from_secs(60));
        assert_eq!(Sleep::timers_armed(), 0);
    });
}
