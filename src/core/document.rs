//! A project document in the form Herald keeps it: deflated once, as soon
//! as it arrives, and inflated chunk by chunk wherever it is read (a webhook
//! body, a Git file), so no reader holds a second whole copy of a document
//! that may be tens of megabytes. Also the streaming form of the inline
//! webhook body: the document written as the contents of a JSON string.
//!
//! Compression and inflation are computation, not I/O: the bytes are in
//! memory, the caller decides where they go.

use std::fmt;
use std::io::{self, Read, Write};
use std::sync::Arc;

use bytes::Bytes;
use flate2::read::DeflateDecoder;

use super::model::Model;

/// Bytes inflated at a time when a document is streamed.
pub const CHUNK: usize = 64 * 1024;

/// A document, deflated (the stored form).
#[derive(Clone, PartialEq, Eq)]
pub struct StoredDocument {
    size: u64,
    compressed: Bytes,
}

impl fmt::Debug for StoredDocument {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StoredDocument")
            .field("size", &self.size)
            .field("compressed", &self.compressed.len())
            .finish()
    }
}

impl StoredDocument {
    /// Deflates `xml` (fast level: it runs for every publish).
    pub fn compress(xml: &[u8]) -> io::Result<Self> {
        let mut encoder = flate2::write::DeflateEncoder::new(
            Vec::with_capacity(xml.len() / 8),
            flate2::Compression::fast(),
        );
        encoder.write_all(xml)?;
        Ok(Self {
            size: xml.len() as u64,
            compressed: Bytes::from(encoder.finish()?),
        })
    }

    /// A document as stored: its inflated size and its deflated bytes.
    pub fn from_parts(size: u64, compressed: Bytes) -> Self {
        Self { size, compressed }
    }

    /// The size of the document itself, in bytes.
    pub fn size(&self) -> u64 {
        self.size
    }

    pub fn compressed(&self) -> &[u8] {
        &self.compressed
    }

    /// Reads the document, inflating as it goes.
    pub fn reader(&self) -> DeflateDecoder<bytes::buf::Reader<Bytes>> {
        DeflateDecoder::new(bytes::Buf::reader(self.compressed.clone()))
    }

    /// The whole document, inflated (for callers that need it at once).
    pub fn to_vec(&self) -> io::Result<Vec<u8>> {
        let mut xml = Vec::with_capacity(self.size as usize);
        self.reader().read_to_end(&mut xml)?;
        Ok(xml)
    }
}

/// A received document, ready for the committer: compressed, its model
/// read, and the project's previous model as it was when this one arrived
/// — all the heavy work done before the job is queued, so the writer only
/// compares two models it already has.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PreparedDocument {
    pub stored: StoredDocument,
    /// `None`: the document is not well-formed XML.
    pub model: Option<Arc<Model>>,
    /// The project's newest stored document when this one was prepared.
    pub previous: Option<Previous>,
}

/// A project's newest stored document, as seen before the commit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Previous {
    pub event_id: String,
    /// `None`: that document is not well-formed XML.
    pub model: Option<Arc<Model>>,
}

/// Writes a document as the contents of a JSON string, chunk by chunk,
/// exactly as `serde_json` writes `String::from_utf8_lossy(document)`:
/// invalid UTF-8 becomes U+FFFD, and a character cut by a chunk boundary
/// is carried over to the next chunk.
#[derive(Debug, Default)]
pub struct JsonStringWriter {
    carry: Vec<u8>,
}

impl JsonStringWriter {
    /// Appends the escaped form of `input` to `out`.
    pub fn push(&mut self, input: &[u8], out: &mut Vec<u8>) {
        let joined;
        let mut rest = if self.carry.is_empty() {
            input
        } else {
            let mut carry = std::mem::take(&mut self.carry);
            carry.extend_from_slice(input);
            joined = carry;
            &joined[..]
        };
        loop {
            match std::str::from_utf8(rest) {
                Ok(text) => return escape(text, out),
                Err(e) => {
                    let (valid, after) = rest.split_at(e.valid_up_to());
                    escape(&String::from_utf8_lossy(valid), out);
                    match e.error_len() {
                        Some(len) => {
                            escape("\u{FFFD}", out);
                            rest = &after[len..];
                        }
                        None => {
                            self.carry = after.to_vec();
                            return;
                        }
                    }
                }
            }
        }
    }

    /// Ends the string: a character left incomplete becomes U+FFFD.
    pub fn finish(&mut self, out: &mut Vec<u8>) {
        let carry = std::mem::take(&mut self.carry);
        if !carry.is_empty() {
            escape(&String::from_utf8_lossy(&carry), out);
        }
    }
}

/// `text` JSON-escaped, without the surrounding quotes.
fn escape(text: &str, out: &mut Vec<u8>) {
    if text.is_empty() {
        return;
    }
    // serde_json's own escaping, so the streamed form matches its output;
    // writing a string into a Vec cannot fail.
    let quoted = serde_json::to_vec(text).unwrap_or_default();
    if let Some(inner) = quoted.get(1..quoted.len().saturating_sub(1)) {
        out.extend_from_slice(inner);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn streamed(document: &[u8], chunk: usize) -> Vec<u8> {
        let mut writer = JsonStringWriter::default();
        let mut out = b"\"".to_vec();
        for piece in document.chunks(chunk.max(1)) {
            writer.push(piece, &mut out);
        }
        writer.finish(&mut out);
        out.push(b'"');
        out
    }

    fn whole(document: &[u8]) -> Vec<u8> {
        serde_json::to_vec(&String::from_utf8_lossy(document)).unwrap()
    }

    #[test]
    fn characters_cut_by_a_chunk_boundary_survive() {
        let text = "<m name=\"Marge €\" note='😀 \"q\" \\ \n\t'/>".repeat(50);
        for chunk in 1..9 {
            assert_eq!(streamed(text.as_bytes(), chunk), whole(text.as_bytes()));
        }
        assert_eq!(streamed(b"", 4), b"\"\"");
        assert_eq!(streamed(b"ab\xe2\x82", 1), whole(b"ab\xe2\x82"));
    }

    #[test]
    fn a_document_round_trips_through_its_stored_form() {
        let xml = b"<project>".repeat(10_000);
        let stored = StoredDocument::compress(&xml).unwrap();
        assert_eq!(stored.size(), xml.len() as u64);
        assert!(stored.compressed().len() < xml.len() / 10);
        assert_eq!(stored.to_vec().unwrap(), xml);
    }

    proptest! {
        #[test]
        fn streaming_matches_serde_json_of_the_lossy_string(
            document in proptest::collection::vec(any::<u8>(), 0..300),
            chunk in 1usize..40,
        ) {
            prop_assert_eq!(streamed(&document, chunk), whole(&document));
        }

        #[test]
        fn streaming_matches_for_mostly_valid_utf8(
            text in "\\PC{0,80}",
            cut in any::<u16>(),
            chunk in 1usize..7,
        ) {
            let mut document = text.into_bytes();
            if !document.is_empty() {
                // Corrupt one byte now and then.
                let at = cut as usize % document.len();
                if cut % 3 == 0 { document[at] = 0xff; }
            }
            prop_assert_eq!(streamed(&document, chunk), whole(&document));
        }
    }
}
