//! A TCP relay that can be cut: put between one client (a node agent) and its server (etcd)
//! it partitions that client alone. [`TcpCut::cut`] closes every relayed connection and
//! leaves new ones unanswered (accepted, then nothing flows either way) until
//! [`TcpCut::restore`], which closes those held ones so the client reconnects.

use std::{
    collections::HashMap,
    io::{self, Read, Write},
    net::{Shutdown, SocketAddr, TcpListener, TcpStream},
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, Ordering},
    },
    thread::JoinHandle,
    time::Duration,
};

use anyhow::{Context, Result};

const UPSTREAM_CONNECT_TIMEOUT: Duration = Duration::from_secs(2);

pub struct TcpCut {
    addr: SocketAddr,
    shared: Arc<Shared>,
    acceptor: Option<JoinHandle<()>>,
}

#[derive(Default)]
struct Shared {
    stop: AtomicBool,
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    cut: bool,
    next_id: u64,
    /// Relayed connections: both sockets, to shut down on a cut.
    relayed: HashMap<u64, (TcpStream, TcpStream)>,
    /// Connections accepted while cut, left unanswered.
    held: Vec<TcpStream>,
}

impl TcpCut {
    /// Relays connections to 127.0.0.1:<free port> (see [`TcpCut::addr`]) to `upstream`.
    pub fn start(upstream: SocketAddr) -> Result<Self> {
        let listener = TcpListener::bind("127.0.0.1:0").context("binding the relay")?;
        let addr = listener.local_addr()?;
        listener.set_nonblocking(true)?;
        let shared = Arc::new(Shared::default());
        let acceptor = {
            let shared = shared.clone();
            std::thread::spawn(move || accept_loop(listener, upstream, &shared))
        };
        Ok(TcpCut { addr, shared, acceptor: Some(acceptor) })
    }

    /// Where clients connect.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Closes every relayed connection; new ones are held unanswered until
    /// [`TcpCut::restore`].
    pub fn cut(&self) {
        let mut state = self.shared.lock();
        state.cut = true;
        for (_, (a, b)) in state.relayed.drain() {
            let _ = a.shutdown(Shutdown::Both);
            let _ = b.shutdown(Shutdown::Both);
        }
    }

    /// Relays again; the connections held during the cut are closed (their clients
    /// reconnect).
    pub fn restore(&self) {
        let mut state = self.shared.lock();
        state.cut = false;
        for s in state.held.drain(..) {
            let _ = s.shutdown(Shutdown::Both);
        }
    }

    pub fn is_cut(&self) -> bool {
        self.shared.lock().cut
    }

    /// Connections being relayed now.
    pub fn relayed(&self) -> usize {
        self.shared.lock().relayed.len()
    }
}

impl Shared {
    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

impl Drop for TcpCut {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::Relaxed);
        if let Some(a) = self.acceptor.take() {
            let _ = a.join();
        }
        self.cut();
        self.restore();
    }
}

fn accept_loop(listener: TcpListener, upstream: SocketAddr, shared: &Arc<Shared>) {
    while !shared.stop.load(Ordering::Relaxed) {
        match listener.accept() {
            Ok((client, _)) => {
                if let Err(e) = relay(client, upstream, shared) {
                    eprintln!("tcp_cut: {e:#}");
                }
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                std::thread::sleep(Duration::from_millis(5));
            }
            Err(e) => {
                eprintln!("tcp_cut: accept: {e}");
                std::thread::sleep(Duration::from_millis(50));
            }
        }
    }
}

