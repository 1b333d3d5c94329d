//! A real `mlflow server` (the venv's, SQLite backend, artifacts proxied from a temp dir) on a
//! free loopback port, stopped with its whole process group when dropped.

use super::repo_root;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub struct MlflowServer {
    child: Child,
    pub uri: String,
}

impl MlflowServer {
    pub fn start(dir: &Path) -> MlflowServer {
        let mlflow = repo_root().join(".venv/bin/mlflow");
        assert!(mlflow.exists(), "{} missing: `make test` installs it (scripts/test_tools.sh)", mlflow.display());
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let child = Command::new(mlflow)
            .args(["server", "--backend-store-uri"])
            .arg(format!("sqlite:///{}", dir.join("mlflow.db").display()))
            .arg("--artifacts-destination")
            .arg(dir.join("artifacts"))
            .args(["--host", "127.0.0.1", "--port", &port.to_string(), "--workers", "1"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .process_group(0)
            .spawn()
            .unwrap();
        let s = MlflowServer { child, uri: format!("http://127.0.0.1:{port}") };
        let start = Instant::now();
        while ureq::get(&format!("{}/health", s.uri)).call().is_err() {
            assert!(start.elapsed() < Duration::from_secs(120), "mlflow server did not start");
            std::thread::sleep(Duration::from_millis(200));
        }
        s
    }
}

impl Drop for MlflowServer {
    fn drop(&mut self) {
        unsafe { libc::kill(-(self.child.id() as i32), libc::SIGTERM) };
        let start = Instant::now();
        while self.child.try_wait().ok().flatten().is_none() && start.elapsed() < Duration::from_secs(10) {
            std::thread::sleep(Duration::from_millis(50));
        }
        unsafe { libc::kill(-(self.child.id() as i32), libc::SIGKILL) };
        let _ = self.child.wait();
    }
}
