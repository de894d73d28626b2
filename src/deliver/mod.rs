//! Delivery: the dispatcher claims due outbox rows, the webhook client sends
//! them, the retry policy decides what happens next, and the store records
//! every attempt.

mod dispatcher;
mod webhook;

pub use dispatcher::Dispatcher;
pub use webhook::{Attempt, WebhookClient};
