//! A guard against request smuggling on downstream HTTP/1 connections.
//!
//! A request that carries both `Content-Length` and `Transfer-Encoding` can be framed
//! two ways; when two hops disagree, the bytes one hop reads as a body the other reads
//! as a second request. hyper reads such a request as chunked and closes the connection
//! after answering it, so nothing behind it is read; but it drops the `Content-Length`
//! header while parsing, so the request handler cannot see the conflict and refuse it
//! as Envoy does (400).
//!
//! [`Guarded`] wraps the connection's byte stream and follows HTTP/1 framing as the
//! bytes go by: request heads, bodies by length, chunked bodies with their trailers.
//! When a head carries both headers it records that head's position on the
//! connection, and [`Framing::refuse`] tells the handler, which counts requests in the
//! same order, to answer that request with 400. Where the stream stops being plain
//! HTTP/1 (HTTP/2, CONNECT, an upgrade) or cannot be followed, the guard stops and
//! hyper's own handling remains.

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// Longest request head followed; beyond it hyper answers 431 and the guard stops.
const MAX_HEAD: usize = 128 * 1024;

/// What the guard found, shared with the connection's request handler.
#[derive(Debug, Default)]
pub struct Framing {
    /// 1 + the position of the first head with conflicting framing; 0 for none.
    conflicting: AtomicU64,
    /// Requests handed to the handler so far.
    seen: AtomicU64,
}

impl Framing {
    /// Counts one request (call once per request, in arrival order) and says whether
    /// it must be refused because its head framed its body two ways.
    pub fn refuse(&self) -> bool {
        let position = self.seen.fetch_add(1, Ordering::Relaxed);
        self.conflicting.load(Ordering::Relaxed) == position + 1
    }
}

/// Where the reader is in the HTTP/1 byte stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Collecting a request head.
    Head,
    /// Inside a body of known length: bytes left.
    Length(u64),
    /// Reading a chunk-size line: the size so far, and whether extensions began.
    ChunkSize { size: u64, digits: bool, ext: bool },
    /// Inside chunk data: bytes left.
    ChunkData(u64),
    /// After chunk data, up to the end of its line.
    ChunkEnd,
    /// Trailer lines after the last chunk: whether the current line has content.
    Trailers { content: bool },
    /// Not following any more (HTTP/2, tunnels, upgrades, unparseable input).
    Off,
}

/// A byte stream whose HTTP/1 request framing is followed as it is read.
pub struct Guarded<I> {
    io: I,
    state: State,
    head: Vec<u8>,
    heads: u64,
    framing: Arc<Framing>,
}

impl<I> Guarded<I> {
    /// Wraps `io`; `follow` false (a known HTTP/2 connection) only passes bytes on.
    pub fn new(io: I, framing: Arc<Framing>, follow: bool) -> Self {
        Guarded {
            io,
            state: if follow { State::Head } else { State::Off },
            head: Vec::new(),
            heads: 0,
            framing,
        }
    }

