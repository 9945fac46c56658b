//! A webhook receiver for the notification tests: a tiny HTTP/1.1 server on 127.0.0.1 (std
//! only, one thread; over TLS with [`Receiver::start_tls`]) that records every request with
//! the time it arrived and answers from a script (then a default answer). Stopped and joined
//! on drop.

use std::collections::VecDeque;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// One request the receiver got.
#[derive(Debug, Clone)]
pub struct Recorded {
    /// When it arrived (fully read).
    pub at: Instant,
    /// `POST`, ...
    pub method: String,
    /// The request target.
    pub path: String,
    /// Headers, names lower-cased, in order.
    pub headers: Vec<(String, String)>,
    /// The raw body.
    pub body: Vec<u8>,
}

impl Recorded {
    /// A header's value (name case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        let name = name.to_ascii_lowercase();
        self.headers
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(_, v)| v.as_str())
    }

    /// The body as JSON; panics when it is not.
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| {
            panic!(
                "body is not JSON ({e}): {}",
                String::from_utf8_lossy(&self.body)
            )
        })
    }

    /// The body as text.
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// An answer: status, extra headers, body.
#[derive(Debug, Clone)]
pub struct Reply {
    /// The status code.
    pub status: u16,
    /// Extra headers.
    pub headers: Vec<(String, String)>,
    /// The body.
    pub body: String,
    /// How long to wait before answering.
    pub delay: Duration,
}

impl Reply {
    /// A bare answer with this status.
    pub fn status(status: u16) -> Reply {
        Reply {
            status,
            headers: Vec::new(),
            body: String::new(),
            delay: Duration::ZERO,
        }
    }

    /// Answers only after `delay` (a slow receiver).
    pub fn after(mut self, delay: Duration) -> Reply {
        self.delay = delay;
        self
    }

    /// Adds a header.
    pub fn header(mut self, name: &str, value: &str) -> Reply {
        self.headers.push((name.to_string(), value.to_string()));
        self
    }
}

struct State {
    requests: Mutex<Vec<Recorded>>,
    script: Mutex<VecDeque<Reply>>,
    default: Reply,
    stop: AtomicBool,
}

#[path = "../../../../agent/tests/integration/common/test_cert.rs"]
mod test_cert;
pub use test_cert::TestCert;

/// A running receiver.
pub struct Receiver {
    /// Where it listens.
    pub addr: SocketAddr,
    tls: bool,
    state: Arc<State>,
    thread: Option<JoinHandle<()>>,
}

impl Receiver {
    /// Listens on a free port; answers `script` in order, then `200`.
    pub fn start(script: Vec<Reply>) -> Receiver {
        Receiver::start_on("127.0.0.1:0".parse().expect("address"), script)
    }

    /// Like [`Receiver::start`], over TLS with `cert` (its `url` is `https://`).
    pub fn start_tls(cert: &TestCert, script: Vec<Reply>) -> Receiver {
        let acceptor = cert.acceptor();
        Receiver::listen(
            "127.0.0.1:0".parse().expect("address"),
            script,
            Some(acceptor),
        )
    }

    /// Listens on `addr` (retrying for a few seconds while the port is still taken).
    pub fn start_on(addr: SocketAddr, script: Vec<Reply>) -> Receiver {
        Receiver::listen(addr, script, None)
    }

    fn listen(
        addr: SocketAddr,
        script: Vec<Reply>,
        tls: Option<native_tls::TlsAcceptor>,
    ) -> Receiver {
        let deadline = Instant::now() + Duration::from_secs(10);
        let listener = loop {
            match TcpListener::bind(addr) {
                Ok(l) => break l,
                Err(e) => {
                    assert!(Instant::now() < deadline, "cannot bind {addr}: {e}");
                    std::thread::sleep(Duration::from_millis(50));
                }
            }
        };
        let addr = listener.local_addr().expect("local address");
        let state = Arc::new(State {
            requests: Mutex::new(Vec::new()),
            script: Mutex::new(script.into()),
            default: Reply::status(200),
            stop: AtomicBool::new(false),
        });
        let is_tls = tls.is_some();
        let thread = {
            let state = state.clone();
            std::thread::spawn(move || serve(&listener, &state, tls.as_ref()))
        };
        Receiver {
            addr,
            tls: is_tls,
            state,
            thread: Some(thread),
        }
    }

