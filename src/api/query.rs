//! `herald.v1.QueryService`: read batch state.

use base64::engine::general_purpose::URL_SAFE_NO_PAD as TOKEN;
use base64::Engine;
use tonic::{Request, Response, Status};

use super::convert::{batch_state_from_proto, batch_to_proto};
use super::error::ApiError;
use super::pb::{self, query_service_server::QueryService};
use crate::core::validate::{parse_id, parse_optional_id, FieldError};
use crate::store::{BatchFilter, Store};

const DEFAULT_PAGE_SIZE: u32 = 100;
const MAX_PAGE_SIZE: u32 = 1000;

pub struct QueryApi {
    store: Store,
}

impl QueryApi {
    pub fn new(store: Store) -> Self {
        Self { store }
    }
}

#[tonic::async_trait]
impl QueryService for QueryApi {
    async fn get_batch(
        &self,
        request: Request<pb::GetBatchRequest>,
    ) -> Result<Response<pb::Batch>, Status> {
        let batch_id =
            parse_id("batch_id", &request.into_inner().batch_id).map_err(ApiError::from)?;
        let record = self
            .store
            .get_batch(&batch_id)
            .await
            .map_err(ApiError::from)?;
        let record =
            record.ok_or_else(|| ApiError::NotFound(format!("batch_id: no batch `{batch_id}`")))?;
        Ok(Response::new(batch_to_proto(&record)))
    }

    async fn list_batches(
        &self,
        request: Request<pb::ListBatchesRequest>,
    ) -> Result<Response<pb::ListBatchesResponse>, Status> {
        let r = request.into_inner();
        let (filter, page_size, after) = parse_list(&r).map_err(ApiError::from)?;
        let page = self
            .store
            .list_batches(&filter, page_size, after)
            .await
            .map_err(ApiError::from)?;
        Ok(Response::new(pb::ListBatchesResponse {
            batches: page.batches.iter().map(batch_to_proto).collect(),
            next_page_token: page.next.map(encode_token).unwrap_or_default(),
        }))
    }
}

type ListArgs = (BatchFilter, usize, Option<(i64, String)>);

fn parse_list(r: &pb::ListBatchesRequest) -> Result<ListArgs, FieldError> {
    let filter = BatchFilter {
        environment_id: parse_optional_id("environment_id", &r.environment_id)?,
        project_id: parse_optional_id("project_id", &r.project_id)?,
        cube_id: parse_optional_id("cube_id", &r.cube_id)?,
        state: batch_state_from_proto("state", r.state)?,
    };
    let page_size = match r.page_size {
        0 => DEFAULT_PAGE_SIZE,
        n if n > MAX_PAGE_SIZE => {
            return Err(FieldError::new(
                "page_size",
                format!("{n} is more than the maximum {MAX_PAGE_SIZE}"),
            ))
        }
        n => n,
    };
    let after = match r.page_token.as_str() {
        "" => None,
        token => Some(decode_token(token)?),
    };
    Ok((filter, page_size as usize, after))
}

fn encode_token((updated_at, batch_id): (i64, String)) -> String {
    TOKEN.encode(format!("{updated_at}:{batch_id}"))
}

fn decode_token(token: &str) -> Result<(i64, String), FieldError> {
    let invalid = || FieldError::new("page_token", "is not a token from a previous response");
    let bytes = TOKEN.decode(token).map_err(|_| invalid())?;
    let text = String::from_utf8(bytes).map_err(|_| invalid())?;
    let (at, id) = text.split_once(':').ok_or_else(invalid)?;
    Ok((at.parse().map_err(|_| invalid())?, id.to_owned()))
}
