//! The step's output: its pipes, read in chunks and split into lines for an
//! [`OutputSink`], with backpressure from the sink onto the pipes.

use std::io::ErrorKind;
use std::os::fd::OwnedFd;
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt};
use tokio::net::unix::pipe::Receiver;

/// Bytes read from a pipe at a time.
const READ_CHUNK: usize = 64 * 1024;

/// How long a step's output pipes go unwatched before its output is streamed (see `run`).
pub(super) const STREAM_AFTER: Duration = Duration::from_millis(5);
/// Longest line handed to the callback; longer lines are split.
pub const MAX_LINE: usize = 64 * 1024;

/// Which output stream a line came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Stream {
    /// The process's standard output.
    Stdout,
    /// The process's standard error.
    Stderr,
}

/// Where a step's output goes. The reader hands over every line as it is read, then asks
/// [`OutputSink::end_of_read`] whether the sink can take more; when it cannot, the step's
/// pipes are not read until [`OutputSink::ready`] resolves. A step that writes faster than
/// its output is consumed then blocks in its own `write` (a full pipe), like a program
/// piped into a slow reader, and memory stays flat whatever it prints. Timeouts, cancels
/// and the step's exit are still handled while the reader waits.
pub trait OutputSink: Send {
    /// One line of output, without its line ending (invalid UTF-8 replaced; lines longer
    /// than [`MAX_LINE`] split).
    fn line(&mut self, stream: Stream, line: &str);

    /// Several whole lines at once, as most reads bring them: `lines` holds one or more
    /// lines, each ending with `\n` (valid UTF-8, no `\r`, none longer than [`MAX_LINE`]).
    /// By default each goes to [`OutputSink::line`].
    fn lines(&mut self, stream: Stream, lines: &str) {
        for line in lines.split_terminator('\n') {
            self.line(stream, line);
        }
    }

    /// The lines of one read have all been handed over. False when the sink holds output
    /// it cannot pass on yet: the reader then waits for [`OutputSink::ready`].
    fn end_of_read(&mut self) -> bool {
        true
    }

    /// Resolves once the sink has passed on what it held. Must be cancel-safe: dropped
    /// before it resolves, it loses nothing.
    fn ready(&mut self) -> impl Future<Output = ()> + Send {
        std::future::ready(())
    }
}

/// A closure as an [`OutputSink`] that always takes more.
pub(super) struct FnSink<F>(pub(super) F);

impl<F: FnMut(Stream, &str) + Send> OutputSink for FnSink<F> {
    fn line(&mut self, stream: Stream, line: &str) {
        (self.0)(stream, line);
    }
}

/// Splits a byte stream into lines for the callback.
pub(super) struct LineSplitter {
    stream: Stream,
    buf: Vec<u8>,
}

impl LineSplitter {
    pub(super) fn new(stream: Stream) -> LineSplitter {
        LineSplitter {
            stream,
            buf: Vec::new(),
        }
    }

    pub(super) fn feed<S: OutputSink + ?Sized>(&mut self, data: &[u8], on_line: &mut S) {
        let mut rest = data;
        // The line held from the previous read ends first.
        if !self.buf.is_empty() {
            let Some(pos) = memchr::memchr(b'\n', rest) else {
                self.hold(rest, on_line);
                return;
            };
            self.buf.extend_from_slice(&rest[..pos]);
            emit(self.stream, &self.buf, on_line);
            self.buf.clear();
            rest = &rest[pos + 1..];
        }
        if let Some(last) = memchr::memrchr(b'\n', rest) {
            let block = &rest[..=last];
            // The usual case in one piece: valid UTF-8 without `\r`, and no line can be
            // longer than the limit because the whole block is not.
            let whole = (block.len() <= MAX_LINE && memchr::memchr(b'\r', block).is_none())
                .then(|| std::str::from_utf8(block).ok())
                .flatten();
            match whole {
                Some(text) => on_line.lines(self.stream, text),
                None => {
                    for line in block[..last].split(|b| *b == b'\n') {
                        emit(self.stream, line, on_line);
                    }
                }
            }
            rest = &rest[last + 1..];
        }
        self.hold(rest, on_line);
    }