    /// Follows `bytes`, the next bytes of the stream.
    fn follow(&mut self, mut bytes: &[u8]) {
        while !bytes.is_empty() {
            match self.state {
                State::Off => return,
                State::Head => {
                    // Blank lines before a request line are ignored (RFC 9112 §2.2).
                    if self.head.is_empty() {
                        let skip = bytes
                            .iter()
                            .take_while(|b| **b == b'\r' || **b == b'\n')
                            .count();
                        bytes = &bytes[skip..];
                        if bytes.is_empty() {
                            return;
                        }
                    }
                    // Usually a whole head arrives in one read: read it where it lies.
                    if self.head.is_empty()
                        && let Some(end) = head_end(bytes, 0)
                    {
                        let read = read_head(&bytes[..end]);
                        bytes = &bytes[end..];
                        self.state = self.count_head(read);
                        continue;
                    }
                    let from = self.head.len().saturating_sub(3);
                    self.head.extend_from_slice(bytes);
                    match head_end(&self.head, from) {
                        Some(end) => {
                            let rest = self.head.len() - end;
                            bytes = &bytes[bytes.len() - rest..];
                            let read = read_head(&self.head[..end]);
                            self.head.clear();
                            self.state = self.count_head(read);
                        }
                        None => {
                            if self.head.len() > MAX_HEAD {
                                self.state = State::Off;
                                self.head = Vec::new();
                            }
                            return;
                        }
                    }
                }
                State::Length(left) => {
                    let n = left.min(bytes.len() as u64);
                    bytes = &bytes[n as usize..];
                    self.state = if left == n {
                        State::Head
                    } else {
                        State::Length(left - n)
                    };
                }
                State::ChunkSize { size, digits, ext } => {
                    let b = bytes[0];
                    bytes = &bytes[1..];
                    self.state = match b {
                        b'\n' if !digits => State::Off,
                        b'\n' if size == 0 => State::Trailers { content: false },
                        b'\n' => State::ChunkData(size),
                        _ if ext => State::ChunkSize { size, digits, ext },
                        b';' | b' ' | b'\t' | b'\r' => State::ChunkSize {
                            size,
                            digits,
                            ext: true,
                        },
                        _ => match (b as char).to_digit(16) {
                            Some(d) if size >> 60 == 0 => State::ChunkSize {
                                size: size << 4 | u64::from(d),
                                digits: true,
                                ext,
                            },
                            _ => State::Off,
                        },
                    };
                }
                State::ChunkData(left) => {
                    let n = left.min(bytes.len() as u64);
                    bytes = &bytes[n as usize..];
                    self.state = if left == n {
                        State::ChunkEnd
                    } else {
                        State::ChunkData(left - n)
                    };
                }
                State::ChunkEnd => {
                    let b = bytes[0];
                    bytes = &bytes[1..];
                    self.state = match b {
                        b'\n' => State::ChunkSize {
                            size: 0,
                            digits: false,
                            ext: false,
                        },
                        b'\r' => State::ChunkEnd,
                        _ => State::Off,
                    };
                }
                State::Trailers { content } => {
                    let b = bytes[0];
                    bytes = &bytes[1..];
                    self.state = match b {
                        b'\n' if !content => State::Head,
                        b'\n' => State::Trailers { content: false },
                        b'\r' => State::Trailers { content },
                        _ => State::Trailers { content: true },
                    };
                }
            }
        }
    }

    /// Counts a head read by [`read_head`], records it if its framing conflicts, and
    /// says what follows it.
    fn count_head(&mut self, (next, conflicting): (State, bool)) -> State {
        let position = self.heads;
        self.heads += 1;
        if conflicting {
            // hyper closes the connection after this request; nothing after it is read.
            self.framing
                .conflicting
                .store(position + 1, Ordering::Relaxed);
        }
        next
    }
}

/// Reads a complete request head: what follows it, and whether it frames its body two
/// ways (both Content-Length and Transfer-Encoding).
fn read_head(head: &[u8]) -> (State, bool) {
    let next = |state| (state, false);
    let mut lines = head.split(|b| *b == b'\n').map(trim_cr);
    let Some(request_line) = lines.next() else {
        return next(State::Off);
    };
    let mut parts = request_line.split(|b| *b == b' ');
    let method = parts.next().unwrap_or_default();
    let version = parts.next_back().unwrap_or_default();
    if !version.starts_with(b"HTTP/1.") || method == b"CONNECT" {
        return next(State::Off);
    }
    let (mut length, mut chunked, mut lengths, mut encodings) = (None, false, 0, 0);
    for line in lines {
        let Some(colon) = line.iter().position(|b| *b == b':') else {
            continue;
        };
        let (name, value) = (&line[..colon], line[colon + 1..].trim_ascii());
        if name.eq_ignore_ascii_case(b"content-length") {
            lengths += 1;
            length = std::str::from_utf8(value)
                .ok()
                .and_then(|v| v.parse::<u64>().ok());
        } else if name.eq_ignore_ascii_case(b"transfer-encoding") {
            encodings += 1;
            chunked = value
                .rsplit(|b| *b == b',')
                .next()
                .is_some_and(|last| last.trim_ascii().eq_ignore_ascii_case(b"chunked"));
        } else if name.eq_ignore_ascii_case(b"upgrade") {
            return next(State::Off);
        }
    }
    if lengths > 0 && encodings > 0 {
        return (State::Off, true);
    }
    next(match (encodings > 0, chunked, length) {
        (true, true, _) => State::ChunkSize {
            size: 0,
            digits: false,
            ext: false,
        },
        // Not chunked last: hyper refuses it with 400.
        (true, false, _) => State::Off,
        (false, _, Some(0)) => State::Head,
        (false, _, Some(n)) => State::Length(n),
        (false, _, None) if lengths > 0 => State::Off,
        (false, _, None) => State::Head,
    })
}

