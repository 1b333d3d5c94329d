//! The web page in a real browser: Debian's chromium driven headless by chromedriver over
//! the W3C WebDriver protocol. Upload an image, see a bar per class, correct a label,
//! retrain, see the new version and the changed prediction; the screenshot is kept at
//! target/serve-page.png (docs/serve-page.png is a copy).

use crate::serve::{fixture, wrong_test_image};
use crate::util::server::Server;
use serde_json::{json, Value};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const CHROMEDRIVER: &str = "/usr/bin/chromedriver";
const CHROMIUM: &str = "/usr/bin/chromium";
const ELEMENT: &str = "element-6066-11e4-a52e-4f735466cecf";

/// A chromedriver process and one headless browser session.
struct Browser {
    driver: Child,
    base: String,
    session: String,
}

impl Browser {
    fn start() -> Browser {
        assert!(
            std::path::Path::new(CHROMEDRIVER).exists() && std::path::Path::new(CHROMIUM).exists(),
            "{CHROMEDRIVER} or {CHROMIUM} missing: `make test` installs them (scripts/test_tools.sh)"
        );
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let driver = Command::new(CHROMEDRIVER).arg(format!("--port={port}")).stdout(Stdio::null()).stderr(Stdio::null()).spawn().unwrap();
        let base = format!("http://127.0.0.1:{port}");
        let start = Instant::now();
        while ureq::get(&format!("{base}/status")).call().is_err() {
            assert!(start.elapsed() < Duration::from_secs(20), "chromedriver did not start");
            std::thread::sleep(Duration::from_millis(50));
        }
        let caps = json!({"capabilities": {"alwaysMatch": {"browserName": "chrome", "goog:chromeOptions": {
            "binary": CHROMIUM,
            "args": ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--window-size=1100,900"]
        }}}});
        let mut b = Browser { driver, base, session: String::new() };
        b.session = b.call("POST", "/session", caps)["sessionId"].as_str().unwrap().to_string();
        b
    }

    fn call(&self, method: &str, path: &str, body: Value) -> Value {
        let url = if path == "/session" { format!("{}{path}", self.base) } else { format!("{}/session/{}{path}", self.base, self.session) };
        let r = match method {
            "GET" => ureq::get(&url).call(),
            "DELETE" => ureq::delete(&url).call(),
            _ => ureq::post(&url).send_json(body),
        };
        let r = match r {
            Ok(r) => r,
            Err(ureq::Error::Status(code, r)) => panic!("webdriver {method} {path}: {code} {}", r.into_string().unwrap_or_default()),
            Err(e) => panic!("webdriver {method} {path}: {e}"),
        };
        let v: Value = r.into_json().unwrap();
        v["value"].clone()
    }

    fn find_all(&self, css: &str) -> Vec<String> {
        let v = self.call("POST", "/elements", json!({"using": "css selector", "value": css}));
        v.as_array().unwrap().iter().map(|e| e[ELEMENT].as_str().unwrap().to_string()).collect()
    }

    fn text(&self, css: &str) -> String {
        self.find_all(css)
            .first()
            .map(|e| self.call("GET", &format!("/element/{e}/text"), Value::Null).as_str().unwrap().to_string())
            .unwrap_or_default()
    }

    /// Evaluates `script` (a function body) in the page.
    fn eval(&self, script: &str) -> Value {
        self.call("POST", "/execute/sync", json!({"script": script, "args": []}))
    }

    fn wait(&self, what: &str, limit: Duration, ok: impl Fn(&Browser) -> bool) {
        let start = Instant::now();
        while !ok(self) {
            assert!(start.elapsed() < limit, "page: {what} not seen in {limit:?}; job: {:?}", self.text("#job"));
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// The labels the card shows as present.
    fn pressed(&self) -> Vec<String> {
        let v = self.eval("return [...document.querySelectorAll('.labels button[aria-pressed=true]')].map(b => b.textContent).sort();");
        v.as_array().unwrap().iter().map(|x| x.as_str().unwrap().to_string()).collect()
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        if !self.session.is_empty() {
            let _ = ureq::delete(&format!("{}/session/{}", self.base, self.session)).call();
        }
        let _ = self.driver.kill();
        let _ = self.driver.wait();
    }
}

#[test]
fn the_page_predicts_takes_a_correction_retrains_and_shows_the_new_version() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    let (data, runs, _) = fixture(root, 200, 96, "10");
    let server = Server::start(&runs, &["--retrain-tolerance", "1"]);
    let (name, _, truth) = wrong_test_image(&server, root, &data);
    let photo = root.join("voc/JPEGImages").join(&name);

    let b = Browser::start();
    b.call("POST", "/url", json!({"url": server.base}));
    b.wait("the model line", Duration::from_secs(20), |b| b.text("#model").contains("version 1"));
    let input = b.find_all("#pick")[0].clone();
    b.call("POST", &format!("/element/{input}/value"), json!({"text": photo.to_str().unwrap()}));
    b.wait("a card with its bars", Duration::from_secs(20), |b| b.find_all(".card .bar-row").len() == 4);
    let predicted = b.pressed();
    assert_ne!(predicted, truth, "the model got this image wrong");
    // "Why?" swaps the thumbnail for a Grad-CAM overlay, and back after the last label.
    let why = b.find_all(".card .why")[0].clone();
    b.call("POST", &format!("/element/{why}/click"), json!({}));
    b.wait("a heat map", Duration::from_secs(30), |b| {
        b.eval("return document.querySelector('.card img').src").as_str().unwrap_or("").starts_with("data:image/png;base64,")
    });
    assert!(b.text(".card .why").starts_with("Heat map: "));
    assert!(b.text("#retrain").starts_with("Retrain with my corrections"));

    // Correct the labels with clicks on the label buttons.
    for class in ["person", "chair", "dog", "sofa"] {
        if predicted.contains(&class.to_string()) != truth.contains(&class.to_string()) {
            let buttons = b.find_all(".labels button");
            let button = buttons.iter().find(|e| b.call("GET", &format!("/element/{e}/text"), Value::Null) == class).unwrap();
            b.call("POST", &format!("/element/{button}/click"), json!({}));
        }
    }
    assert_eq!(b.pressed(), truth);
    assert_eq!(b.text("#retrain"), "Retrain with 1 correction");
    let retrain = b.find_all("#retrain")[0].clone();
    b.call("POST", &format!("/element/{retrain}/click"), json!({}));
    b.wait("the promotion", Duration::from_secs(180), |b| b.text("#job").contains(" promoted"));
    assert!(!b.text("#job").contains("not promoted"), "{}", b.text("#job"));
    b.wait("version 2 and the re-scored image", Duration::from_secs(30), |b| {
        b.text("#model").contains("version 2") && b.text(".before").contains("before (version 1)")
    });
    assert_eq!(b.pressed(), truth, "after the swap the page shows the corrected prediction");

    let shot = b.call("GET", "/screenshot", Value::Null);
    use base64::Engine as _;
    let png = base64::engine::general_purpose::STANDARD.decode(shot.as_str().unwrap()).unwrap();
    assert!(png.starts_with(b"\x89PNG") && png.len() > 10_000);
    std::fs::write(repo_root_target().join("serve-page.png"), png).unwrap();
}

fn repo_root_target() -> std::path::PathBuf {
    let t = crate::util::repo_root().join("target");
    std::fs::create_dir_all(&t).unwrap();
    t
}
