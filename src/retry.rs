//! The one retry policy for calls to other services (webhooks, the GitHub API, SMTP, model
//! APIs): which failures may pass, how long to wait before the next attempt (exponential
//! backoff with a cap and optional jitter, or the server's `Retry-After`, bounded), how many
//! attempts to make, and stopping at once when the caller is cancelled.
//!
//! `RetryPolicy::run` is the whole loop; callers say what one attempt is and whether its
//! failure is `Failure::Transient` or `Failure::Permanent`. Time comes from a `Clock`, so tests
//! check every wait without sleeping.

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

use chrono::{DateTime, Utc};
use reqwest::StatusCode;
use reqwest::header::{HeaderMap, RETRY_AFTER};
use tokio_util::sync::CancellationToken;

/// Where the policy reads the time and waits: the real clock in the runtime, a recording one in
/// tests.
pub trait Clock: Send + Sync {
    fn now(&self) -> DateTime<Utc>;
    /// A future that ends after `duration`.
    fn sleep(&self, duration: Duration) -> Pin<Box<dyn Future<Output = ()> + Send + 'static>>;
    /// A number in `[0, 1)` that spreads jittered waits.
    fn jitter_sample(&self) -> f64 {
        fastrand::f64()
    }
}

/// The wall clock and tokio's timer.
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> DateTime<Utc> {
        Utc::now()
    }

    fn sleep(&self, duration: Duration) -> Pin<Box<dyn Future<Output = ()> + Send + 'static>> {
        Box::pin(tokio::time::sleep(duration))
    }
}

/// How backoff waits are spread, so that many clients refused at once do not all come back at
/// the same moment.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Jitter {
    /// Exactly the backoff.
    #[default]
    None,
    /// Half the backoff, plus a random part of the other half.
    Equal,
}

/// How a call is repeated after a failure that may pass.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Attempts in all, the first included (0 counts as 1).
    pub max_attempts: u32,
    /// The wait after the first failed attempt; it doubles after each next one.
    pub first_backoff: Duration,
    /// The longest backoff (never below `first_backoff`).
    pub max_backoff: Duration,
    /// The longest wait a server's `Retry-After` can ask for.
    pub max_retry_after: Duration,
    pub jitter: Jitter,
}

/// When a server asked to be called again (`Retry-After`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RetryAfter {
    /// In this many seconds.
    Seconds(u64),
    /// At this time (an HTTP date).
    At(DateTime<Utc>),
}

impl RetryAfter {
    /// Reads a `Retry-After` value: whole seconds or an HTTP date; anything else is ignored.
    pub fn parse(value: &str) -> Option<RetryAfter> {
        let value = value.trim();
        if !value.is_empty() && value.bytes().all(|b| b.is_ascii_digit()) {
            // More seconds than a u64 holds is still "a very long time", capped later.
            return Some(RetryAfter::Seconds(value.parse().unwrap_or(u64::MAX)));
        }
        // IMF-fixdate (`Sun, 06 Nov 1994 08:49:37 GMT`) is a form of RFC 2822's date.
        DateTime::parse_from_rfc2822(value)
            .ok()
            .map(|at| RetryAfter::At(at.with_timezone(&Utc)))
    }

    /// The `Retry-After` header of an answer, if it has a readable one.
    pub fn from_headers(headers: &HeaderMap) -> Option<RetryAfter> {
        headers
            .get(RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(RetryAfter::parse)
    }

    /// How long to wait from `now`; a date already past asks for no wait.
    pub fn wait_from(self, now: DateTime<Utc>) -> Duration {
        match self {
            RetryAfter::Seconds(seconds) => Duration::from_secs(seconds),
            RetryAfter::At(at) => (at - now).to_std().unwrap_or(Duration::ZERO),
        }
    }
}

/// Whether an HTTP answer's status may pass on its own: a timeout (408), rate limiting (429)
/// or a server error — except 501, which says the server will never do this.
pub fn is_transient_status(status: StatusCode) -> bool {
    matches!(status.as_u16(), 408 | 429)
        || (status.is_server_error() && status != StatusCode::NOT_IMPLEMENTED)
}

/// How one attempt failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Failure<E> {
    /// It may pass: try again (after `retry_after`, when the server gave one).
    Transient {
        error: E,
        retry_after: Option<RetryAfter>,
    },
    /// Trying again cannot help.
    Permanent(E),
}