/// Where a head ends (just past its blank line), looking from `from` on.
fn head_end(buf: &[u8], from: usize) -> Option<usize> {
    let mut i = from;
    while let Some(nl) = buf[i..].iter().position(|b| *b == b'\n') {
        let at = i + nl;
        match buf.get(at + 1) {
            Some(b'\n') => return Some(at + 2),
            Some(b'\r') if buf.get(at + 2) == Some(&b'\n') => return Some(at + 3),
            _ => i = at + 1,
        }
    }
    None
}

fn trim_cr(line: &[u8]) -> &[u8] {
    line.strip_suffix(b"\r").unwrap_or(line)
}

impl<I: AsyncRead + Unpin> AsyncRead for Guarded<I> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        let polled = Pin::new(&mut this.io).poll_read(cx, buf);
        if this.state != State::Off && matches!(polled, Poll::Ready(Ok(()))) {
            this.follow(&buf.filled()[before..]);
        }
        polled
    }
}

impl<I: AsyncWrite + Unpin> AsyncWrite for Guarded<I> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().io).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().io).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn follow_in_pieces(stream: &[u8], piece: usize) -> (Arc<Framing>, State, u64) {
        let framing = Arc::new(Framing::default());
        let mut g = Guarded::new((), framing.clone(), true);
        for chunk in stream.chunks(piece) {
            g.follow(chunk);
        }
        (framing, g.state, g.heads)
    }

    #[test]
    fn follows_lengths_chunks_and_trailers_in_any_split() {
        let stream = b"\r\nGET / HTTP/1.1\r\nhost: a\r\n\r\n\
POST /a HTTP/1.1\r\nContent-Length: 5\r\n\r\nhello\
POST /b HTTP/1.1\r\ntransfer-encoding: gzip, chunked\r\n\r\n5;x=y\r\nhello\r\n0\r\nx-t: 1\r\n\r\n\
GET /c HTTP/1.1\nhost: a\n\n\
POST /d HTTP/1.1\r\ncontent-length: 3\r\ntransfer-encoding: chunked\r\n\r\n0\r\n\r\nGET /smuggled HTTP/1.1\r\n\r\n";
        for piece in 1..stream.len() {
            let (framing, state, heads) = follow_in_pieces(stream, piece);
            assert_eq!(heads, 5, "piece {piece}");
            assert_eq!(state, State::Off, "piece {piece}");
            let refused: Vec<bool> = (0..5).map(|_| framing.refuse()).collect();
            assert_eq!(refused, [false, false, false, false, true], "piece {piece}");
        }
    }

    #[test]
    fn a_body_that_looks_like_a_request_is_not_a_head() {
        let body = b"GET /x HTTP/1.1\r\ncontent-length: 1\r\ntransfer-encoding: chunked\r\n\r\n";
        let mut stream =
            format!("POST / HTTP/1.1\r\ncontent-length: {}\r\n\r\n", body.len()).into_bytes();
        stream.extend_from_slice(body);
        stream.extend_from_slice(b"GET /next HTTP/1.1\r\n\r\n");
        let (framing, state, heads) = follow_in_pieces(&stream, 7);
        assert_eq!((state, heads), (State::Head, 2));
        assert!(!framing.refuse() && !framing.refuse());
    }

    #[test]
    fn stops_at_http2_upgrades_and_tunnels() {
        for stream in [
            &b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"[..],
            b"CONNECT a:443 HTTP/1.1\r\n\r\n",
            b"GET /ws HTTP/1.1\r\nUpgrade: websocket\r\nConnection: upgrade\r\n\r\n",
        ] {
            let (framing, state, _) = follow_in_pieces(stream, 3);
            assert_eq!(state, State::Off);
            assert!(!framing.refuse());
        }
    }

    /// A request stream made of whole requests: each a head with a length, a chunked
    /// or no body, and whether it frames its body both ways.
    fn requests() -> impl proptest::strategy::Strategy<Value = Vec<(u8, Vec<u8>, bool)>> {
        use proptest::prelude::*;
        proptest::collection::vec(
            (
                0u8..3,
                proptest::collection::vec(any::<u8>(), 0..40),
                any::<bool>(),
            ),
            1..6,
        )
    }

    fn render(requests: &[(u8, Vec<u8>, bool)]) -> Vec<u8> {
        let mut out = Vec::new();
        for (kind, body, conflict) in requests {
            if *conflict {
                // Framed both ways: hyper answers it and closes; nothing follows.
                out.extend_from_slice(
                    format!(
                        "POST / HTTP/1.1\r\ncontent-length: {}\r\ntransfer-encoding: chunked\r\n\r\n0\r\n\r\n",
                        body.len()
                    )
                    .as_bytes(),
                );
                break;
            }
            match kind {
                0 => out.extend_from_slice(b"GET / HTTP/1.1\r\nhost: a\r\n\r\n"),
                1 => {
                    out.extend_from_slice(
                        format!("POST / HTTP/1.1\r\ncontent-length: {}\r\n\r\n", body.len())
                            .as_bytes(),
                    );
                    out.extend_from_slice(body);
                }
                _ => {
                    out.extend_from_slice(b"POST / HTTP/1.1\r\ntransfer-encoding: chunked\r\n\r\n");
                    if !body.is_empty() {
                        out.extend_from_slice(format!("{:x}\r\n", body.len()).as_bytes());
                        out.extend_from_slice(body);
                        out.extend_from_slice(b"\r\n");
                    }
                    out.extend_from_slice(b"0\r\n\r\n");
                }
            }
        }
        out
    }

    proptest::proptest! {
        /// Arbitrary bytes, split anywhere, never panic the guard.
        #[test]
        fn arbitrary_bytes_in_any_split_never_panic(
            bytes in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..600),
            piece in 1usize..64,
        ) {
            let (framing, _, heads) = follow_in_pieces(&bytes, piece);
            for _ in 0..heads {
                let _ = framing.refuse();
            }
        }

        /// Whole requests are counted the same whatever the split, and exactly the
        /// head that framed its body two ways is refused.
        #[test]
        fn requests_are_followed_the_same_in_every_split(
            reqs in requests(),
            piece in 1usize..50,
        ) {
            let stream = render(&reqs);
            let (whole, _, heads) = follow_in_pieces(&stream, stream.len().max(1));
            let (split, _, split_heads) = follow_in_pieces(&stream, piece);
            proptest::prop_assert_eq!(heads, split_heads);
            let expected = reqs.iter().position(|(_, _, conflict)| *conflict);
            proptest::prop_assert_eq!(heads as usize, expected.map_or(reqs.len(), |at| at + 1));
            for n in 0..heads {
                let refused = whole.refuse();
                proptest::prop_assert_eq!(split.refuse(), refused);
                proptest::prop_assert_eq!(refused, Some(n as usize) == expected, "head {}", n);
            }
        }
    }
}
