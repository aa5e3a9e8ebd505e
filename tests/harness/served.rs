//! A `tregov serve` (or daemon) process with the API address it announced; killed on drop.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

pub struct Served {
    pub child: Child,
    /// `http://127.0.0.1:PORT` or `https://...`, as the process announced it.
    pub base: String,
}

impl Served {
    /// Starts `command` and waits for it to say where the API listens; its stderr is echoed
    /// with `[serve]` before each line.
    pub fn start(mut command: Command) -> Self {
        let mut child = command
            .stderr(Stdio::piped())
            .stdout(Stdio::null())
            .spawn()
            .expect("serve starts");
        let err = child.stderr.take().expect("stderr");
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(err).lines().map_while(Result::ok) {
                if let Some(addr) = line.split("serving the API on ").nth(1) {
                    let _ = tx.send(addr.trim().to_string());
                }
                eprintln!("[serve] {line}");
            }
        });
        let base = rx
            .recv_timeout(Duration::from_secs(60))
            .expect("the API starts listening");
        Self { child, base }
    }

    /// `host:port` of the API.
    pub fn addr(&self) -> &str {
        self.base.split("://").nth(1).unwrap_or(&self.base)
    }
}

impl Drop for Served {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