    /// Keeps the start of a line for the next read; a held part that reaches [`MAX_LINE`]
    /// goes out as a line of its own.
    fn hold<S: OutputSink + ?Sized>(&mut self, rest: &[u8], on_line: &mut S) {
        self.buf.extend_from_slice(rest);
        while self.buf.len() >= MAX_LINE {
            let tail = self.buf.split_off(MAX_LINE);
            emit(self.stream, &self.buf, on_line);
            self.buf = tail;
        }
    }

    pub(super) fn finish<S: OutputSink + ?Sized>(&mut self, on_line: &mut S) {
        if !self.buf.is_empty() {
            emit(self.stream, &self.buf, on_line);
            self.buf.clear();
        }
    }
}

fn emit<S: OutputSink + ?Sized>(stream: Stream, line: &[u8], on_line: &mut S) {
    let line = line.strip_suffix(b"\r").unwrap_or(line);
    match std::str::from_utf8(line) {
        Ok(s) => on_line.line(stream, s),
        Err(_) => on_line.line(stream, &String::from_utf8_lossy(line)),
    }
}

/// Registers a pipe's read end with the reactor.
fn watch(fd: Option<OwnedFd>) -> std::io::Result<Option<Receiver>> {
    fd.map(Receiver::from_owned_fd_unchecked).transpose()
}

/// Reads a non-blocking pipe until it is empty, feeding `lines`. Returns the pipe while a
/// writer still holds it open; `None` at end of file (or on an error, which the watched path
/// treats the same way).
fn drain_now(
    fd: OwnedFd,
    buf: &mut Vec<u8>,
    lines: &mut LineSplitter,
    on_line: &mut impl OutputSink,
) -> Option<OwnedFd> {
    use std::io::Read;
    let mut file = std::fs::File::from(fd);
    buf.resize(READ_CHUNK, 0);
    let open = loop {
        match file.read(buf) {
            Ok(0) => break false,
            Ok(n) => lines.feed(&buf[..n], on_line),
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(e) if e.kind() == ErrorKind::WouldBlock => break true,
            Err(_) => break false,
        }
    };
    buf.clear();
    if open {
        Some(OwnedFd::from(file))
    } else {
        lines.finish(on_line);
        None
    }
}

async fn read_some<R: AsyncRead + Unpin>(
    reader: &mut Option<R>,
    buf: &mut Vec<u8>,
) -> std::io::Result<usize> {
    match reader {
        Some(r) => r.read_buf(buf).await,
        None => std::future::pending().await,
    }
}

/// Keeps reading (and dropping) a pipe in the background so that a process the step left
/// running does not die of a closed pipe.
fn detach_drain<R: AsyncRead + Unpin + Send + 'static>(reader: Option<R>) {
    if let Some(mut r) = reader {
        tokio::spawn(async move {
            let mut buf = vec![0u8; 8192];
            while let Ok(n) = r.read(&mut buf).await {
                if n == 0 {
                    break;
                }
            }
        });
    }
}

/// One output pipe of the step, from the spawn to its end of file.
pub(super) struct OutputPipe {
    /// The read end while it is not yet registered with the reactor (see [`STREAM_AFTER`]).
    pending: Option<OwnedFd>,
    /// The read end registered with the reactor; `None` once closed or handed off.
    reader: Option<Receiver>,
    lines: LineSplitter,
    /// Uninitialised capacity (`read_buf` appends), so no per-step memset.
    buf: Vec<u8>,
}

impl OutputPipe {
    /// A pipe whose read end is `fd`, not yet watched; `None` for a stream that has no pipe
    /// of its own (stderr merged into stdout).
    pub(super) fn new(stream: Stream, fd: Option<OwnedFd>) -> OutputPipe {
        OutputPipe {
            pending: fd,
            reader: None,
            lines: LineSplitter::new(stream),
            buf: Vec::with_capacity(READ_CHUNK),
        }
    }

    /// Whether the pipe is not watched yet.
    pub(super) fn is_pending(&self) -> bool {
        self.pending.is_some()
    }

