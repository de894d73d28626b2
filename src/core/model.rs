//! What a project document defines — cubes, and the dimensions and measures
//! of each — and what changed between two versions of it, for the summary
//! a publish carries. Elements are recognised by name (`cube`, `dimension`,
//! `measure`, any case or namespace) and identified by their `name` (or
//! `id`) attribute; an element's other attributes make its signature, so a
//! changed expression reads as "changed measure".
//!
//! A model keeps a hash of each signature, not its text, and its names in
//! one buffer: a large document's model is a small fraction of the
//! document, in a few large allocations rather than one per element (so
//! its memory goes back whole when it is dropped).

use std::hash::{Hash, Hasher};
use std::io::BufRead;

use quick_xml::events::{BytesStart, Event};
use quick_xml::Reader;

/// Kind and qualified name (`measure Sales.Margin`) → hash of the
/// signature, sorted by name; a name defined twice keeps its last one.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Model {
    names: String,
    entries: Vec<Entry>,
}

/// One element: its name's place in `names`, and its signature's hash.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Entry {
    start: usize,
    end: usize,
    signature: u64,
}

impl Model {
    /// How many elements the model has.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    fn name(&self, entry: &Entry) -> &str {
        &self.names[entry.start..entry.end]
    }

    /// Names and signature hashes, in name order.
    fn iter(&self) -> impl Iterator<Item = (&str, u64)> {
        self.entries.iter().map(|e| (self.name(e), e.signature))
    }

    fn get(&self, name: &str) -> Option<u64> {
        self.entries
            .binary_search_by(|e| self.name(e).cmp(name))
            .ok()
            .map(|i| self.entries[i].signature)
    }

    /// Appends an element (the model is sorted once it is complete).
    fn push(&mut self, kind: &str, name: &str, signature: u64) {
        let start = self.names.len();
        self.names.push_str(kind);
        self.names.push(' ');
        self.names.push_str(name);
        let end = self.names.len();
        self.entries.push(Entry {
            start,
            end,
            signature,
        });
    }

    /// Sorts by name; of one name defined twice, the later stays.
    fn sealed(mut self) -> Self {
        let mut entries = std::mem::take(&mut self.entries);
        entries.sort_by(|a, b| self.name(a).cmp(self.name(b)));
        let mut kept: Vec<Entry> = Vec::with_capacity(entries.len());
        for entry in entries {
            match kept.last_mut() {
                Some(last) if self.name(last) == self.name(&entry) => *last = entry,
                _ => kept.push(entry),
            }
        }
        kept.shrink_to_fit();
        self.entries = kept;
        self.names.shrink_to_fit();
        self
    }
}

/// Reads the model a document defines, streaming (`xml` may be a reader
/// that inflates as it goes); `Err` for a document that is not well-formed
/// XML.
pub fn model_of(xml: impl BufRead) -> Result<Model, String> {
    let mut reader = Reader::from_reader(xml);
    let mut model = Model::default();
    let mut cubes: Vec<Option<String>> = Vec::new();
    let mut buf = Vec::new();
    loop {
        let event = reader
            .read_event_into(&mut buf)
            .map_err(|e| format!("at byte {}: {e}", reader.buffer_position()))?;
        match event {
            Event::Start(e) => {
                let entry = element(&e, cubes.last().cloned().flatten());
                let cube = entry
                    .as_ref()
                    .filter(|(kind, _, _)| kind == "cube")
                    .map(|(_, name, _)| name.clone());
                record(&mut model, entry);
                cubes.push(cube.or_else(|| cubes.last().cloned().flatten()));
            }
            Event::Empty(e) => record(&mut model, element(&e, cubes.last().cloned().flatten())),
            Event::End(_) => {
                cubes.pop();
            }
            Event::Eof => return Ok(model.sealed()),
            _ => {}
        }
        buf.clear();
    }
}

fn record(model: &mut Model, entry: Option<(String, String, String)>) {
    if let Some((kind, name, signature)) = entry {
        // The default hasher's keys are fixed, so equal signatures hash
        // alike across documents (models are only compared in memory).
        let mut hasher = std::hash::DefaultHasher::new();
        signature.hash(&mut hasher);
        model.push(&kind, &name, hasher.finish());
    }
}

