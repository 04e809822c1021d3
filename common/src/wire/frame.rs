//! Framing: each message is a `u32` big-endian body length followed by the postcard
//! body. Helpers for one-off frames ([`read_frame`], [`write_frame`]), buffered,
//! reusable readers and writers for long-lived streams ([`FrameReader`],
//! [`FrameWriter`]), the hello handshake, and the plain codec ([`encode`],
//! [`decode`]).
//!
//! Hot paths should use [`FrameReader`] and [`FrameWriter`]: they keep one buffer per
//! stream, read many frames per read call, and write each frame (or a whole batch of
//! frames) with a single write.

use serde::{Deserialize, Serialize, de::DeserializeOwned};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use super::error::WireError;
use super::messages::{Hello, PROTOCOL_VERSION, Role};

/// The default maximum body length of one frame, 1 MiB. Every batch limit in
/// [`messages`](super::messages) is chosen to fit well inside it.
pub const MAX_FRAME: usize = 1 << 20;

/// The maximum body length accepted for a [`Hello`]: a hello is a few dozen bytes, so
/// a peer announcing more is refused before anything is buffered.
pub const HELLO_MAX_FRAME: usize = 4096;

/// Length of the frame header.
const HEADER: usize = 4;
/// Initial size of a [`FrameReader`]'s buffer.
const INITIAL_BUF: usize = 8 * 1024;
/// A reader's buffer grown past this is given back once it is drained, so that one
/// large frame does not pin a megabyte per connection forever.
const SHRINK_ABOVE: usize = 64 * 1024;

/// Serialises `msg` to its postcard body (no frame header).
pub fn encode<T: Serialize + ?Sized>(msg: &T) -> Result<Vec<u8>, WireError> {
    postcard::to_allocvec(msg).map_err(|e| WireError::Encode(e.to_string()))
}

/// Deserialises one message from a complete postcard body (no frame header). Bytes
/// left over after the message make it [`WireError::Malformed`]: a frame holds
/// exactly one message.
pub fn decode<'a, T: Deserialize<'a>>(bytes: &'a [u8]) -> Result<T, WireError> {
    let (msg, rest) = postcard::take_from_bytes(bytes).map_err(malformed)?;
    if rest.is_empty() {
        Ok(msg)
    } else {
        Err(WireError::Malformed(format!(
            "{} trailing bytes after the message",
            rest.len()
        )))
    }
}

fn malformed(e: postcard::Error) -> WireError {
    WireError::Malformed(e.to_string())
}

/// Lets postcard append to a borrowed `Vec` (its `to_extend` takes the writer by
/// value and drops it on error; this way the caller's buffer survives).
struct Append<'a>(&'a mut Vec<u8>);

impl Extend<u8> for Append<'_> {
    fn extend<I: IntoIterator<Item = u8>>(&mut self, iter: I) {
        self.0.extend(iter);
    }
}

/// Appends one complete frame (header and body) for `msg` to `buf`. If the body would
/// be longer than `max`, `buf` is left as it was and the result is
/// [`WireError::Oversize`].
pub fn encode_frame_into<T: Serialize + ?Sized>(
    buf: &mut Vec<u8>,
    msg: &T,
    max: usize,
) -> Result<(), WireError> {
    let start = buf.len();
    buf.extend_from_slice(&[0; HEADER]);
    if let Err(e) = postcard::to_extend(msg, Append(buf)) {
        buf.truncate(start);
        return Err(WireError::Encode(e.to_string()));
    }
    let len = buf.len() - start - HEADER;
    let max = max.min(u32::MAX as usize);
    if len > max {
        buf.truncate(start);
        return Err(WireError::Oversize { len, max });
    }
    // `len <= max <= u32::MAX`, so the cast is lossless.
    buf[start..start + HEADER].copy_from_slice(&(len as u32).to_be_bytes());
    Ok(())
}

/// Writes `msg` as one frame with a single write. Allocates a buffer per call; use a
/// [`FrameWriter`] on hot paths. Not cancel-safe: a cancelled write may leave half a
/// frame on the stream.
pub async fn write_frame<W, T>(w: &mut W, msg: &T) -> Result<(), WireError>
where
    W: AsyncWrite + Unpin + ?Sized,
    T: Serialize + ?Sized,
{
    let mut buf = Vec::with_capacity(64);
    encode_frame_into(&mut buf, msg, MAX_FRAME)?;
    w.write_all(&buf).await?;
    w.flush().await?;
    Ok(())
}

/// Reads one frame of at most `max` body bytes and decodes it. `Ok(None)` means the
/// stream ended cleanly between frames. Reads exactly the frame's bytes, nothing
/// more, so a [`FrameReader`] can take over the stream afterwards. Not cancel-safe;
/// [`FrameReader::read`] is.
pub async fn read_frame<T, R>(r: &mut R, max: usize) -> Result<Option<T>, WireError>
where
    T: DeserializeOwned,
    R: AsyncRead + Unpin + ?Sized,
{
    match read_frame_bytes(r, max).await? {
        None => Ok(None),
        Some(body) => decode(&body).map(Some),
    }
}