impl<E> Failure<E> {
    /// A failure that may pass, such as a lost connection or a timeout.
    pub fn transient(error: E) -> Self {
        Failure::Transient {
            error,
            retry_after: None,
        }
    }

    /// An HTTP answer that is not a success, classified by `is_transient_status`.
    pub fn from_status(status: StatusCode, retry_after: Option<RetryAfter>, error: E) -> Self {
        if is_transient_status(status) {
            Failure::Transient { error, retry_after }
        } else {
            Failure::Permanent(error)
        }
    }

    /// The same failure with its error replaced.
    pub fn map<F>(self, f: impl FnOnce(E) -> F) -> Failure<F> {
        match self {
            Failure::Transient { error, retry_after } => Failure::Transient {
                error: f(error),
                retry_after,
            },
            Failure::Permanent(error) => Failure::Permanent(f(error)),
        }
    }

    /// A failure to get an answer at all: a request that could not be built will not build
    /// next time; everything else (connecting, timeouts, reading the answer) may pass.
    pub fn from_request_error(source: &reqwest::Error, error: E) -> Self {
        if source.is_builder() {
            Failure::Permanent(error)
        } else {
            Failure::transient(error)
        }
    }
}

/// A call that succeeded, and on which attempt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Succeeded<T> {
    pub value: T,
    pub attempts: u32,
}

/// Why a call gave up.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RetryError<E, I = Infallible> {
    /// A permanent failure, after `attempts` attempts.
    Refused { error: E, attempts: u32 },
    /// Every attempt failed; `error` is the last one's.
    Exhausted { error: E, attempts: u32 },
    /// The cancellation token fired, during an attempt (which was dropped) or a wait.
    Cancelled,
    /// The caller's interruption ended a wait (`RetryPolicy::run_until`).
    Interrupted(I),
}

/// A failed attempt about to be followed by another, for the caller's log.
#[derive(Debug)]
pub struct Retrying<'a, E> {
    /// The number of the attempt that failed (1 for the first).
    pub attempt: u32,
    pub error: &'a E,
    /// How long the policy waits before the next attempt.
    pub wait: Duration,
}

impl RetryPolicy {
    /// The backoff after failed attempt `attempt` (1 for the first), before jitter:
    /// `first_backoff` doubled `attempt - 1` times, capped.
    pub fn backoff(&self, attempt: u32) -> Duration {
        let cap = self.max_backoff.max(self.first_backoff);
        2u32.checked_pow(attempt.saturating_sub(1))
            .and_then(|factor| self.first_backoff.checked_mul(factor))
            .map_or(cap, |backoff| backoff.min(cap))
    }

    /// The wait after failed attempt `attempt`: the jittered backoff, or the server's
    /// `Retry-After` (bounded by `max_retry_after`) when that is longer.
    pub fn wait(
        &self,
        attempt: u32,
        retry_after: Option<Duration>,
        jitter_sample: f64,
    ) -> Duration {
        let backoff = self.backoff(attempt);
        let backoff = match self.jitter {
            Jitter::None => backoff,
            Jitter::Equal => {
                let half = backoff / 2;
                half + half.mul_f64(jitter_sample.clamp(0.0, 1.0))
            }
        };
        retry_after.map_or(backoff, |asked| {
            asked.min(self.max_retry_after).max(backoff)
        })
    }

