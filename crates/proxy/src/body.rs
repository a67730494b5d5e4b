//! The body type every proxied message uses: an upstream's streaming body passed
//! through untouched, a small buffered body (local replies, replayable requests), or
//! nothing. A [`Metered`] wrapper counts bytes and reports when the stream ends or
//! is dropped, so a cancelled request is still recorded.

use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use hyper::body::Incoming;

/// A request or response body inside the proxy.
pub enum ProxyBody {
    Empty,
    Full(Option<Bytes>),
    Streaming(Incoming),
    Metered(Box<Metered>),
}

impl ProxyBody {
    /// A buffered body.
    pub fn full(bytes: impl Into<Bytes>) -> Self {
        let bytes = bytes.into();
        if bytes.is_empty() {
            ProxyBody::Empty
        } else {
            ProxyBody::Full(Some(bytes))
        }
    }
}

impl Body for ProxyBody {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        match &mut *self {
            ProxyBody::Empty => Poll::Ready(None),
            ProxyBody::Full(bytes) => Poll::Ready(bytes.take().map(|b| Ok(Frame::data(b)))),
            ProxyBody::Streaming(inner) => Pin::new(inner).poll_frame(cx),
            ProxyBody::Metered(m) => Pin::new(&mut **m).poll_frame(cx),
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            ProxyBody::Empty => true,
            ProxyBody::Full(b) => b.is_none(),
            ProxyBody::Streaming(inner) => inner.is_end_stream(),
            ProxyBody::Metered(m) => m.inner.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            ProxyBody::Empty => SizeHint::with_exact(0),
            ProxyBody::Full(b) => SizeHint::with_exact(b.as_ref().map_or(0, |b| b.len() as u64)),
            ProxyBody::Streaming(inner) => inner.size_hint(),
            ProxyBody::Metered(m) => m.inner.size_hint(),
        }
    }
}

/// How a metered body ended.
#[derive(Debug, Clone, Copy, Default)]
pub struct Ended {
    pub bytes: u64,
    /// False when the stream was cut short (error or dropped before its end).
    pub complete: bool,
    /// The stream failed on the upstream's side (its connection ended mid-body),
    /// rather than being dropped by the downstream.
    pub upstream_error: bool,
    /// `grpc-status` from the trailers, if any.
    pub grpc_status: Option<u8>,
}

/// Called once when a metered body ends.
pub type OnDone = Box<dyn FnOnce(Ended) + Send>;

/// A body that counts its bytes and reports once, at its end or when dropped.
pub struct Metered {
    inner: ProxyBody,
    bytes: u64,
    grpc_status: Option<u8>,
    done: Option<OnDone>,
}

impl Metered {
    /// Wraps `inner`; `done` runs exactly once.
    pub fn wrap(inner: ProxyBody, done: OnDone) -> ProxyBody {
        ProxyBody::Metered(Box::new(Metered {
            inner,
            bytes: 0,
            grpc_status: None,
            done: Some(done),
        }))
    }

    fn finish(&mut self, complete: bool, upstream_error: bool) {
        if let Some(done) = self.done.take() {
            done(Ended {
                bytes: self.bytes,
                complete,
                upstream_error,
                grpc_status: self.grpc_status,
            });
        }
    }
}

impl Body for Metered {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        let polled = Pin::new(&mut self.inner).poll_frame(cx);
        match &polled {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(data) = frame.data_ref() {
                    self.bytes += data.len() as u64;
                } else if let Some(trailers) = frame.trailers_ref() {
                    self.grpc_status = trailers
                        .get("grpc-status")
                        .and_then(|v| v.to_str().ok()?.parse().ok());
                }
                if self.inner.is_end_stream() {
                    self.finish(true, false);
                }
            }
            Poll::Ready(None) => self.finish(true, false),
            Poll::Ready(Some(Err(_))) => self.finish(false, true),
            Poll::Pending => {}
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

impl Drop for Metered {
    fn drop(&mut self) {
        let complete = self.inner.is_end_stream();
        self.finish(complete, false);
    }
}