async fn read_frame_bytes<R>(r: &mut R, max: usize) -> Result<Option<Vec<u8>>, WireError>
where
    R: AsyncRead + Unpin + ?Sized,
{
    let mut header = [0u8; HEADER];
    let mut got = 0;
    while got < HEADER {
        let n = r.read(&mut header[got..]).await?;
        if n == 0 {
            return if got == 0 {
                Ok(None)
            } else {
                Err(WireError::UnexpectedEof)
            };
        }
        got += n;
    }
    let len = u32::from_be_bytes(header) as usize;
    if len > max {
        return Err(WireError::Oversize { len, max });
    }
    let mut body = vec![0u8; len];
    r.read_exact(&mut body).await.map_err(|e| {
        if e.kind() == std::io::ErrorKind::UnexpectedEof {
            WireError::UnexpectedEof
        } else {
            WireError::Io(e)
        }
    })?;
    Ok(Some(body))
}

/// Decodes a hello body, checking the version before anything else so that a peer of
/// another version gets [`WireError::VersionMismatch`], not
/// [`WireError::Malformed`].
fn decode_hello(body: &[u8]) -> Result<Hello, WireError> {
    let (theirs, _) = postcard::take_from_bytes::<u32>(body).map_err(malformed)?;
    if theirs != PROTOCOL_VERSION {
        return Err(WireError::VersionMismatch {
            ours: PROTOCOL_VERSION,
            theirs,
        });
    }
    decode(body)
}

/// Writes this build's [`Hello`] with `role`.
pub async fn write_hello<W>(w: &mut W, role: Role) -> Result<(), WireError>
where
    W: AsyncWrite + Unpin + ?Sized,
{
    write_frame(w, &Hello::new(role)).await
}

/// Reads the peer's [`Hello`] and checks its version. A stream that ends before the
/// hello is [`WireError::UnexpectedEof`]; a hello longer than [`HELLO_MAX_FRAME`] is
/// [`WireError::Oversize`]. Checking the role against the peer's certificate is the
/// caller's job.
pub async fn read_hello<R>(r: &mut R) -> Result<Hello, WireError>
where
    R: AsyncRead + Unpin + ?Sized,
{
    match read_frame_bytes(r, HELLO_MAX_FRAME).await? {
        None => Err(WireError::UnexpectedEof),
        Some(body) => decode_hello(&body),
    }
}

/// A buffered frame reader for a long-lived stream: one buffer, reused, filled with
/// as many bytes as the stream has ready, so a burst of small frames costs one read.
///
/// [`read`](Self::read) is cancel-safe (all progress lives in the reader), so it can
/// sit in a `tokio::select!` loop.
#[derive(Debug)]
pub struct FrameReader<R> {
    inner: R,
    /// Bytes `start..end` are received and not yet returned; the rest is spare room.
    buf: Vec<u8>,
    start: usize,
    end: usize,
    max: usize,
}

impl<R: AsyncRead + Unpin> FrameReader<R> {
    /// A reader accepting frames up to [`MAX_FRAME`].
    pub fn new(inner: R) -> Self {
        Self::with_max(inner, MAX_FRAME)
    }

    /// A reader accepting frames up to `max` body bytes.
    pub fn with_max(inner: R, max: usize) -> Self {
        FrameReader {
            inner,
            buf: vec![0; INITIAL_BUF],
            start: 0,
            end: 0,
            max,
        }
    }

    /// The maximum body length this reader accepts.
    pub fn max(&self) -> usize {
        self.max
    }

    /// Reads and decodes the next frame. `Ok(None)` means the stream ended cleanly
    /// between frames. After [`WireError::Malformed`] the next frame can still be
    /// read; after any other error the stream is unusable.
    pub async fn read<T: DeserializeOwned>(&mut self) -> Result<Option<T>, WireError> {
        let Some(len) = self.fill_frame(self.max).await? else {
            return Ok(None);
        };
        let body_start = self.start + HEADER;
        let msg = decode(&self.buf[body_start..body_start + len]);
        self.consume(HEADER + len);
        msg.map(Some)
    }

    /// Reads the peer's [`Hello`] (at most [`HELLO_MAX_FRAME`] bytes) and checks its
    /// version, like [`read_hello`].
    pub async fn read_hello(&mut self) -> Result<Hello, WireError> {
        let Some(len) = self.fill_frame(HELLO_MAX_FRAME).await? else {
            return Err(WireError::UnexpectedEof);
        };
        let body_start = self.start + HEADER;
        let hello = decode_hello(&self.buf[body_start..body_start + len]);
        self.consume(HEADER + len);
        hello
    }

