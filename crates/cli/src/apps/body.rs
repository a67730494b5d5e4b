//! The one response body type of the sample apps: a whole buffer, a run of filler
//! bytes streamed from a static chunk (so `/bytes/N` allocates nothing), or a gRPC
//! message followed by trailers. Plain bodies know their exact length up front, so
//! HTTP/1.1 answers carry `content-length` rather than chunked encoding.

use std::convert::Infallible;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use http::HeaderMap;
use http_body::{Frame, SizeHint};

/// Size of the static chunk filler bytes are served from.
const CHUNK_LEN: usize = 16 * 1024;

/// `0123456789abcdef` repeated: recognisable in a hex dump, and free to serve.
static CHUNK: [u8; CHUNK_LEN] = {
    let mut chunk = [0u8; CHUNK_LEN];
    let digits = b"0123456789abcdef";
    let mut i = 0;
    while i < CHUNK_LEN {
        chunk[i] = digits[i % 16];
        i += 1;
    }
    chunk
};

/// A response body; see the module comment.
#[derive(Debug)]
pub enum Body {
    /// One buffer (possibly empty), sent as a single frame.
    Full(Option<Bytes>),
    /// `remaining` filler bytes, sent in chunks of at most 16 KiB.
    Filler { remaining: usize },
    /// A gRPC response: one length-prefixed message, then trailers.
    Grpc {
        message: Option<Bytes>,
        trailers: Option<HeaderMap>,
    },
}

impl Body {
    /// A body of `bytes`.
    pub fn full(bytes: impl Into<Bytes>) -> Self {
        let bytes = bytes.into();
        Body::Full((!bytes.is_empty()).then_some(bytes))
    }

    /// No body at all.
    pub fn empty() -> Self {
        Body::Full(None)
    }

    /// `len` filler bytes.
    pub fn filler(len: usize) -> Self {
        Body::Filler { remaining: len }
    }

    /// A gRPC message (already length-prefixed) followed by `trailers`.
    pub fn grpc(message: Bytes, trailers: HeaderMap) -> Self {
        Body::Grpc {
            message: Some(message),
            trailers: Some(trailers),
        }
    }
}

impl http_body::Body for Body {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        let frame = match self.get_mut() {
            Body::Full(bytes) => bytes.take().map(Frame::data),
            Body::Filler { remaining } if *remaining == 0 => None,
            Body::Filler { remaining } => {
                let len = (*remaining).min(CHUNK_LEN);
                *remaining -= len;
                Some(Frame::data(Bytes::from_static(&CHUNK[..len])))
            }
            Body::Grpc { message, trailers } => match message.take() {
                Some(message) => Some(Frame::data(message)),
                None => trailers.take().map(Frame::trailers),
            },
        };
        Poll::Ready(frame.map(Ok))
    }

    fn is_end_stream(&self) -> bool {
        match self {
            Body::Full(bytes) => bytes.is_none(),
            Body::Filler { remaining } => *remaining == 0,
            Body::Grpc { message, trailers } => message.is_none() && trailers.is_none(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            Body::Full(bytes) => SizeHint::with_exact(bytes.as_ref().map_or(0, |b| b.len() as u64)),
            Body::Filler { remaining } => SizeHint::with_exact(*remaining as u64),
            // Trailers follow, so HTTP/1.1 must stay chunked: no exact length.
            Body::Grpc { .. } => SizeHint::default(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::BodyExt;

    #[tokio::test]
    async fn filler_streams_exactly_the_requested_length_in_chunks() {
        let body = Body::filler(CHUNK_LEN * 2 + 5);
        assert_eq!(
            http_body::Body::size_hint(&body).exact(),
            Some((CHUNK_LEN * 2 + 5) as u64)
        );
        let bytes = body.collect().await.expect("infallible").to_bytes();
        assert_eq!(bytes.len(), CHUNK_LEN * 2 + 5);
        assert_eq!(&bytes[..4], b"0123");
    }

    #[tokio::test]
    async fn grpc_body_sends_message_then_trailers() {
        let mut trailers = HeaderMap::new();
        trailers.insert("grpc-status", http::HeaderValue::from_static("0"));
        let collected = Body::grpc(Bytes::from_static(b"\0\0\0\0\0"), trailers)
            .collect()
            .await
            .expect("infallible");
        assert_eq!(
            collected.trailers().and_then(|t| t.get("grpc-status")),
            Some(&http::HeaderValue::from_static("0"))
        );
        assert_eq!(collected.to_bytes().len(), 5);
    }
}