    /// Whether the pipe is watched and open.
    pub(super) fn is_reading(&self) -> bool {
        self.reader.is_some()
    }

    /// Starts watching the pipe with the reactor.
    pub(super) fn watch(&mut self) -> std::io::Result<()> {
        if let Some(fd) = self.pending.take() {
            self.reader = watch(Some(fd))?;
        }
        Ok(())
    }

    /// At the leader's exit: reads what the pipe holds now, and watches it while a process
    /// the step left behind still holds it open.
    pub(super) fn drain_at_exit(&mut self, sink: &mut impl OutputSink) -> std::io::Result<()> {
        if let Some(fd) = self.pending.take() {
            let open = drain_now(fd, &mut self.buf, &mut self.lines, sink);
            self.reader = watch(open)?;
        }
        Ok(())
    }

    /// Reads what the watched pipe holds (pending for ever when it is not watched).
    pub(super) async fn read(&mut self) -> std::io::Result<usize> {
        read_some(&mut self.reader, &mut self.buf).await
    }

    /// Hands what [`OutputPipe::read`] brought to the sink; at end of file (or on an error)
    /// the pipe is closed.
    pub(super) fn take_read(&mut self, read: std::io::Result<usize>, sink: &mut impl OutputSink) {
        match read {
            Ok(0) | Err(_) => {
                self.lines.finish(sink);
                self.reader = None;
            }
            Ok(_) => {
                self.lines.feed(&self.buf, sink);
                self.buf.clear();
            }
        }
    }

    /// Leaves the rest of the pipe to a background drain that drops it.
    pub(super) fn detach(&mut self) {
        detach_drain(self.reader.take());
    }

    /// Hands a last unterminated line to the sink.
    pub(super) fn finish(&mut self, sink: &mut impl OutputSink) {
        self.lines.finish(sink);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splitter_splits_and_keeps_partial() {
        let mut lines = Vec::new();
        let mut cb = FnSink(|s: Stream, l: &str| lines.push((s, l.to_string())));
        let mut sp = LineSplitter::new(Stream::Stdout);
        sp.feed(b"a\nb", &mut cb);
        sp.feed(b"c\r\n\nd", &mut cb);
        sp.feed(b"e\nf\n\ng\n", &mut cb);
        sp.feed(b"h\xff\ni\n", &mut cb);
        sp.finish(&mut cb);
        let texts: Vec<_> = lines.iter().map(|(_, l)| l.as_str()).collect();
        assert_eq!(
            texts,
            vec!["a", "bc", "", "de", "f", "", "g", "h\u{fffd}", "i"]
        );
    }

    #[test]
    fn splitter_caps_long_lines() {
        let mut n = 0;
        let mut cb = FnSink(|_: Stream, l: &str| {
            assert!(l.len() <= MAX_LINE);
            n += 1;
        });
        let mut sp = LineSplitter::new(Stream::Stderr);
        sp.feed(&vec![b'x'; MAX_LINE * 2 + 5], &mut cb);
        sp.finish(&mut cb);
        assert_eq!(n, 3);
    }

    /// Whole lines of a read go to the sink as one block when they can.
    #[test]
    fn splitter_hands_whole_lines_as_one_block() {
        #[derive(Default)]
        struct Blocks(Vec<String>);
        impl OutputSink for Blocks {
            fn line(&mut self, _: Stream, line: &str) {
                self.0.push(format!("line {line}"));
            }
            fn lines(&mut self, _: Stream, lines: &str) {
                self.0.push(format!("block {lines}"));
            }
        }
        let mut sink = Blocks::default();
        let mut sp = LineSplitter::new(Stream::Stdout);
        sp.feed(b"a\nb\nc", &mut sink);
        sp.feed(b"d\ne\nf\n", &mut sink);
        sp.feed(b"g\r\nh\n", &mut sink);
        sp.finish(&mut sink);
        assert_eq!(
            sink.0,
            [
                "block a\nb\n",
                "line cd",
                "block e\nf\n",
                "line g",
                "line h"
            ]
        );
    }
}
