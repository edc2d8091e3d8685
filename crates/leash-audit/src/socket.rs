//! The socket audit device: JSON lines over TCP (or a Unix stream socket) to a log
//! pipeline, with a bounded buffer and reconnection.
//!
//! One thread per device, fed by the same queue and [`Writer`] as the file device. The
//! thread takes each line in queue order, appends the hash-chain fields (the same chain as
//! a file device: a genesis line when the device starts, then each line carries the hash
//! of the one before it), keeps it in its buffer, and writes the buffer to the peer. A
//! caller hears `Ok` only once its line was **written to the socket**; that is when the
//! entry counts as recorded by this device (fail closed: when this is the only device and
//! its peer is down past the broker's deadline, the request fails).
//!
//! While the peer is unreachable the thread keeps taking lines into its buffer (at most
//! `buffer_size`; past it a new line fails at once, it is not buffered) and reconnects
//! with exponential backoff ([`MIN_BACKOFF`] doubling to [`MAX_BACKOFF`]). When the peer is
//! back, the buffered lines are written first, in order, so the chain the receiver sees is
//! unbroken even across reconnections. Before each write the thread checks, without
//! blocking, whether the peer has closed the connection, so lines are not written into a
//! connection the peer already closed. A write that fails part-way is sent again whole on
//! the next connection (the old connection may end with a torn line).
//!
//! Not here: option parsing (`config`), building entries (the core), choosing devices
//! (`broker`).

use std::collections::VecDeque;
use std::io::{self, Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::os::unix::net::UnixStream;
use std::sync::Arc;
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, TryRecvError};
use std::time::{Duration, Instant};

use tokio::sync::oneshot;

use crate::chain;
use crate::config::{SocketAddress, SocketOptions};
use crate::error::AuditError;
use crate::file::{self, Job, WriteResult, Writer};
use crate::stats::Counters;

/// The first wait before reconnecting.
pub(crate) const MIN_BACKOFF: Duration = Duration::from_millis(50);
/// The longest wait between reconnection attempts.
pub(crate) const MAX_BACKOFF: Duration = Duration::from_secs(2);
/// Most lines the thread takes from its queue between two writes.
const MAX_TAKE: usize = 1024;
/// A write stops taking buffered lines once it holds this many bytes.
const MAX_WRITE_BYTES: usize = 1 << 20;

/// A connection to the peer.
enum Conn {
    Tcp(TcpStream),
    Unix(UnixStream),
}

impl Conn {
    fn connect(address: &SocketAddress, timeout: Duration) -> io::Result<Conn> {
        let conn = match address {
            SocketAddress::Tcp(a) => {
                let mut last = io::Error::new(
                    io::ErrorKind::NotFound,
                    format!("{a:?} resolves to no address"),
                );
                let mut found = None;
                for addr in a.to_socket_addrs()? {
                    match TcpStream::connect_timeout(&addr, timeout) {
                        Ok(s) => {
                            found = Some(s);
                            break;
                        }
                        Err(e) => last = e,
                    }
                }
                let s = found.ok_or(last)?;
                s.set_nodelay(true)?;
                s.set_write_timeout(Some(timeout))?;
                Conn::Tcp(s)
            }
            SocketAddress::Unix(p) => {
                let s = UnixStream::connect(p)?;
                s.set_write_timeout(Some(timeout))?;
                Conn::Unix(s)
            }
        };
        Ok(conn)
    }

    fn set_nonblocking(&self, on: bool) -> io::Result<()> {
        match self {
            Conn::Tcp(s) => s.set_nonblocking(on),
            Conn::Unix(s) => s.set_nonblocking(on),
        }
    }

    /// Whether the peer still has the connection open: reads (and discards) whatever it
    /// sent, without blocking; end of stream or an error means it is gone.
    fn peer_open(&mut self) -> bool {
        if self.set_nonblocking(true).is_err() {
            return false;
        }
        let mut scratch = [0u8; 512];
        let open = loop {
            match self.read(&mut scratch) {
                Ok(0) => break false,
                Ok(_) => continue,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break true,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(_) => break false,
            }
        };
        open && self.set_nonblocking(false).is_ok()
    }
}

impl Read for Conn {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Conn::Tcp(s) => s.read(buf),
            Conn::Unix(s) => s.read(buf),
        }
    }
}

impl Write for Conn {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Conn::Tcp(s) => s.write(buf),
            Conn::Unix(s) => s.write(buf),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        match self {
            Conn::Tcp(s) => s.flush(),
            Conn::Unix(s) => s.flush(),
        }
    }
}

