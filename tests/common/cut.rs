//! A TCP relay on loopback that a test can cut: every connection through it
//! is dropped at once, and new ones are refused, until it is mended. Put
//! between a gateway and its database, it makes the database "unreachable"
//! without touching the server other tests use.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

pub struct Cuttable {
    pub addr: SocketAddr,
    cut: Arc<AtomicBool>,
    refuse_new: Arc<AtomicBool>,
    generation: watch::Sender<u64>,
    task: tokio::task::JoinHandle<()>,
}

impl Cuttable {
    /// Relays connections on a new loopback port to `target`.
    pub async fn start(target: SocketAddr) -> Cuttable {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let cut = Arc::new(AtomicBool::new(false));
        let refuse_new = Arc::new(AtomicBool::new(false));
        let (generation, _) = watch::channel(0u64);
        let (c, r, g) = (cut.clone(), refuse_new.clone(), generation.clone());
        let task = tokio::spawn(async move {
            while let Ok((mut client, _)) = listener.accept().await {
                if c.load(Ordering::SeqCst) || r.load(Ordering::SeqCst) {
                    drop(client);
                    continue;
                }
                let mut cut_signal = g.subscribe();
                tokio::spawn(async move {
                    let Ok(mut server) = TcpStream::connect(target).await else {
                        return;
                    };
                    tokio::select! {
                        _ = tokio::io::copy_bidirectional(&mut client, &mut server) => {}
                        _ = cut_signal.changed() => {}
                    }
                });
            }
        });
        Cuttable {
            addr,
            cut,
            refuse_new,
            generation,
            task,
        }
    }

    /// Drops every connection and refuses new ones.
    pub fn cut(&self) {
        self.cut.store(true, Ordering::SeqCst);
        self.generation.send_modify(|g| *g += 1);
    }

    /// Keeps the connections there are, refuses new ones.
    pub fn refuse_new(&self) {
        self.refuse_new.store(true, Ordering::SeqCst);
    }

    /// Lets connections through again.
    pub fn mend(&self) {
        self.cut.store(false, Ordering::SeqCst);
        self.refuse_new.store(false, Ordering::SeqCst);
    }
}

impl Drop for Cuttable {
    fn drop(&mut self) {
        self.task.abort();
    }
}