/// (kind, qualified name, signature) for a model element.
fn element(e: &BytesStart<'_>, cube: Option<String>) -> Option<(String, String, String)> {
    let local = e.local_name().into_inner().to_ascii_lowercase();
    if !["cube", "dimension", "measure"].contains(&local.as_str()) {
        return None;
    }
    let mut name = None;
    let mut signature = Vec::new();
    for attr in e.attributes().flatten() {
        let key = attr.key.into_inner().to_owned();
        let value = attr.value.into_owned();
        match key.as_str() {
            "name" | "id" if name.is_none() => name = Some(value),
            _ => signature.push(format!("{key}={value}")),
        }
    }
    let name = name?;
    let qualified = match (local.as_str(), cube) {
        ("cube", _) | (_, None) => name,
        (_, Some(cube)) => format!("{cube}.{name}"),
    };
    signature.sort();
    Some((local, qualified, signature.join(" ")))
}

/// The changes from `old` to `new`, as phrases: `added measure Sales.Margin`.
pub fn changes(old: &Model, new: &Model) -> Vec<String> {
    let mut out = Vec::new();
    for (key, signature) in new.iter() {
        match old.get(key) {
            None => out.push(format!("added {key}")),
            Some(before) if before != signature => out.push(format!("changed {key}")),
            Some(_) => {}
        }
    }
    out.extend(
        old.iter()
            .filter(|(k, _)| new.get(k).is_none())
            .map(|(k, _)| format!("removed {k}")),
    );
    out
}

/// At most `limit` changes joined with "; ", then how many more.
pub fn summary(changes: &[String], limit: usize) -> String {
    if changes.is_empty() {
        return "no model changes".to_owned();
    }
    let mut text = changes
        .iter()
        .take(limit)
        .cloned()
        .collect::<Vec<_>>()
        .join("; ");
    if changes.len() > limit {
        text.push_str(&format!("; and {} more", changes.len() - limit));
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    const V1: &str = r#"<project><cube name="Sales"><dimension name="Region"/><dimension name="Date"/>
        <measure name="Revenue" expr="sum(rev)"/></cube><cube name="Stock"/></project>"#;
    const V2: &str = r#"<project><cube name="Sales"><dimension name="Date"/>
        <measure name="Revenue" expr="sum(net_rev)"/><measure name="Margin" expr="sum(m)"/></cube><cube name="Stock"/></project>"#;

    #[test]
    fn names_added_removed_and_changed_elements() {
        let (old, new) = (
            model_of(V1.as_bytes()).unwrap(),
            model_of(V2.as_bytes()).unwrap(),
        );
        assert_eq!(
            changes(&old, &new),
            [
                "added measure Sales.Margin",
                "changed measure Sales.Revenue",
                "removed dimension Sales.Region"
            ]
        );
        assert_eq!(
            summary(&changes(&old, &new), 2),
            "added measure Sales.Margin; changed measure Sales.Revenue; and 1 more"
        );
        assert_eq!(summary(&[], 5), "no model changes");
    }

    #[test]
    fn a_name_defined_twice_keeps_its_last_definition() {
        let twice = r#"<project><cube name="S"><measure name="M" expr="a"/><measure name="M" expr="b"/></cube></project>"#;
        let once = r#"<project><cube name="S"><measure name="M" expr="b"/></cube></project>"#;
        let (twice, once) = (
            model_of(twice.as_bytes()).unwrap(),
            model_of(once.as_bytes()).unwrap(),
        );
        assert_eq!(twice.len(), 2);
        assert!(changes(&once, &twice).is_empty());
    }

    #[test]
    fn malformed_documents_are_an_error_not_a_panic() {
        assert!(model_of(&b"<project><cube name='a'></project>"[..]).is_err());
        // Bytes that are not XML at all: whatever the verdict, no panic and
        // no model elements invented.
        assert!(model_of(&b"\xff\xfe not xml at all <<<"[..]).map_or(true, |m| m.is_empty()));
    }
}
