//! The request for an OpenLineage subscription: the batch event's
//! `RunEvent` (see `core::openlineage`) as JSON, with a bearer token when
//! one is configured. Not signed: lineage servers verify no signature.

use super::body::RequestBody;
use super::request::{context, PreparedRequest, USER_AGENT};
use crate::core::openlineage::OpenLineage;
use crate::store::ClaimedDelivery;

pub(super) fn prepare(
    lineage: &OpenLineage,
    delivery: &ClaimedDelivery,
) -> Result<PreparedRequest, String> {
    let event = lineage.run_event(&context(delivery)?)?;
    let mut headers = vec![
        ("content-type".to_owned(), "application/json".to_owned()),
        ("user-agent".to_owned(), USER_AGENT.to_owned()),
    ];
    if let Some(key) = &lineage.api_key {
        headers.push(("authorization".to_owned(), format!("Bearer {key}")));
    }
    Ok(PreparedRequest {
        method: "POST".to_owned(),
        url: lineage.url.clone(),
        headers,
        body: RequestBody::Full(event.to_string().into_bytes()),
    })
}
