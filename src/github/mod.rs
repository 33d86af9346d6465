//! GitHub webhooks, the pure part: checking a delivery's signature (`signature`), reading the
//! facts a filter needs out of a payload (`facts`), glob pattern lists with `!` exclusions
//! (`patterns`), the event names Sluice knows (`events`) and deciding whether a `github`
//! trigger matches a delivery and with which params (`matching`). No IO, no clock: the server
//! records deliveries and creates runs, the scheduler's status service talks to GitHub.

pub mod events;
pub mod facts;
pub mod matching;
pub mod patterns;
pub mod signature;

pub use facts::EventFacts;
pub use matching::{Fired, StatusTarget, TriggerMatch, match_trigger};
pub use patterns::{PatternError, Patterns};
pub use signature::{SignatureError, verify_signature};
