//! Delivery: the dispatcher claims due outbox rows, `request` prepares what
//! each subscription's target calls for, `http` sends it, the retry policy
//! decides what happens next, and the store records every attempt.

mod dispatcher;
mod http;
mod request;

pub use dispatcher::Dispatcher;
pub use http::{Attempt, HttpSender};
pub use request::{prepare, PreparedRequest};
