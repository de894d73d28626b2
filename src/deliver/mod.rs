//! Delivery: the dispatcher claims due outbox rows (or is handed them by
//! the commit that made them, see `handoff`), `request` prepares what
//! each subscription's target calls for, `http` sends it (`mail` for email
//! rules, grouped by `email`), the retry policy decides what happens next,
//! and the store records every attempt.

mod body;
mod dispatcher;
mod email;
mod git;
mod handoff;
mod http;
mod mail;
mod openlineage;
mod recorder;
mod request;
mod store_backoff;
mod wakeups;

pub use body::RequestBody;
pub use dispatcher::{Dispatcher, DispatcherParts};
pub use handoff::{Handoff, Reservation};
pub use http::{literal_host, Attempt, ClientError, HttpSender};
pub use mail::{MailError, Mailer};
pub use request::{prepare, PreparedRequest};
pub use wakeups::Wakeups;