/// A chained line waiting to be written, and the caller waiting for it.
struct Pending {
    line: Vec<u8>,
    reply: oneshot::Sender<WriteResult>,
}

/// Starts a socket device's thread. With `require_peer` (enabling through the API) the
/// peer must accept a connection within `deadline`, or the device is refused; without it
/// (re-enabling at start-up) the device starts disconnected and connects in the
/// background, buffering meanwhile.
pub(crate) async fn start(
    name: &str,
    opts: &SocketOptions,
    capacity: usize,
    deadline: Duration,
    require_peer: bool,
    counters: Arc<Counters>,
) -> Result<Writer, AuditError> {
    let address = opts.address.clone();
    let open_error = |reason: String| AuditError::Open {
        path: address.to_string(),
        reason,
    };
    let (tx, rx) = mpsc::sync_channel::<Job>(capacity.max(1));
    let (ready_tx, ready_rx) = oneshot::channel::<Result<(), String>>();
    let (done_tx, done_rx) = oneshot::channel::<()>();
    let thread = Thread {
        address: address.clone(),
        timeout: opts.write_timeout,
        buffer_size: opts.buffer_size,
        counters,
        name: name.to_owned(),
    };
    std::thread::Builder::new()
        .name(format!("audit {name}"))
        .spawn(move || {
            let conn = match Conn::connect(&thread.address, thread.timeout) {
                Ok(c) => Some(c),
                Err(e) if require_peer => {
                    let _ = ready_tx.send(Err(format!("cannot connect: {e}")));
                    let _ = done_tx.send(());
                    return;
                }
                Err(e) => {
                    tracing::warn!(device = %thread.name, address = %thread.address, error = %e,
                        "audit socket device cannot reach its peer; buffering and retrying");
                    None
                }
            };
            if ready_tx.send(Ok(())).is_ok() {
                thread.run(conn, &rx);
            }
            let _ = done_tx.send(());
        })
        .map_err(|e| open_error(format!("cannot start the writer thread: {e}")))?;
    match tokio::time::timeout(deadline, ready_rx).await {
        Ok(Ok(Ok(()))) => Ok(Writer::from_parts(tx, done_rx)),
        Ok(Ok(Err(reason))) => Err(open_error(reason)),
        Ok(Err(_)) => Err(open_error(
            "the writer thread ended before connecting".to_owned(),
        )),
        Err(_) => Err(open_error(format!(
            "connecting did not finish within {} ms",
            deadline.as_millis()
        ))),
    }
}

struct Thread {
    address: SocketAddress,
    timeout: Duration,
    buffer_size: usize,
    counters: Arc<Counters>,
    name: String,
}

/// The device's hash chain position.
struct Chain {
    head: [u8; 32],
    genesis: bool,
}

