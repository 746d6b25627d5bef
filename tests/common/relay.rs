//! A TCP relay for a replication connection that can hold back what the source
//! sends. Held, the bytes wait in the relay, as they wait in the sender's kernel
//! while a network is cut; released, they go to the replica, as the kernel delivers
//! them when the cut heals, even after the sending process died. Only the source's
//! direction is held: the replica's bytes always pass.

use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

/// One relayed connection: the replica's end, what is held for it, and whether the
/// replica has closed its end.
struct Carried {
    replica: TcpStream,
    held: Vec<u8>,
    closed_by_replica: bool,
    source_gone: bool,
}

type Connections = Arc<Mutex<Vec<Arc<Mutex<Carried>>>>>;

pub struct Relay {
    pub port: u16,
    holding: Arc<AtomicBool>,
    stop: Arc<AtomicBool>,
    connections: Connections,
}

/// What a release did with the held bytes.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Delivery {
    /// Bytes the replica's connection took.
    pub delivered: usize,
    /// Bytes for a connection the replica had closed: its kernel would answer them
    /// with a reset.
    pub refused: usize,
}

impl Relay {
    /// Relays `127.0.0.1:PORT` (a free port) to `source`.
    pub fn to(source: SocketAddr) -> Relay {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind the relay");
        listener.set_nonblocking(true).unwrap();
        let port = listener.local_addr().unwrap().port();
        let relay = Relay {
            port,
            holding: Arc::default(),
            stop: Arc::default(),
            connections: Arc::default(),
        };
        let (holding, stop, connections) = (
            Arc::clone(&relay.holding),
            Arc::clone(&relay.stop),
            Arc::clone(&relay.connections),
        );
        std::thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                let Ok((replica, _)) = listener.accept() else {
                    std::thread::sleep(Duration::from_millis(5));
                    continue;
                };
                replica.set_nonblocking(false).unwrap();
                let Ok(source) = TcpStream::connect(source) else {
                    // The source is down: the replica sees its connection fail.
                    continue;
                };
                carry(replica, source, &holding, &connections);
            }
        });
        relay
    }

    /// From now on the source's bytes wait in the relay.
    pub fn hold(&self) {
        self.holding.store(true, Ordering::SeqCst);
    }

    /// Bytes held so far, over every connection.
    pub fn held_bytes(&self) -> usize {
        self.each(|carried| carried.held.len()).into_iter().sum()
    }

    /// Delivers what was held to each replica that still listens, and stops holding.
    pub fn release(&self) -> Delivery {
        let mut delivery = Delivery::default();
        for (delivered, refused) in self.each(|carried| {
            let bytes = std::mem::take(&mut carried.held);
            let outcome = if carried.closed_by_replica || carried.replica.write_all(&bytes).is_err()
            {
                (0, bytes.len())
            } else {
                (bytes.len(), 0)
            };
            // Then the dead source's close arrives too.
            if carried.source_gone {
                let _ = carried.replica.shutdown(Shutdown::Both);
            }
            outcome
        }) {
            delivery.delivered += delivered;
            delivery.refused += refused;
        }
        self.holding.store(false, Ordering::SeqCst);
        delivery
    }

    fn each<T>(&self, mut action: impl FnMut(&mut Carried) -> T) -> Vec<T> {
        let connections = self
            .connections
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        connections
            .iter()
            .map(|carried| action(&mut carried.lock().unwrap_or_else(PoisonError::into_inner)))
            .collect()
    }
}

impl Drop for Relay {
    /// Stops accepting and closes every relayed connection (their pumps then end).
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        self.each(|carried| {
            let _ = carried.replica.shutdown(Shutdown::Both);
        });
    }
}

/// Pumps both directions of one connection on threads of their own.
fn carry(
    replica: TcpStream,
    source: TcpStream,
    holding: &Arc<AtomicBool>,
    connections: &Connections,
) {
    let carried = Arc::new(Mutex::new(Carried {
        replica: replica.try_clone().unwrap(),
        held: Vec::new(),
        closed_by_replica: false,
        source_gone: false,
    }));
    connections
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .push(Arc::clone(&carried));
    {
        // The replica's direction: always passes; its end closing is remembered.
        let (mut replica, mut source, carried) = (
            replica.try_clone().unwrap(),
            source.try_clone().unwrap(),
            Arc::clone(&carried),
        );
        std::thread::spawn(move || {
            let mut buffer = [0u8; 16 << 10];
            loop {
                match replica.read(&mut buffer) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => {
                        if source.write_all(&buffer[..n]).is_err() {
                            break;
                        }
                    }
                }
            }
            carried
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .closed_by_replica = true;
            let _ = source.shutdown(Shutdown::Both);
        });
    }
    let holding = Arc::clone(holding);
    std::thread::spawn(move || {
        let mut source = source;
        let mut buffer = [0u8; 16 << 10];
        loop {
            let n = match source.read(&mut buffer) {
                Ok(0) | Err(_) => break,
                Ok(n) => n,
            };
            let mut carried = carried.lock().unwrap_or_else(PoisonError::into_inner);
            if holding.load(Ordering::SeqCst) {
                carried.held.extend_from_slice(&buffer[..n]);
            } else if carried.replica.write_all(&buffer[..n]).is_err() {
                break;
            }
        }
        // A source gone while bytes are held: the replica's end stays open, as the
        // replica's kernel knows nothing of it until the cut heals.
        let mut carried = carried.lock().unwrap_or_else(PoisonError::into_inner);
        carried.source_gone = true;
        if carried.held.is_empty() && !holding.load(Ordering::SeqCst) {
            let _ = carried.replica.shutdown(Shutdown::Both);
        }
    });
}