    /// Runs `attempt` (given its number, from 1) until it succeeds, fails permanently, the
    /// attempts run out or `cancel` fires. `on_retry` hears of each failure that is followed by
    /// another attempt, before the wait.
    pub async fn run<T, E, Op, Fut>(
        &self,
        clock: &dyn Clock,
        cancel: &CancellationToken,
        attempt: Op,
        on_retry: impl FnMut(&Retrying<'_, E>),
    ) -> Result<Succeeded<T>, RetryError<E>>
    where
        Op: FnMut(u32) -> Fut,
        Fut: Future<Output = Result<T, Failure<E>>>,
    {
        self.run_until(
            clock,
            cancel,
            std::future::pending::<Infallible>(),
            attempt,
            on_retry,
        )
        .await
    }

    /// `run`, where `interrupt` also ends a wait between attempts (never an attempt in flight),
    /// with its output: a newer request can take the place of one that is being retried
    /// without cutting a request short.
    pub async fn run_until<T, E, I, Op, Fut>(
        &self,
        clock: &dyn Clock,
        cancel: &CancellationToken,
        interrupt: impl Future<Output = I>,
        mut attempt: Op,
        mut on_retry: impl FnMut(&Retrying<'_, E>),
    ) -> Result<Succeeded<T>, RetryError<E, I>>
    where
        Op: FnMut(u32) -> Fut,
        Fut: Future<Output = Result<T, Failure<E>>>,
    {
        let mut interrupt = std::pin::pin!(interrupt);
        let max_attempts = self.max_attempts.max(1);
        let mut number = 1;
        loop {
            let outcome = tokio::select! {
                biased;
                _ = cancel.cancelled() => return Err(RetryError::Cancelled),
                outcome = attempt(number) => outcome,
            };
            let (error, retry_after) = match outcome {
                Ok(value) => {
                    return Ok(Succeeded {
                        value,
                        attempts: number,
                    });
                }
                Err(Failure::Permanent(error)) => {
                    return Err(RetryError::Refused {
                        error,
                        attempts: number,
                    });
                }
                Err(Failure::Transient { error, retry_after }) => (error, retry_after),
            };
            if number >= max_attempts {
                return Err(RetryError::Exhausted {
                    error,
                    attempts: number,
                });
            }
            let asked = retry_after.map(|r| r.wait_from(clock.now()));
            let wait = self.wait(number, asked, clock.jitter_sample());
            on_retry(&Retrying {
                attempt: number,
                error: &error,
                wait,
            });
            tokio::select! {
                biased;
                _ = cancel.cancelled() => return Err(RetryError::Cancelled),
                value = &mut interrupt => return Err(RetryError::Interrupted(value)),
                _ = clock.sleep(wait) => {}
            }
            number += 1;
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::VecDeque;
    use std::sync::{Arc, Mutex};

    use chrono::TimeZone;
    use tokio::sync::Notify;

    use super::*;

    /// A clock at a fixed time whose waits are recorded and end at once — or never, with
    /// `waits_forever`, after telling `waiting`.
    #[derive(Default)]
    struct FakeClock {
        waits: Mutex<Vec<Duration>>,
        waits_forever: bool,
        waiting: Arc<Notify>,
    }

    fn noon() -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 12, 6, 12, 0, 0)
            .single()
            .expect("a valid date")
    }

    impl Clock for FakeClock {
        fn now(&self) -> DateTime<Utc> {
            noon()
        }

        fn sleep(&self, duration: Duration) -> Pin<Box<dyn Future<Output = ()> + Send + 'static>> {
            self.waits.lock().expect("lock").push(duration);
            if self.waits_forever {
                self.waiting.notify_one();
                Box::pin(std::future::pending())
            } else {
                Box::pin(std::future::ready(()))
            }
        }

        fn jitter_sample(&self) -> f64 {
            0.5
        }
    }

    fn policy(max_attempts: u32) -> RetryPolicy {
        RetryPolicy {
            max_attempts,
            first_backoff: Duration::from_secs(1),
            max_backoff: Duration::from_secs(60),
            max_retry_after: Duration::from_secs(60),
            jitter: Jitter::None,
        }
    }

    /// An attempt that plays `script` in order, one outcome per attempt.
    fn scripted(
        script: Vec<std::result::Result<&'static str, Failure<&'static str>>>,
    ) -> impl FnMut(u32) -> std::future::Ready<std::result::Result<&'static str, Failure<&'static str>>>
    {
        let mut script = VecDeque::from(script);
        move |_| std::future::ready(script.pop_front().expect("no attempt beyond the script"))
    }

    #[test]
    fn retry_after_reads_seconds_and_http_dates() {
        assert_eq!(RetryAfter::parse(" 120 "), Some(RetryAfter::Seconds(120)));
        assert_eq!(
            RetryAfter::parse("99999999999999999999999"),
            Some(RetryAfter::Seconds(u64::MAX))
        );
        let at = RetryAfter::parse("Sun, 06 Dec 2026 12:00:30 GMT").expect("an HTTP date");
        assert_eq!(at.wait_from(noon()), Duration::from_secs(30));
        let past = RetryAfter::parse("Sun, 06 Dec 2026 11:59:00 GMT").expect("an HTTP date");
        assert_eq!(past.wait_from(noon()), Duration::ZERO);
        for junk in ["", "soon", "-5", "1.5", "12 s"] {
            assert_eq!(RetryAfter::parse(junk), None, "{junk:?}");
        }
        let mut headers = HeaderMap::new();
        headers.insert(RETRY_AFTER, "7".parse().expect("header"));
        assert_eq!(
            RetryAfter::from_headers(&headers),
            Some(RetryAfter::Seconds(7))
        );
        assert_eq!(RetryAfter::from_headers(&HeaderMap::new()), None);
    }

    #[test]
    fn transient_statuses_are_timeouts_rate_limits_and_server_errors_but_501() {
        let transient = |code: u16| is_transient_status(StatusCode::from_u16(code).expect("code"));
        for code in [408, 429, 500, 502, 503, 504, 599] {
            assert!(transient(code), "{code}");
        }
        for code in [400, 401, 403, 404, 409, 422, 501] {
            assert!(!transient(code), "{code}");
        }
    }

    #[test]
    fn backoff_doubles_up_to_its_cap_without_overflowing() {
        let policy = policy(10);
        let waits: Vec<u64> = (1..=8).map(|n| policy.backoff(n).as_secs()).collect();
        assert_eq!(waits, [1, 2, 4, 8, 16, 32, 60, 60]);
        assert_eq!(policy.backoff(u32::MAX), Duration::from_secs(60));
        let slow_start = RetryPolicy {
            first_backoff: Duration::from_secs(90),
            ..policy
        };
        assert_eq!(
            slow_start.backoff(3),
            Duration::from_secs(90),
            "the cap is never below the first wait"
        );
        let jittered = RetryPolicy {
            jitter: Jitter::Equal,
            ..policy
        };
        assert_eq!(jittered.wait(3, None, 0.0), Duration::from_secs(2));
        assert_eq!(jittered.wait(3, None, 0.5), Duration::from_secs(3));
        assert_eq!(jittered.wait(3, None, 7.0), Duration::from_secs(4));
    }

    #[test]
    fn retry_after_is_a_floor_bounded_by_its_maximum() {
        let policy = policy(10);
        assert_eq!(
            policy.wait(1, Some(Duration::from_secs(5)), 0.0),
            Duration::from_secs(5)
        );
        assert_eq!(
            policy.wait(3, Some(Duration::from_secs(1)), 0.0),
            Duration::from_secs(4),
            "a short Retry-After does not shorten the backoff"
        );
        assert_eq!(
            policy.wait(1, Some(Duration::from_secs(3600)), 0.0),
            Duration::from_secs(60)
        );
    }

    #[tokio::test]
    async fn exhausted_attempts_give_the_last_error_after_backing_off() {
        let clock = FakeClock::default();
        let mut heard = Vec::new();
        let result = policy(3)
            .run(
                &clock,
                &CancellationToken::new(),
                scripted(vec![
                    Err(Failure::transient("first")),
                    Err(Failure::Transient {
                        error: "second",
                        retry_after: RetryAfter::parse("Sun, 06 Dec 2026 12:00:09 GMT"),
                    }),
                    Err(Failure::transient("third")),
                ]),
                |r| heard.push((r.attempt, *r.error, r.wait)),
            )
            .await;
        assert_eq!(
            result,
            Err(RetryError::Exhausted {
                error: "third",
                attempts: 3
            })
        );
        let waits = [Duration::from_secs(1), Duration::from_secs(9)];
        assert_eq!(*clock.waits.lock().expect("lock"), waits);
        assert_eq!(
            heard,
            [(1, "first", waits[0]), (2, "second", waits[1])],
            "the last failure is returned, not announced as retried"
        );
    }

    #[tokio::test]
    async fn success_and_permanent_failures_end_at_once() {
        let clock = FakeClock::default();
        let cancel = CancellationToken::new();
        let succeeded = policy(5)
            .run(
                &clock,
                &cancel,
                scripted(vec![Err(Failure::transient("busy")), Ok("done")]),
                |_| {},
            )
            .await;
        assert_eq!(
            succeeded,
            Ok(Succeeded {
                value: "done",
                attempts: 2
            })
        );
        let refused = policy(5)
            .run(
                &clock,
                &cancel,
                scripted(vec![Err(Failure::from_status(
                    StatusCode::NOT_IMPLEMENTED,
                    Some(RetryAfter::Seconds(1)),
                    "no",
                ))]),
                |_| {},
            )
            .await;
        assert_eq!(
            refused,
            Err(RetryError::Refused {
                error: "no",
                attempts: 1
            })
        );
        assert_eq!(clock.waits.lock().expect("lock").len(), 1);
    }

    #[tokio::test]
    async fn cancelling_during_a_wait_ends_it_at_once() {
        let clock = FakeClock {
            waits_forever: true,
            ..FakeClock::default()
        };
        let cancel = CancellationToken::new();
        let waiting = clock.waiting.clone();
        let mut attempts = 0;
        let policy = policy(5);
        let run = policy.run(
            &clock,
            &cancel,
            |_| {
                attempts += 1;
                std::future::ready(Err::<(), _>(Failure::transient("down")))
            },
            |_| {},
        );
        let canceller = async {
            waiting.notified().await;
            cancel.cancel();
        };
        let (result, ()) = tokio::join!(run, canceller);
        assert_eq!(result, Err(RetryError::Cancelled));
        assert_eq!(attempts, 1, "no attempt after the cancellation");
    }

    #[tokio::test]
    async fn cancelling_drops_an_attempt_in_flight() {
        let clock = FakeClock::default();
        let cancel = CancellationToken::new();
        let started = Notify::new();
        let policy = policy(5);
        let run = policy.run(
            &clock,
            &cancel,
            |_| async {
                started.notify_one();
                std::future::pending::<std::result::Result<(), Failure<()>>>().await
            },
            |_| {},
        );
        let canceller = async {
            started.notified().await;
            cancel.cancel();
        };
        let (result, ()) = tokio::join!(run, canceller);
        assert_eq!(result, Err(RetryError::Cancelled));
    }

    #[tokio::test]
    async fn an_interruption_ends_a_wait_with_its_value() {
        let clock = FakeClock {
            waits_forever: true,
            ..FakeClock::default()
        };
        let waiting = clock.waiting.clone();
        let result = policy(5)
            .run_until(
                &clock,
                &CancellationToken::new(),
                async {
                    waiting.notified().await;
                    "newer"
                },
                |_| std::future::ready(Err::<(), _>(Failure::transient("down"))),
                |_| {},
            )
            .await;
        assert_eq!(result, Err(RetryError::Interrupted("newer")));
    }

    #[tokio::test]
    async fn an_interruption_never_cuts_an_attempt_short() {
        let result = policy(5)
            .run_until(
                &FakeClock::default(),
                &CancellationToken::new(),
                std::future::ready("newer"),
                scripted(vec![Ok("done")]),
                |_| {},
            )
            .await;
        assert_eq!(
            result,
            Ok(Succeeded {
                value: "done",
                attempts: 1
            })
        );
    }
}