    /// A free port on 127.0.0.1 with nothing listening (yet).
    pub fn free_addr() -> SocketAddr {
        let l = TcpListener::bind("127.0.0.1:0").expect("bind");
        l.local_addr().expect("address")
    }

    /// `http://ADDR/path` (`https://` over TLS).
    pub fn url(&self, path: &str) -> String {
        let scheme = if self.tls { "https" } else { "http" };
        format!("{scheme}://{}{path}", self.addr)
    }

    /// Every request so far.
    pub fn requests(&self) -> Vec<Recorded> {
        self.state
            .requests
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    /// Polls until at least `n` requests arrived; panics after `limit`.
    pub fn wait_for(&self, n: usize, limit: Duration) -> Vec<Recorded> {
        let deadline = Instant::now() + limit;
        loop {
            let got = self.requests();
            if got.len() >= n {
                return got;
            }
            assert!(
                Instant::now() < deadline,
                "receiver {} got {} requests, wanted {n}, within {limit:?}: {:?}",
                self.addr,
                got.len(),
                got.iter().map(Recorded::text).collect::<Vec<_>>()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        self.state.stop.store(true, Ordering::SeqCst);
        // Unblock accept().
        let _ = TcpStream::connect_timeout(&self.addr, Duration::from_secs(1));
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn serve(listener: &TcpListener, state: &State, tls: Option<&native_tls::TlsAcceptor>) {
    for stream in listener.incoming() {
        if state.stop.load(Ordering::SeqCst) {
            return;
        }
        let Ok(stream) = stream else { continue };
        let _ = stream.set_read_timeout(Some(Duration::from_secs(5)));
        match tls {
            // A failed handshake (a client that does not trust us) records nothing.
            Some(acceptor) => {
                if let Ok(mut stream) = acceptor.accept(stream) {
                    answer(&mut stream, state);
                }
            }
            None => answer(&mut &stream, state),
        }
    }
}

/// Reads one request from `stream`, records it and answers it.
fn answer<S: Read + Write>(stream: &mut S, state: &State) {
    let Some(req) = read_request(stream) else {
        return;
    };
    let reply = state
        .script
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .pop_front()
        .unwrap_or_else(|| state.default.clone());
    state
        .requests
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .push(req);
    std::thread::sleep(reply.delay);
    let mut head = format!(
        "HTTP/1.1 {} X\r\nContent-Length: {}\r\nConnection: close\r\n",
        reply.status,
        reply.body.len()
    );
    for (n, v) in &reply.headers {
        head.push_str(&format!("{n}: {v}\r\n"));
    }
    head.push_str("\r\n");
    let _ = stream.write_all(head.as_bytes());
    let _ = stream.write_all(reply.body.as_bytes());
    let _ = stream.flush();
}

fn read_request<S: Read>(stream: &mut S) -> Option<Recorded> {
    let mut reader = BufReader::new(stream);
    let mut line = String::new();
    reader.read_line(&mut line).ok()?;
    let mut parts = line.split_whitespace();
    let method = parts.next()?.to_string();
    let path = parts.next()?.to_string();
    let mut headers = Vec::new();
    loop {
        let mut h = String::new();
        reader.read_line(&mut h).ok()?;
        let h = h.trim_end();
        if h.is_empty() {
            break;
        }
        if let Some((n, v)) = h.split_once(':') {
            headers.push((n.trim().to_ascii_lowercase(), v.trim().to_string()));
        }
    }
    let len = headers
        .iter()
        .find(|(n, _)| n == "content-length")
        .and_then(|(_, v)| v.parse::<usize>().ok())
        .unwrap_or(0);
    let mut body = vec![0u8; len];
    reader.read_exact(&mut body).ok()?;
    Some(Recorded {
        at: Instant::now(),
        method,
        path,
        headers,
        body,
    })
}
