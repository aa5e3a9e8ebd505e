//! A plain-HTTP forward proxy on 127.0.0.1: each connection is sent on to one upstream (the
//! emulator) as it came, and the first request line of each is recorded, so a test sees that
//! a client went through it (`GET http://host:port/path HTTP/1.1`). Stopped when dropped.

use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

pub struct ForwardProxy {
    pub port: u16,
    lines: Arc<Mutex<Vec<String>>>,
    stop: Arc<AtomicBool>,
}

impl ForwardProxy {
    pub fn start(upstream_port: u16) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").expect("proxy port");
        let port = listener.local_addr().expect("address").port();
        let lines = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let (seen, stopping) = (lines.clone(), stop.clone());
        std::thread::spawn(move || {
            for client in listener.incoming() {
                if stopping.load(Ordering::SeqCst) {
                    return;
                }
                let Ok(client) = client else { continue };
                let seen = seen.clone();
                std::thread::spawn(move || relay(client, upstream_port, &seen));
            }
        });
        Self { port, lines, stop }
    }

    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// The first request line of every connection so far.
    pub fn request_lines(&self) -> Vec<String> {
        self.lines.lock().map(|l| l.clone()).unwrap_or_default()
    }
}

fn relay(mut client: TcpStream, upstream_port: u16, seen: &Mutex<Vec<String>>) {
    let Ok(mut upstream) = TcpStream::connect(("127.0.0.1", upstream_port)) else {
        return;
    };
    let mut first = [0u8; 4096];
    let Ok(n) = client.read(&mut first) else {
        return;
    };
    let head = String::from_utf8_lossy(&first[..n]);
    if let (Some(line), Ok(mut lines)) = (head.lines().next(), seen.lock()) {
        lines.push(line.to_string());
    }
    if upstream.write_all(&first[..n]).is_err() {
        return;
    }
    let (Ok(mut from_client), Ok(mut to_client)) = (client.try_clone(), upstream.try_clone())
    else {
        return;
    };
    let forward = std::thread::spawn(move || {
        let _ = std::io::copy(&mut from_client, &mut upstream);
        let _ = upstream.shutdown(Shutdown::Write);
    });
    let _ = std::io::copy(&mut to_client, &mut client);
    let _ = client.shutdown(Shutdown::Write);
    let _ = forward.join();
}

impl Drop for ForwardProxy {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        // Wakes the accept loop so it sees the flag.
        let _ = TcpStream::connect(("127.0.0.1", self.port));
    }
}