/// Holds `client` if cut, else connects it to `upstream` and pumps both ways.
fn relay(client: TcpStream, upstream: SocketAddr, shared: &Arc<Shared>) -> Result<()> {
    client.set_nonblocking(false)?;
    {
        let mut state = shared.lock();
        if state.cut {
            state.held.push(client);
            return Ok(());
        }
    }
    let server = TcpStream::connect_timeout(&upstream, UPSTREAM_CONNECT_TIMEOUT)
        .with_context(|| format!("connecting to {upstream}"))?;
    let _ = client.set_nodelay(true);
    let _ = server.set_nodelay(true);
    let id = {
        let mut state = shared.lock();
        if state.cut {
            // Cut while we connected.
            state.held.push(client);
            return Ok(());
        }
        let id = state.next_id;
        state.next_id += 1;
        state.relayed.insert(id, (client.try_clone()?, server.try_clone()?));
        id
    };
    let pumps = Arc::new(std::sync::atomic::AtomicUsize::new(2));
    for (from, to) in [(client.try_clone()?, server.try_clone()?), (server, client)] {
        let (shared, pumps) = (shared.clone(), pumps.clone());
        std::thread::spawn(move || {
            pump(from, &to);
            if pumps.fetch_sub(1, Ordering::AcqRel) == 1 {
                shared.lock().relayed.remove(&id);
            }
        });
    }
    Ok(())
}

/// Copies until either side ends, then ends the other side's writing.
fn pump(mut from: TcpStream, mut to: &TcpStream) {
    let mut buf = [0u8; 16 * 1024];
    loop {
        match from.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                if to.write_all(&buf[..n]).is_err() {
                    break;
                }
            }
        }
    }
    let _ = to.shutdown(Shutdown::Write);
    let _ = from.shutdown(Shutdown::Read);
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An upstream that echoes each connection's bytes back.
    fn echo_server() -> SocketAddr {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                let Ok(mut conn) = conn else { continue };
                std::thread::spawn(move || {
                    let mut buf = [0u8; 1024];
                    while let Ok(n) = conn.read(&mut buf) {
                        if n == 0 || conn.write_all(&buf[..n]).is_err() {
                            break;
                        }
                    }
                });
            }
        });
        addr
    }

    fn connect(addr: SocketAddr) -> TcpStream {
        let s = TcpStream::connect(addr).unwrap();
        s.set_read_timeout(Some(Duration::from_millis(300))).unwrap();
        s
    }

    /// Sends `msg` and reads its echo: Ok(true) echoed, Ok(false) closed, Err timed out.
    fn echo(s: &mut TcpStream, msg: &[u8]) -> io::Result<bool> {
        if s.write_all(msg).is_err() {
            return Ok(false);
        }
        let mut got = vec![0u8; msg.len()];
        match s.read_exact(&mut got) {
            Ok(()) => Ok(got == msg),
            Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => Ok(false),
            Err(e) if e.kind() == io::ErrorKind::ConnectionReset => Ok(false),
            Err(e) => Err(e),
        }
    }

    #[test]
    fn relays_cuts_and_restores() {
        let relay = TcpCut::start(echo_server()).unwrap();
        let mut before = connect(relay.addr());
        assert!(echo(&mut before, b"hello").unwrap());
        assert_eq!(relay.relayed(), 1);

        relay.cut();
        assert!(relay.is_cut());
        assert!(!echo(&mut before, b"again").unwrap(), "a relayed connection is closed");
        let mut during = connect(relay.addr());
        let unanswered = echo(&mut during, b"anyone?").unwrap_err();
        assert!(
            matches!(unanswered.kind(), io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut),
            "{unanswered}"
        );

        relay.restore();
        assert!(!echo(&mut during, b"still?").unwrap(), "a held connection is closed");
        let mut after = connect(relay.addr());
        assert!(echo(&mut after, b"back").unwrap());
    }

    #[test]
    fn a_closed_connection_leaves_the_table() {
        let relay = TcpCut::start(echo_server()).unwrap();
        let mut s = connect(relay.addr());
        assert!(echo(&mut s, b"x").unwrap());
        drop(s);
        let deadline = std::time::Instant::now() + Duration::from_secs(2);
        while relay.relayed() > 0 {
            assert!(std::time::Instant::now() < deadline, "still relayed");
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}
