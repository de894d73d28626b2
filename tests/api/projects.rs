//! Design-tool project events: a large XML document, stored once and
//! compressed, delivered inline in the envelope or as the raw body.

use herald::api::pb;
use tonic::Code;

use crate::helpers::{webhook, Receiver, Spawn, SECRET};

/// Project XML of about `size` bytes, one `line(i)` after another.
fn document(size: usize, root: &str, line: impl Fn(usize) -> String) -> Vec<u8> {
    let mut xml = format!("<?xml version=\"1.0\"?>\n<project name=\"{root}\">\n");
    let mut i = 0;
    while xml.len() < size {
        xml.push_str(&line(i));
        i += 1;
    }
    xml.push_str("</project>\n");
    xml.into_bytes()
}

/// About 20 MB of project XML.
fn big_xml() -> Vec<u8> {
    document(20 * 1024 * 1024, "Finance", |i| {
        format!(
            "  <cube name=\"cube{i}\"><measure name=\"m{i}\" expr=\"sum(x &amp; y)\"/></cube>\n"
        )
    })
}

/// Two receivers, and the webhooks sending them project events with the
/// document inline and raw.
async fn inline_and_raw() -> (Receiver, Receiver, String) {
    let inline = Receiver::start().await;
    let raw = Receiver::start().await;
    let hooks = [
        webhook("inline", &inline.url(), "events = [\"project.*\"]"),
        webhook(
            "raw",
            &raw.url(),
            "events = [\"project.*\"]\nproject_xml = \"raw\"",
        ),
    ]
    .concat();
    (inline, raw, hooks)
}

#[tokio::test]
async fn a_20_mb_publish_is_stored_once_and_delivered_in_both_forms() {
    let (inline, raw, hooks) = inline_and_raw().await;
    let dir = tempfile::tempdir().unwrap();
    let repo = dir.path().join("archive");
    let hooks = format!(
        "{hooks}[[git_archives]]\nname = \"archive\"\npath = \"{}\"\n",
        repo.display()
    );
    let app = Spawn {
        webhooks: hooks,
        ..Spawn::default()
    }
    .start()
    .await;
    let xml = big_xml();
    let reply = app
        .ingest
        .clone()
        .project_event(app.published("p-1", xml.clone()))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(reply.deliveries, 3);
    assert_eq!(
        app.store.document("p-1").await.unwrap().as_deref(),
        Some(&xml[..]),
        "stored once, read back whole"
    );
    app.deliver().await;

    let got = &inline.received()[0];
    assert!(got.signature_is_valid(SECRET));
    let envelope = got.json();
    assert_eq!(envelope["type"], "project.published");
    assert_eq!(
        envelope["data"]["project_xml"].as_str().unwrap().as_bytes(),
        &xml[..],
        "inline, byte for byte"
    );
    assert_eq!(envelope["data"]["project_xml_size"], xml.len());

    let got = &raw.received()[0];
    assert_eq!(&got.body[..], &xml[..], "raw body, byte for byte");
    assert_eq!(got.header("content-type"), "application/xml");
    assert_eq!(got.header("herald-event"), "project.published");
    assert_eq!(got.header("herald-project"), "finance");
    assert_eq!(got.header("herald-user"), "ada@example.com");
    assert!(
        got.path.contains("event=project.published")
            && got.path.contains("project=finance")
            && got.path.contains("snapshot=snap-7"),
        "{}",
        got.path
    );
    assert!(
        got.signature_is_valid(SECRET),
        "the raw body is what is signed"
    );

    let archived = std::fs::read(repo.join("acme/finance.xml")).unwrap();
    assert!(archived == xml, "archived byte for byte");
}

#[tokio::test]
async fn project_events_name_their_bad_fields() {
    let app = Spawn::default().start().await;
    let mut no_kind = app.published("p-1", b"<project/>".to_vec());
    no_kind.kind = 0;
    let status = app.ingest.clone().project_event(no_kind).await.unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument);
    assert!(status.message().starts_with("kind:"));
    let mut promoted = app.published("p-2", Vec::new());
    promoted.kind = pb::ProjectEventKind::Promoted as i32;
    let status = app
        .ingest
        .clone()
        .project_event(promoted)
        .await
        .unwrap_err();
    assert!(
        status.message().starts_with("target_environment:"),
        "{}",
        status.message()
    );
    let mut nameless = app.published("p-3", Vec::new());
    nameless.project_id.clear();
    assert!(app
        .ingest
        .clone()
        .project_event(nameless)
        .await
        .unwrap_err()
        .message()
        .starts_with("project_id:"));
}

/// About 3 MB of XML whose characters take one to four bytes, with JSON's
/// special characters among them, so the chunks a streamed body is read in
/// cut through characters and escapes.
fn multibyte_xml() -> Vec<u8> {
    document(3 * 1024 * 1024, "Fïnance", |i| {
        format!(
            "  <cube name=\"c{i}\" note='Marge € \"nette\" \\ 😀\tok'>ç{}</cube>\n",
            "é".repeat(i % 7)
        )
    })
}

#[tokio::test]
async fn a_streamed_document_arrives_byte_for_byte_signed_and_with_its_length() {
    let (inline, raw, hooks) = inline_and_raw().await;
    let app = Spawn {
        webhooks: hooks,
        ..Spawn::default()
    }
    .start()
    .await;
    let xml = multibyte_xml();
    app.ingest
        .clone()
        .project_event(app.published("p-1", xml.clone()))
        .await
        .unwrap();
    app.deliver().await;

    for got in [&inline.received()[0], &raw.received()[0]] {
        assert!(got.signature_is_valid(SECRET));
        assert_eq!(got.header("content-length"), got.body.len().to_string());
        assert_eq!(got.header("transfer-encoding"), "");
    }
    let envelope = inline.received()[0].json();
    assert_eq!(
        envelope["data"]["project_xml"].as_str().unwrap().as_bytes(),
        &xml[..],
        "inline, byte for byte"
    );
    assert_eq!(envelope["data"]["project_xml_size"], xml.len());
    assert_eq!(&raw.received()[0].body[..], &xml[..], "raw, byte for byte");
}
