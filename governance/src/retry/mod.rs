//! Retries on the client: failure retry, backup requests, and the budget that caps both.
//!
//! - [`RetryLayer`]: when a call fails with an error the [`RetryPolicy`] marks retryable, call
//!   again after an exponential backoff with jitter, up to `max_attempts` calls and
//!   `max_duration` in total, never starting an attempt at or after the context's deadline
//!   ([`CallDeadline`](crate::CallDeadline)). With `attempt_timeout`, each attempt also has a
//!   deadline of its own (never later than the call's), and an attempt that reaches it fails
//!   with a [`TimeoutError`](crate::timeout::TimeoutError), retried if the policy says so.
//! - [`BackupLayer`]: when a call has not answered after `delay`, send the same request once
//!   more; the first successful reply wins and the other call is dropped (cancelled). It cuts tail
//!   latency for idempotent reads at the cost of extra load.
//! - [`RetryBudget`]: tower-style; every call deposits, every retry or backup withdraws, and a
//!   withdrawal is refused once retries would exceed `retry_ratio` of recent calls plus a small
//!   `min_per_sec` floor. It stops retries from multiplying load when a callee is struggling.
//!
//! Both layers are configured per method ([`PerMethod`]): retrying is only safe for methods whose
//! effects are idempotent, so nothing is retried unless configured. Both keep their state (budget,
//! jitter generator) on the core; nothing is shared across cores.

mod backup;
mod budget;
mod failure;

use std::collections::HashMap;
use std::time::Duration;

pub use backup::{Backup, BackupConfig, BackupLayer};
pub use budget::{BudgetConfig, RetryBudget};
pub use failure::{Retry, RetryLayer};

use crate::balance::FastRng;

/// A call context that names the method called (for per-method policies and breakers).
///
/// The client's context implements it over its `method` field, the server's over `method()`.
pub trait CallMethod {
    /// The method name.
    fn method(&self) -> &str;
}

/// Which errors may be retried.
pub trait RetryPolicy<E> {
    /// Whether a call that failed with `error` may be sent again. Say yes only for errors after
    /// which a second attempt can succeed and cannot apply the request twice (connect failures,
    /// "overloaded" rejections, or anything for idempotent methods).
    fn is_retryable(&self, error: &E) -> bool;
}

impl<E, F: Fn(&E) -> bool> RetryPolicy<E> for F {
    fn is_retryable(&self, error: &E) -> bool {
        self(error)
    }
}

/// Exponential backoff with jitter between attempts.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Backoff {
    /// Wait before the first retry (before jitter). Default 10 ms. `ZERO` retries at once.
    pub initial: Duration,
    /// Upper bound of the wait (before jitter). Default 1 s.
    pub max: Duration,
    /// Growth factor per retry. Default 2.0.
    pub multiplier: f64,
    /// Share of each wait that is randomised, in `[0, 1]`: the wait is drawn uniformly from
    /// `[d * (1 - jitter), d]`. Default 0.5. Jitter spreads the retries of many clients that
    /// failed together, so they do not hit the callee in lockstep; 1.0 is "full jitter".
    pub jitter: f64,
}

impl Default for Backoff {
    fn default() -> Self {
        Self {
            initial: Duration::from_millis(10),
            max: Duration::from_secs(1),
            multiplier: 2.0,
            jitter: 0.5,
        }
    }
}

impl Backoff {
    /// No wait between attempts.
    pub const NONE: Self = Self {
        initial: Duration::ZERO,
        max: Duration::ZERO,
        multiplier: 1.0,
        jitter: 0.0,
    };

    /// The wait before retry number `retry` (1 for the first retry), drawn with `rng`.
    pub fn delay(&self, retry: u32, rng: &FastRng) -> Duration {
        let exp = self
            .multiplier
            .max(1.0)
            .powi(i32::try_from(retry.saturating_sub(1)).unwrap_or(i32::MAX));
        let base = self.initial.as_secs_f64() * exp;
        let capped = base.min(self.max.as_secs_f64());
        let jitter = self.jitter.clamp(0.0, 1.0);
        let d = capped * (1.0 - jitter * rng.next_f64());
        Duration::try_from_secs_f64(d).unwrap_or(self.max)
    }
}

