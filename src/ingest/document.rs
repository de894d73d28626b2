//! Preparing a project document before its job reaches the committer: the
//! digest, the compressed form, the document's model and the project's
//! previous model. This is the heavy work of a publish (tens of megabytes
//! to hash, deflate and parse); it runs on a blocking thread, outside the
//! writer, so a large publish never holds up other ingests. The received
//! bytes are dropped here: from now on only the compressed form travels.
//!
//! The previous model is read from the project's newest stored document as
//! it is now; the committer checks that no newer one was committed since
//! (see `apply::previous_models`) and reads it again in the rare case one
//! was.

use std::io::BufReader;
use std::sync::Arc;

use bytes::Bytes;
use sha2::{Digest, Sha256};

use crate::core::document::{PreparedDocument, Previous, StoredDocument};
use crate::core::event::{Event, Payload};
use crate::core::model::{model_of, Model};
use crate::store::{Store, StoreError};

/// Prepares the document of a project event, if it carries one.
pub(super) async fn prepare(store: &Store, event: &mut Event) -> Result<(), StoreError> {
    let Payload::Project(project) = &mut event.payload else {
        return Ok(());
    };
    if project.xml.is_empty() {
        return Ok(());
    }
    let latest = store.latest_document(&project.project_id).await?;
    let xml = std::mem::take(&mut project.xml);
    let event_id = event.event_id.clone();
    let (digest, document) =
        tokio::task::spawn_blocking(move || digest_and_prepare(&event_id, xml, latest))
            .await
            .map_err(|e| StoreError::Shared(format!("preparing a document stopped: {e}")))??;
    project.xml_sha256 = digest;
    project.document = Some(Arc::new(document));
    Ok(())
}

/// The hex SHA-256 of `xml`, and the document prepared.
fn digest_and_prepare(
    event_id: &str,
    xml: Bytes,
    latest: Option<(String, StoredDocument)>,
) -> Result<(String, PreparedDocument), StoreError> {
    let digest = crate::core::hex::hex(&Sha256::digest(&xml));
    let stored = StoredDocument::compress(&xml)
        .map_err(|e| StoreError::Corrupt(format!("compressing a document: {e}")))?;
    let model = match model_of(&xml[..]) {
        Ok(model) => Some(Arc::new(model)),
        Err(e) => {
            tracing::warn!(event_id, error = %e, "project document is not well-formed XML; stored as is");
            None
        }
    };
    drop(xml);
    let previous = latest.map(|(event_id, document)| Previous {
        model: stored_model(&document),
        event_id,
    });
    let document = PreparedDocument {
        stored,
        model,
        previous,
    };
    Ok((digest, document))
}

/// The model of a stored document, read while it inflates (`None` when it
/// is not well-formed XML).
pub(super) fn stored_model(document: &StoredDocument) -> Option<Arc<Model>> {
    model_of(BufReader::new(document.reader()))
        .ok()
        .map(Arc::new)
}
