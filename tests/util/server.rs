//! A running `serve` on a free loopback port, stopped (SIGTERM, then kill) when dropped, and
//! a small HTTP client over ureq with hand-built multipart bodies.

use super::bin;
use std::ffi::OsString;
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// A started server and everything it printed.
pub struct Server {
    pub child: Child,
    pub base: String,
    /// `host:port` of the gRPC service, when started with `--grpc-addr`.
    pub grpc: Option<String>,
    pub log: Arc<Mutex<String>>,
}

/// An answer: status and body.
pub struct Reply {
    pub status: u16,
    pub body: String,
}

impl Reply {
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.body).unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.body))
    }
}

impl Server {
    /// Starts `serve --runs RUNS --addr 127.0.0.1:0 ARGS` and waits until it is ready.
    pub fn start(runs: &Path, args: &[&str]) -> Server {
        let mut all: Vec<OsString> = vec!["--runs".into(), runs.into()];
        all.extend(["--addr", "127.0.0.1:0", "--threads", "1", "--poll-ms", "50"].map(OsString::from));
        all.extend(args.iter().map(OsString::from));
        let s = Server::spawn(&all);
        s.wait_until(Duration::from_secs(30), |s| s.get("/ready").status == 200);
        s
    }

    /// Starts `serve ARGS` and waits until it listens (not until a model is loaded).
    pub fn spawn(args: &[OsString]) -> Server {
        let mut child = bin("serve").args(args).stdout(Stdio::null()).stderr(Stdio::piped()).spawn().unwrap();
        let log = Arc::new(Mutex::new(String::new()));
        let (tx, rx) = std::sync::mpsc::channel();
        let stderr = child.stderr.take().unwrap();
        let sink = log.clone();
        let grpc = Arc::new(Mutex::new(None));
        let grpc_seen = grpc.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if let Some(addr) = line.strip_prefix("serve: gRPC listening on ") {
                    *grpc_seen.lock().unwrap() = Some(addr.to_string());
                }
                if let Some(addr) = line.strip_prefix("serve: listening on ") {
                    let _ = tx.send(addr.to_string());
                }
                sink.lock().unwrap().push_str(&(line + "\n"));
            }
        });
        let base = rx.recv_timeout(Duration::from_secs(30)).unwrap_or_else(|_| panic!("serve did not start: {}", log.lock().unwrap()));
        // serve prints the gRPC address before the HTTP one.
        let grpc = grpc.lock().unwrap().clone();
        Server { child, base, grpc, log }
    }

    /// Polls `ok` every 20 ms; panics with the server's log after `limit`.
    pub fn wait_until(&self, limit: Duration, ok: impl Fn(&Server) -> bool) {
        let start = Instant::now();
        while !ok(self) {
            assert!(start.elapsed() < limit, "condition not met in {limit:?}; server log:\n{}", self.log.lock().unwrap());
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn get(&self, path: &str) -> Reply {
        reply(ureq::get(&format!("{}{path}", self.base)).call())
    }

    pub fn get_with(&self, path: &str, header: (&str, &str)) -> Reply {
        reply(ureq::get(&format!("{}{path}", self.base)).set(header.0, header.1).call())
    }

    /// POSTs `body` with `content_type` and optional extra headers. A server may answer (413)
    /// and close before the whole body is sent; then the answer is read over a raw socket.
    pub fn post(&self, path: &str, content_type: &str, body: &[u8], headers: &[(&str, &str)]) -> Reply {
        let mut req = ureq::post(&format!("{}{path}", self.base)).set("Content-Type", content_type);
        for (k, v) in headers {
            req = req.set(k, v);
        }
        match req.send_bytes(body) {
            Err(ureq::Error::Transport(_)) => self.raw_post(path, content_type, body, headers),
            r => reply(r),
        }
    }

    /// A POST over a plain socket that ignores a failed write and reads the answer.
    fn raw_post(&self, path: &str, content_type: &str, body: &[u8], headers: &[(&str, &str)]) -> Reply {
        use std::io::{Read, Write};
        let addr = self.base.trim_start_matches("http://");
        let mut s = std::net::TcpStream::connect(addr).unwrap();
        let mut head = format!(
            "POST {path} HTTP/1.1\r\nHost: {addr}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nConnection: close\r\n",
            body.len()
        );
        for (k, v) in headers {
            head += &format!("{k}: {v}\r\n");
        }
        let _ = s.write_all(format!("{head}\r\n").as_bytes()).and_then(|()| s.write_all(body));
        let mut raw = Vec::new();
        let _ = s.read_to_end(&mut raw);
        let text = String::from_utf8_lossy(&raw);
        let status = text.split(' ').nth(1).and_then(|c| c.parse().ok()).unwrap_or_else(|| panic!("no HTTP answer: {text:?}"));
        let body = text.split_once("\r\n\r\n").map(|(_, b)| b.to_string()).unwrap_or_default();
        Reply { status, body }
    }

    /// POSTs a multipart form of (field, file name, bytes) parts; a part without a file name
    /// is a text field.
    pub fn post_form(&self, path: &str, parts: &[(&str, Option<&str>, &[u8])], headers: &[(&str, &str)]) -> Reply {
        let (ct, body) = multipart(parts);
        self.post(path, &ct, &body, headers)
    }

    /// The server's process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The server's peak resident memory so far (VmHWM), in bytes.
    pub fn peak_rss(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid())).unwrap();
        let kb: u64 = status.lines().find_map(|l| l.strip_prefix("VmHWM:")).unwrap().trim().trim_end_matches(" kB").trim().parse().unwrap();
        kb * 1024
    }

    /// Sends SIGTERM and waits for the exit status (at most 30 s).
    pub fn terminate(&mut self) -> Option<i32> {
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        let start = Instant::now();
        loop {
            if let Some(s) = self.child.try_wait().unwrap() {
                return s.code();
            }
            assert!(start.elapsed() < Duration::from_secs(30), "serve did not stop after SIGTERM");
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if self.child.try_wait().ok().flatten().is_none() {
            unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
            std::thread::sleep(Duration::from_millis(200));
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

fn reply(r: Result<ureq::Response, ureq::Error>) -> Reply {
    let resp = match r {
        Ok(r) => r,
        Err(ureq::Error::Status(_, r)) => r,
        Err(e) => panic!("request failed: {e}"),
    };
    let status = resp.status();
    Reply { status, body: resp.into_string().unwrap() }
}

/// A multipart/form-data body and its content type.
pub fn multipart(parts: &[(&str, Option<&str>, &[u8])]) -> (String, Vec<u8>) {
    let boundary = "vocml-test-boundary-7d1e";
    let mut body = Vec::new();
    for (name, file, bytes) in parts {
        body.extend(format!("--{boundary}\r\n").as_bytes());
        match file {
            Some(f) => body.extend(
                format!(
                    "Content-Disposition: form-data; name=\"{name}\"; filename=\"{f}\"\r\nContent-Type: application/octet-stream\r\n\r\n"
                )
                .as_bytes(),
            ),
            None => body.extend(format!("Content-Disposition: form-data; name=\"{name}\"\r\n\r\n").as_bytes()),
        }
        body.extend(*bytes);
        body.extend(b"\r\n");
    }
    body.extend(format!("--{boundary}--\r\n").as_bytes());
    (format!("multipart/form-data; boundary={boundary}"), body)
}