/// Configuration of failure retry for a method.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RetryConfig {
    /// Calls in total, the first included. Default 3 (Kitex's default of 2 retries). 1 disables
    /// retrying.
    pub max_attempts: u32,
    /// No retry starts later than this after the first attempt began. Default `None` (only the
    /// call's deadline bounds it). Bounds the worst case of a call without a deadline.
    pub max_duration: Option<Duration>,
    /// Waits between attempts. Default [`Backoff::default`].
    pub backoff: Backoff,
    /// Longest one attempt may take (Kitex's RPC timeout, which applies to each attempt, while
    /// `max_duration` and the call's deadline bound them all). An attempt past it is cancelled
    /// and fails with a [`TimeoutError`](crate::timeout::TimeoutError) (the client's
    /// `ClientError::Timeout`), which is retried when the [`RetryPolicy`] accepts it. The
    /// attempt's deadline is `min(attempt start + attempt_timeout, the call's deadline)`, and it
    /// is the deadline the attempt's context carries (a client sends it to the server). Default
    /// `None`: attempts share the call's deadline.
    pub attempt_timeout: Option<Duration>,
}

impl Default for RetryConfig {
    fn default() -> Self {
        Self {
            max_attempts: 3,
            max_duration: None,
            backoff: Backoff::default(),
            attempt_timeout: None,
        }
    }
}

impl RetryConfig {
    /// Sets [`RetryConfig::attempt_timeout`].
    pub fn attempt_timeout(mut self, timeout: Duration) -> Self {
        self.attempt_timeout = Some(timeout);
        self
    }
}

/// A setting per method: a default for every method, and overrides (or exclusions) by name.
#[derive(Debug, Clone)]
pub struct PerMethod<T> {
    default: Option<T>,
    methods: HashMap<String, Option<T>>,
}

impl<T> Default for PerMethod<T> {
    fn default() -> Self {
        Self::none()
    }
}

impl<T> PerMethod<T> {
    /// No method has the setting (add some with [`PerMethod::method`]).
    pub fn none() -> Self {
        Self {
            default: None,
            methods: HashMap::new(),
        }
    }

    /// Every method has `setting` unless overridden.
    pub fn all(setting: T) -> Self {
        Self {
            default: Some(setting),
            methods: HashMap::new(),
        }
    }

    /// `method` has `setting`.
    pub fn method(mut self, method: impl Into<String>, setting: T) -> Self {
        self.methods.insert(method.into(), Some(setting));
        self
    }

    /// `method` has no setting, whatever the default.
    pub fn except(mut self, method: impl Into<String>) -> Self {
        self.methods.insert(method.into(), None);
        self
    }

    /// Whether no method has the setting (the stage can be left out of a pipeline).
    pub fn is_none(&self) -> bool {
        self.default.is_none() && self.methods.values().all(Option::is_none)
    }

    /// The setting of `method`.
    pub fn get(&self, method: &str) -> Option<&T> {
        match self.methods.get(method) {
            Some(s) => s.as_ref(),
            None => self.default.as_ref(),
        }
    }
}

impl<T> From<T> for PerMethod<T> {
    fn from(setting: T) -> Self {
        Self::all(setting)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_caps_and_jitters_within_bounds() {
        let b = Backoff {
            initial: Duration::from_millis(10),
            max: Duration::from_millis(50),
            multiplier: 2.0,
            jitter: 0.5,
        };
        let rng = FastRng::new(1);
        for _ in 0..100 {
            let d1 = b.delay(1, &rng);
            assert!(d1 >= Duration::from_millis(5) && d1 <= Duration::from_millis(10));
            let d3 = b.delay(3, &rng);
            assert!(d3 >= Duration::from_millis(20) && d3 <= Duration::from_millis(40));
            let d9 = b.delay(9, &rng);
            assert!(d9 >= Duration::from_millis(25) && d9 <= Duration::from_millis(50));
        }
        let exact = Backoff { jitter: 0.0, ..b };
        assert_eq!(exact.delay(2, &rng), Duration::from_millis(20));
        assert_eq!(Backoff::NONE.delay(5, &rng), Duration::ZERO);
    }

    #[test]
    fn per_method_overrides_the_default() {
        let p = PerMethod::all(1).method("b", 2).except("c");
        assert_eq!(p.get("a"), Some(&1));
        assert_eq!(p.get("b"), Some(&2));
        assert_eq!(p.get("c"), None);
        assert_eq!(PerMethod::none().method("b", 2).get("a"), None);
    }
}