impl Thread {
    /// The loop: take lines, chain and buffer them, write them while connected,
    /// reconnect with backoff while not — until the device is closed and everything
    /// buffered was written (or, if the peer is down when it closes, failed).
    fn run(&self, mut conn: Option<Conn>, rx: &Receiver<Job>) {
        self.counters.set_up(conn.is_some());
        let mut chain = Chain {
            head: [0; 32],
            genesis: true,
        };
        let mut buffered: VecDeque<Pending> = VecDeque::new();
        let mut closed = false;
        let mut backoff = MIN_BACKOFF;
        let mut next_attempt = Instant::now();
        let mut buf: Vec<u8> = Vec::new();
        loop {
            // Wait for work: a line when connected and idle; a line or the next
            // reconnection attempt when disconnected.
            if !closed {
                let first = match (&conn, buffered.is_empty()) {
                    (Some(_), true) => rx.recv().map_err(|_| RecvTimeoutError::Disconnected),
                    (Some(_), false) => Err(RecvTimeoutError::Timeout),
                    (None, _) => {
                        let wait = next_attempt.saturating_duration_since(Instant::now());
                        if wait.is_zero() {
                            Err(RecvTimeoutError::Timeout)
                        } else {
                            rx.recv_timeout(wait)
                        }
                    }
                };
                match first {
                    Ok(job) => self.take(job, &mut chain, &mut buffered),
                    Err(RecvTimeoutError::Timeout) => {}
                    Err(RecvTimeoutError::Disconnected) => closed = true,
                }
                for _ in 0..MAX_TAKE {
                    match rx.try_recv() {
                        Ok(job) => self.take(job, &mut chain, &mut buffered),
                        Err(TryRecvError::Empty) => break,
                        Err(TryRecvError::Disconnected) => {
                            closed = true;
                            break;
                        }
                    }
                }
            }

            if conn.as_mut().is_some_and(|c| !c.peer_open()) {
                conn = None;
                self.lost("the peer closed the connection");
            }
            if conn.is_none() {
                if closed {
                    let n = buffered.len();
                    for p in buffered.drain(..) {
                        let _ = p.reply.send(Err(Arc::new(io::Error::new(
                            io::ErrorKind::NotConnected,
                            "device closed while its peer was unreachable",
                        ))));
                    }
                    if n > 0 {
                        tracing::warn!(device = %self.name, address = %self.address, entries = n,
                            "audit socket device closed with entries its peer never received");
                    }
                    return;
                }
                if Instant::now() < next_attempt {
                    continue;
                }
                match Conn::connect(&self.address, self.timeout) {
                    Ok(c) => {
                        tracing::info!(device = %self.name, address = %self.address, buffered = buffered.len(),
                            "audit socket device reconnected");
                        conn = Some(c);
                        backoff = MIN_BACKOFF;
                        self.counters.set_up(true);
                    }
                    Err(e) => {
                        tracing::debug!(device = %self.name, address = %self.address, error = %e,
                            "audit socket device: reconnection failed");
                        next_attempt = Instant::now() + backoff;
                        backoff = (backoff * 2).min(MAX_BACKOFF);
                        continue;
                    }
                }
            }
            let Some(c) = conn.as_mut() else { continue };
            if buffered.is_empty() {
                if closed {
                    return;
                }
                continue;
            }

            // Write as much of the buffer as one write holds.
            buf.clear();
            for (i, p) in buffered.iter().enumerate() {
                if i > 0 && buf.len() + p.line.len() > MAX_WRITE_BYTES {
                    break;
                }
                buf.extend_from_slice(&p.line);
            }
            let (written, result) = file::write_counting(c, &buf);
            // Every line wholly written counts as recorded.
            let mut done_bytes = 0;
            let mut done = 0u64;
            while let Some(p) = buffered.front() {
                if done_bytes + p.line.len() > written {
                    break;
                }
                done_bytes += p.line.len();
                done += 1;
                if let Some(p) = buffered.pop_front() {
                    let _ = p.reply.send(Ok(()));
                }
            }
            self.counters.add_entries(done);
            if let Err(e) = result {
                conn = None;
                self.lost(&e.to_string());
                // Try again at once (the peer may have restarted); backoff follows.
                next_attempt = Instant::now();
            }
            buf.shrink_to(MAX_WRITE_BYTES);
        }
    }

    /// Chains `job`'s line and buffers it, or fails it at once if the buffer is full.
    fn take(&self, job: Job, chain: &mut Chain, buffered: &mut VecDeque<Pending>) {
        let fail = |job: Job, kind: io::ErrorKind, msg: &str| {
            let _ = job
                .reply
                .send(Err(Arc::new(io::Error::new(kind, msg.to_owned()))));
        };
        if buffered.len() >= self.buffer_size {
            return fail(
                job,
                io::ErrorKind::OutOfMemory,
                "buffer full: the peer has been unreachable for too long",
            );
        }
        let content = job.line.strip_suffix(b"\n").unwrap_or(&job.line);
        let Some(body) = content.strip_suffix(b"}") else {
            return fail(
                job,
                io::ErrorKind::InvalidData,
                "an audit entry must be a JSON object",
            );
        };
        let nonce = if chain.genesis {
            match file::genesis_nonce() {
                Ok(n) => {
                    chain.head = chain::genesis_hash(&n);
                    Some(n)
                }
                Err(e) => {
                    let _ = job.reply.send(Err(Arc::new(e)));
                    return;
                }
            }
        } else {
            None
        };
        let mut line = Vec::with_capacity(body.len() + 128);
        chain::append_fields(
            body,
            &mut line,
            nonce.as_deref().map(|n| (n, GENESIS_REASON)),
            &chain.head,
        );
        chain.genesis = false;
        chain.head = chain::line_hash(&line);
        line.push(b'\n');
        buffered.push_back(Pending {
            line,
            reply: job.reply,
        });
    }

    fn lost(&self, why: &str) {
        self.counters.set_up(false);
        tracing::warn!(device = %self.name, address = %self.address, error = %why,
            "audit socket device lost its peer; buffering and reconnecting");
    }
}

/// The reason a socket device's genesis line gives.
const GENESIS_REASON: &str = "socket device: a chain starts each time the device starts";