    /// Bytes received but not yet returned as frames.
    pub fn buffered(&self) -> usize {
        self.end - self.start
    }

    /// The underlying stream.
    pub fn get_ref(&self) -> &R {
        &self.inner
    }

    /// The underlying stream. Reading from it directly skips buffered bytes.
    pub fn get_mut(&mut self) -> &mut R {
        &mut self.inner
    }

    /// The underlying stream; [`buffered`](Self::buffered) bytes are lost.
    pub fn into_inner(self) -> R {
        self.inner
    }

    /// Makes sure one whole frame sits at `self.start` and returns its body length;
    /// `None` on a clean end of stream.
    async fn fill_frame(&mut self, max: usize) -> Result<Option<usize>, WireError> {
        loop {
            let avail = self.end - self.start;
            let need = if avail >= HEADER {
                let mut header = [0u8; HEADER];
                header.copy_from_slice(&self.buf[self.start..self.start + HEADER]);
                let len = u32::from_be_bytes(header) as usize;
                if len > max {
                    return Err(WireError::Oversize { len, max });
                }
                if avail >= HEADER + len {
                    return Ok(Some(len));
                }
                HEADER + len
            } else {
                HEADER
            };
            self.make_room(need);
            let n = self.inner.read(&mut self.buf[self.end..]).await?;
            if n == 0 {
                return if self.end == self.start {
                    Ok(None)
                } else {
                    Err(WireError::UnexpectedEof)
                };
            }
            self.end += n;
        }
    }

    /// Ensures `buf[start..]` can hold `need` bytes, moving pending bytes to the front
    /// and growing the buffer only when that is not enough.
    fn make_room(&mut self, need: usize) {
        if self.buf.len() - self.start >= need && self.end < self.buf.len() {
            return;
        }
        self.buf.copy_within(self.start..self.end, 0);
        self.end -= self.start;
        self.start = 0;
        if self.buf.len() < need {
            let grown = need.max(self.buf.len() * 2);
            self.buf.resize(grown, 0);
        }
    }

    fn consume(&mut self, n: usize) {
        self.start += n;
        if self.start == self.end {
            self.start = 0;
            self.end = 0;
            if self.buf.len() > SHRINK_ABOVE {
                self.buf.truncate(INITIAL_BUF);
                self.buf.shrink_to_fit();
            }
        }
    }
}

/// A frame writer for a long-lived stream with one reusable buffer. Each
/// [`write`](Self::write) is one write call; [`queue`](Self::queue) several messages
/// and [`flush`](Self::flush) to send a batch with one write.
///
/// Writes are not cancel-safe: a cancelled write may leave half a frame on the
/// stream, after which the stream must be abandoned.
#[derive(Debug)]
pub struct FrameWriter<W> {
    inner: W,
    buf: Vec<u8>,
    max: usize,
}

impl<W: AsyncWrite + Unpin> FrameWriter<W> {
    /// A writer refusing to send frames over [`MAX_FRAME`].
    pub fn new(inner: W) -> Self {
        Self::with_max(inner, MAX_FRAME)
    }

    /// A writer refusing to send frames over `max` body bytes.
    pub fn with_max(inner: W, max: usize) -> Self {
        FrameWriter {
            inner,
            buf: Vec::with_capacity(INITIAL_BUF),
            max,
        }
    }

    /// Encodes `msg` into the buffer without writing. On error nothing is queued.
    pub fn queue<T: Serialize + ?Sized>(&mut self, msg: &T) -> Result<(), WireError> {
        encode_frame_into(&mut self.buf, msg, self.max)
    }

    /// Writes every queued frame with one write.
    pub async fn flush(&mut self) -> Result<(), WireError> {
        if !self.buf.is_empty() {
            let result = self.inner.write_all(&self.buf).await;
            self.buf.clear();
            if self.buf.capacity() > SHRINK_ABOVE {
                self.buf.shrink_to(INITIAL_BUF);
            }
            result?;
        }
        self.inner.flush().await?;
        Ok(())
    }

    /// Queues `msg` and flushes (together with anything queued before).
    pub async fn write<T: Serialize + ?Sized>(&mut self, msg: &T) -> Result<(), WireError> {
        self.queue(msg)?;
        self.flush().await
    }

    /// Writes this build's [`Hello`] with `role`.
    pub async fn write_hello(&mut self, role: Role) -> Result<(), WireError> {
        self.write(&Hello::new(role)).await
    }

    /// Bytes queued and not yet written.
    pub fn queued(&self) -> usize {
        self.buf.len()
    }

    /// The underlying stream.
    pub fn get_ref(&self) -> &W {
        &self.inner
    }

    /// The underlying stream (e.g. to `finish()` a QUIC send stream).
    pub fn get_mut(&mut self) -> &mut W {
        &mut self.inner
    }

    /// The underlying stream; queued bytes are dropped.
    pub fn into_inner(self) -> W {
        self.inner
    }
}
