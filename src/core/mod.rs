//! The domain: events, the batch state machine, subscription matching,
//! the webhook envelope and signature, the retry policy, date arithmetic
//! that cannot overflow.
//!
//! Nothing in here does I/O or reads the clock; callers pass "now" in. That
//! keeps every rule unit-testable and lets tests drive time by hand.

pub mod archive;
pub mod batch;
pub mod cloudevent;
pub mod document;
pub mod egress;
pub mod email;
pub mod event;
pub mod filter;
pub mod gate;
pub mod hex;
pub mod model;
pub mod openlineage;
pub mod retry;
pub mod schedule;
pub mod signature;
pub mod silence;
pub mod stall;
pub mod subscription;
pub mod template;
pub mod time;
pub mod validate;
