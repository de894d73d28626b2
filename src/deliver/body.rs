//! Request bodies: small ones in memory, and bodies that carry a project
//! document streamed from its stored (compressed) form — the raw document,
//! or the CloudEvents envelope with the document inlined as a JSON string.
//! A streamed body is inflated twice, chunk by chunk: once to sign it and
//! learn its length, once as it is sent. Neither pass holds the whole
//! document.

use std::io::{self, Read};
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body::{Frame, SizeHint};

use crate::core::document::{JsonStringWriter, StoredDocument, CHUNK};

/// What an HTTP request sends.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RequestBody {
    Full(Vec<u8>),
    Document(DocumentBody),
}

impl RequestBody {
    /// Feeds every byte of the body to `sink`, in order (to sign it), and
    /// learns a streamed body's length on the way.
    pub fn seal(&mut self, mut sink: impl FnMut(&[u8])) -> io::Result<()> {
        match self {
            RequestBody::Full(bytes) => sink(bytes),
            RequestBody::Document(body) => {
                let mut len = 0;
                for chunk in body.chunks() {
                    let chunk = chunk?;
                    len += chunk.len() as u64;
                    sink(&chunk);
                }
                body.len = len;
            }
        }
        Ok(())
    }

    /// The body as it is sent.
    pub fn into_body(self) -> SendBody {
        SendBody(match self {
            RequestBody::Full(bytes) => Sending::Full(Some(bytes.into())),
            RequestBody::Document(body) => Sending::Streamed(Streamed {
                remaining: body.len,
                chunks: body.chunks(),
            }),
        })
    }
}

/// A request body on its way out: in memory, or streamed from a document.
pub struct SendBody(Sending);

enum Sending {
    /// Taken by the first frame.
    Full(Option<Bytes>),
    Streamed(Streamed),
}

impl http_body::Body for SendBody {
    type Data = Bytes;
    type Error = io::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, io::Error>>> {
        match &mut self.get_mut().0 {
            Sending::Full(bytes) => Poll::Ready(bytes.take().map(|b| Ok(Frame::data(b)))),
            Sending::Streamed(streamed) => Pin::new(streamed).poll_frame(cx),
        }
    }

    fn is_end_stream(&self) -> bool {
        matches!(&self.0, Sending::Full(None))
    }

    fn size_hint(&self) -> SizeHint {
        match &self.0 {
            Sending::Full(bytes) => {
                SizeHint::with_exact(bytes.as_ref().map_or(0, |b| b.len() as u64))
            }
            Sending::Streamed(streamed) => streamed.size_hint(),
        }
    }
}

/// A body around a stored document: `prefix`, the document (raw, or as
/// the contents of a JSON string), then `suffix`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DocumentBody {
    prefix: Bytes,
    document: StoredDocument,
    as_json_string: bool,
    suffix: Bytes,
    /// The body's length in bytes, known once measured.
    len: u64,
}

impl DocumentBody {
    /// The document itself.
    pub fn raw(document: StoredDocument) -> Self {
        let len = document.size();
        Self {
            prefix: Bytes::new(),
            document,
            as_json_string: false,
            suffix: Bytes::new(),
            len,
        }
    }

    /// `prefix`, the document escaped as JSON string contents, `suffix`.
    /// Its length is known once [`RequestBody::seal`] ran over it.
    pub fn json_string(prefix: Vec<u8>, document: StoredDocument, suffix: Vec<u8>) -> Self {
        Self {
            prefix: prefix.into(),
            document,
            as_json_string: true,
            suffix: suffix.into(),
            len: 0,
        }
    }

    fn chunks(&self) -> Chunks {
        Chunks {
            prefix: Some(self.prefix.clone()),
            reader: Some(self.document.reader()),
            escaper: self.as_json_string.then(JsonStringWriter::default),
            suffix: Some(self.suffix.clone()),
        }
    }
}

/// The body in chunks of about [`CHUNK`] bytes.
struct Chunks {
    prefix: Option<Bytes>,
    reader: Option<flate2::read::DeflateDecoder<bytes::buf::Reader<Bytes>>>,
    escaper: Option<JsonStringWriter>,
    suffix: Option<Bytes>,
}

impl Chunks {
    /// The next piece of the document; `None` once it is all read.
    fn next_of_document(&mut self) -> Option<io::Result<Bytes>> {
        let reader = self.reader.as_mut()?;
        let mut buf = vec![0; CHUNK];
        let n = match reader.read(&mut buf) {
            Ok(n) => n,
            Err(e) => return Some(Err(e)),
        };
        if n == 0 {
            self.reader = None;
            let mut tail = Vec::new();
            if let Some(escaper) = &mut self.escaper {
                escaper.finish(&mut tail);
            }
            return Some(Ok(tail.into()));
        }
        buf.truncate(n);
        Some(Ok(match &mut self.escaper {
            Some(escaper) => {
                let mut out = Vec::with_capacity(n + n / 8);
                escaper.push(&buf, &mut out);
                out.into()
            }
            None => buf.into(),
        }))
    }
}

impl Iterator for Chunks {
    type Item = io::Result<Bytes>;

    fn next(&mut self) -> Option<io::Result<Bytes>> {
        loop {
            let next = match self.prefix.take() {
                Some(prefix) => Ok(prefix),
                None => match self.next_of_document() {
                    Some(piece) => piece,
                    None => Ok(self.suffix.take()?),
                },
            };
            // Empty pieces (a missing prefix, a quiet tail) are skipped.
            if !matches!(&next, Ok(bytes) if bytes.is_empty()) {
                return Some(next);
            }
        }
    }
}

/// A document body as hyper sends it: inflated chunk by chunk as the
/// connection takes them, with its exact length (so it goes with a
/// `content-length`, not chunked).
struct Streamed {
    chunks: Chunks,
    remaining: u64,
}

impl http_body::Body for Streamed {
    type Data = Bytes;
    type Error = io::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        _: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, io::Error>>> {
        let this = self.get_mut();
        let next = this.chunks.next().map(|chunk| {
            chunk.map(|bytes| {
                this.remaining = this.remaining.saturating_sub(bytes.len() as u64);
                Frame::data(bytes)
            })
        });
        Poll::Ready(next)
    }

    fn size_hint(&self) -> SizeHint {
        SizeHint::with_exact(self.remaining)
    }
}
