//! A tiny loopback HTTP server for tests: answers every GET with a fixed body (a JWKS, say)
//! and records every POST body (SNS deliveries to an HTTP subscription). Stopped on drop.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

pub struct Recorder {
    pub port: u16,
    posts: Arc<Mutex<Vec<String>>>,
    gets: Arc<Mutex<u32>>,
    stop: Arc<AtomicBool>,
}

impl Recorder {
    /// Serves `get_body` to every GET on 127.0.0.1, on a free port.
    pub fn start(get_body: String) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let port = listener.local_addr().expect("addr").port();
        listener.set_nonblocking(true).expect("nonblocking");
        let posts = Arc::new(Mutex::new(Vec::new()));
        let gets = Arc::new(Mutex::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let (p, g, s) = (posts.clone(), gets.clone(), stop.clone());
        std::thread::spawn(move || {
            while !s.load(Ordering::Relaxed) {
                match listener.accept() {
                    Ok((stream, _)) => {
                        let _ = handle(stream, &get_body, &p, &g);
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(10)),
                }
            }
        });
        Self {
            port,
            posts,
            gets,
            stop,
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    pub fn posts(&self) -> Vec<String> {
        self.posts.lock().map(|p| p.clone()).unwrap_or_default()
    }

    pub fn gets(&self) -> u32 {
        self.gets.lock().map(|g| *g).unwrap_or_default()
    }
}

impl Drop for Recorder {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

fn handle(
    stream: TcpStream,
    get_body: &str,
    posts: &Mutex<Vec<String>>,
    gets: &Mutex<u32>,
) -> std::io::Result<()> {
    stream.set_nonblocking(false)?;
    stream.set_read_timeout(Some(Duration::from_secs(5)))?;
    let mut reader = BufReader::new(stream.try_clone()?);
    let mut request_line = String::new();
    reader.read_line(&mut request_line)?;
    let mut length = 0usize;
    loop {
        let mut line = String::new();
        reader.read_line(&mut line)?;
        if line.trim().is_empty() {
            break;
        }
        if let Some((name, value)) = line.split_once(':') {
            if name.eq_ignore_ascii_case("content-length") {
                length = value.trim().parse().unwrap_or(0);
            }
        }
    }
    let mut body = vec![0; length];
    reader.read_exact(&mut body)?;
    let answer = if request_line.starts_with("GET") {
        if let Ok(mut g) = gets.lock() {
            *g += 1;
        }
        get_body.to_string()
    } else {
        if let Ok(mut p) = posts.lock() {
            p.push(String::from_utf8_lossy(&body).to_string());
        }
        String::new()
    };
    let mut stream = stream;
    write!(
        stream,
        "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{answer}",
        answer.len()
    )?;
    stream.flush()
}
