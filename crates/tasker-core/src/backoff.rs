//! Retry rules as pure functions: when a failed step runs again and after how long.
//! The random part of jitter is a parameter so the rules are deterministic to test.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::duration::serde_human;

/// Exponential backoff: `initial * multiplier^(attempt-1)`, capped at `max`, minus up
/// to `jitter` of itself so that retries of many steps spread out instead of aligning.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Backoff {
    #[serde(with = "serde_human")]
    pub initial: Duration,
    #[serde(with = "serde_human")]
    pub max: Duration,
    pub multiplier: f64,
    /// Fraction in `[0, 1]` of the delay that may be taken off at random.
    pub jitter: f64,
}

impl Default for Backoff {
    fn default() -> Self {
        Self {
            initial: Duration::from_secs(1),
            max: Duration::from_secs(300),
            multiplier: 2.0,
            jitter: 0.2,
        }
    }
}

impl Backoff {
    /// The delay before attempt `attempt + 1`, after `attempt` (≥ 1) failed, without jitter.
    pub fn base_delay(&self, attempt: u32) -> Duration {
        let exp = attempt.saturating_sub(1).min(1024) as i32;
        let secs = self.initial.as_secs_f64() * self.multiplier.powi(exp);
        let max = self.max.as_secs_f64();
        Duration::from_secs_f64(if secs.is_finite() { secs.min(max) } else { max })
    }

    /// The delay with jitter applied; `sample` is uniform in `[0, 1)`.
    pub fn delay(&self, attempt: u32, sample: f64) -> Duration {
        let base = self.base_delay(attempt);
        let cut = self.jitter.clamp(0.0, 1.0) * sample.clamp(0.0, 1.0);
        base.mul_f64(1.0 - cut)
    }
}

/// How a step is retried. `max_attempts` counts executions (1 = never retry);
/// `retryable: false` means the first failure is final.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RetryPolicy {
    pub max_attempts: u32,
    pub retryable: bool,
    pub backoff: Backoff,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self {
            max_attempts: 3,
            retryable: true,
            backoff: Backoff::default(),
        }
    }
}

/// What to do after a failed attempt.
#[derive(Clone, Debug, PartialEq)]
pub enum RetryDecision {
    /// Run again after this delay.
    RetryAfter(Duration),
    /// Stop: the step is in error.
    GiveUp(GiveUpReason),
}

/// Why a failure is final.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum GiveUpReason {
    /// The handler said the error is permanent.
    PermanentError,
    /// The step's policy says `retryable: false`.
    NotRetryable,
    /// `max_attempts` executions have failed.
    AttemptsExhausted { max_attempts: u32 },
}

impl std::fmt::Display for GiveUpReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            GiveUpReason::PermanentError => f.write_str("permanent error"),
            GiveUpReason::NotRetryable => f.write_str("step is not retryable"),
            GiveUpReason::AttemptsExhausted { max_attempts } => {
                write!(f, "attempts exhausted ({max_attempts} of {max_attempts})")
            }
        }
    }
}

impl RetryPolicy {
    /// Decides after attempt number `attempt` (1-based) failed. A handler-requested
    /// delay (`retry_after`) replaces the backoff but never the attempt limit.
    pub fn decide(
        &self,
        attempt: u32,
        retryable_error: bool,
        retry_after: Option<Duration>,
        sample: f64,
    ) -> RetryDecision {
        if !retryable_error {
            return RetryDecision::GiveUp(GiveUpReason::PermanentError);
        }
        if !self.retryable {
            return RetryDecision::GiveUp(GiveUpReason::NotRetryable);
        }
        if attempt >= self.max_attempts {
            return RetryDecision::GiveUp(GiveUpReason::AttemptsExhausted {
                max_attempts: self.max_attempts,
            });
        }
        RetryDecision::RetryAfter(
            retry_after.unwrap_or_else(|| self.backoff.delay(attempt, sample)),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn doubles_then_caps() {
        let b = Backoff {
            initial: Duration::from_millis(100),
            max: Duration::from_millis(500),
            multiplier: 2.0,
            jitter: 0.0,
        };
        let delays: Vec<_> = (1..=5).map(|a| b.base_delay(a).as_millis()).collect();
        assert_eq!(delays, [100, 200, 400, 500, 500]);
    }

    #[test]
    fn decisions() {
        let p = RetryPolicy::default();
        assert_eq!(
            p.decide(1, false, None, 0.0),
            RetryDecision::GiveUp(GiveUpReason::PermanentError)
        );
        assert_eq!(
            p.decide(3, true, None, 0.0),
            RetryDecision::GiveUp(GiveUpReason::AttemptsExhausted { max_attempts: 3 })
        );
        assert_eq!(
            p.decide(1, true, Some(Duration::from_secs(30)), 0.5),
            RetryDecision::RetryAfter(Duration::from_secs(30))
        );
        assert_eq!(
            p.decide(2, true, None, 0.0),
            RetryDecision::RetryAfter(Duration::from_secs(2))
        );
        let once = RetryPolicy {
            max_attempts: 1,
            ..RetryPolicy::default()
        };
        assert!(matches!(
            once.decide(1, true, None, 0.0),
            RetryDecision::GiveUp(_)
        ));
        let never = RetryPolicy {
            retryable: false,
            ..RetryPolicy::default()
        };
        assert_eq!(
            never.decide(1, true, None, 0.0),
            RetryDecision::GiveUp(GiveUpReason::NotRetryable)
        );
    }

    fn backoffs() -> impl Strategy<Value = Backoff> {
        (1u64..10_000, 1u64..1_000_000, 1.0f64..10.0, 0.0f64..=1.0).prop_map(
            |(initial, max, multiplier, jitter)| Backoff {
                initial: Duration::from_millis(initial),
                max: Duration::from_millis(initial.max(max)),
                multiplier,
                jitter,
            },
        )
    }

    proptest! {
        #[test]
        fn base_delay_is_monotone_and_capped(b in backoffs(), attempt in 1u32..200) {
            let d1 = b.base_delay(attempt);
            let d2 = b.base_delay(attempt + 1);
            prop_assert!(d1 <= d2, "{d1:?} > {d2:?}");
            prop_assert!(d2 <= b.max);
            prop_assert!(b.base_delay(1) >= b.initial.min(b.max) - Duration::from_nanos(1));
        }

        #[test]
        fn jitter_stays_in_bounds(b in backoffs(), attempt in 1u32..200, sample in 0.0f64..1.0) {
            let base = b.base_delay(attempt);
            let d = b.delay(attempt, sample);
            prop_assert!(d <= base);
            prop_assert!(d >= base.mul_f64(1.0 - b.jitter) - Duration::from_nanos(1));
        }
    }
}
