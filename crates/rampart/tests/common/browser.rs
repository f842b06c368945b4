//! Headless Chromium driven through ChromeDriver over the W3C WebDriver protocol: the few
//! commands the portal's end-to-end tests use, spoken over HTTP with the ureq client the tests
//! already have (a WebDriver crate would bring a second HTTP stack for eight commands).

use std::net::TcpListener;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use base64::Engine as _;
use serde_json::{Value, json};

/// The key WebDriver names an element reference by.
const ELEMENT: &str = "element-6066-11e4-a52e-4f735466cecf";

/// A browser session; the driver process dies with it.
pub struct Browser {
    driver: Child,
    http: ureq::Agent,
    base: String,
}

/// An element of the current page.
#[derive(Clone, Debug)]
pub struct Element(String);

fn find_program(names: &[&str]) -> Option<String> {
    names
        .iter()
        .find(|p| Path::new(p).exists())
        .map(|p| p.to_string())
}

impl Browser {
    /// Starts ChromeDriver and a headless Chromium window of 1280 × 900; `Err` says what is
    /// missing (the caller skips, or fails when data is required).
    pub fn start() -> Result<Browser, String> {
        let chromium = find_program(&["/usr/bin/chromium", "/usr/bin/chromium-browser"])
            .ok_or("Debian's chromium is not installed (./test installs it)")?;
        let driver = find_program(&["/usr/bin/chromedriver"])
            .ok_or("Debian's chromium-driver is not installed (./test installs it)")?;
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map_err(|e| format!("no free port: {e}"))?
            .port();
        let child = Command::new(driver)
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| format!("chromedriver does not start: {e}"))?;
        let http = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_global(Some(Duration::from_secs(120)))
            .build()
            .new_agent();
        let mut browser = Browser {
            driver: child,
            http,
            base: format!("http://127.0.0.1:{port}"),
        };
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let ready = browser
                .http
                .get(format!("{}/status", browser.base))
                .call()
                .ok()
                .and_then(|mut r| r.body_mut().read_json::<Value>().ok())
                .is_some_and(|v| v["value"]["ready"] == true);
            if ready {
                break;
            }
            if Instant::now() > deadline {
                return Err("chromedriver did not become ready in 20 s".into());
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        let capabilities = json!({"capabilities": {"alwaysMatch": {
            "browserName": "chrome",
            "goog:chromeOptions": {
                "binary": chromium,
                "args": ["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
                         "--disable-background-networking", "--disable-component-update",
                         "--disable-sync", "--disable-dev-shm-usage", "--window-size=1280,900"],
            },
        }}});
        let session = browser.raw("POST", "/session", Some(capabilities))?;
        let id = session["sessionId"]
            .as_str()
            .ok_or_else(|| format!("no session: {session}"))?;
        browser.base = format!("{}/session/{id}", browser.base);
        Ok(browser)
    }

    /// One WebDriver command; `Err` carries the driver's error.
    fn raw(&self, method: &str, path: &str, body: Option<Value>) -> Result<Value, String> {
        let url = format!("{}{path}", self.base);
        let response = match method {
            "GET" => self.http.get(&url).call(),
            "DELETE" => self.http.delete(&url).call(),
            _ => self
                .http
                .post(&url)
                .send_json(body.unwrap_or_else(|| json!({}))),
        };
        let mut response = response.map_err(|e| format!("{method} {path}: {e}"))?;
        let ok = response.status().is_success();
        let value: Value = response
            .body_mut()
            .with_config()
            .limit(64 << 20)
            .read_json()
            .map_err(|e| format!("{method} {path}: {e}"))?;
        if ok {
            Ok(value["value"].clone())
        } else {
            Err(format!("{method} {path}: {}", value["value"]))
        }
    }

    fn cmd(&self, method: &str, path: &str, body: Option<Value>) -> Value {
        self.raw(method, path, body)
            .unwrap_or_else(|e| panic!("WebDriver: {e}"))
    }

    pub fn goto(&self, url: &str) {
        self.cmd("POST", "/url", Some(json!({"url": url})));
    }

    pub fn url(&self) -> String {
        self.cmd("GET", "/url", None)
            .as_str()
            .unwrap_or_default()
            .to_string()
    }

    pub fn title(&self) -> String {
        self.cmd("GET", "/title", None)
            .as_str()
            .unwrap_or_default()
            .to_string()
    }

    pub fn try_find(&self, css: &str) -> Option<Element> {
        self.raw(
            "POST",
            "/element",
            Some(json!({"using": "css selector", "value": css})),
        )
        .ok()
        .and_then(|v| v[ELEMENT].as_str().map(|id| Element(id.to_string())))
    }

    /// The first element matching `css`, waiting up to 10 s for it to appear.
    pub fn find(&self, css: &str) -> Element {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Some(element) = self.try_find(css) {
                return element;
            }
            if Instant::now() > deadline {
                panic!("no element {css} on {} ({})", self.url(), self.title());
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    pub fn find_all(&self, css: &str) -> Vec<Element> {
        let found = self.cmd(
            "POST",
            "/elements",
            Some(json!({"using": "css selector", "value": css})),
        );
        found
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|v| v[ELEMENT].as_str().map(|id| Element(id.to_string())))
            .collect()
    }

    pub fn click(&self, element: &Element) {
        self.cmd("POST", &format!("/element/{}/click", element.0), None);
    }

    /// Replaces the element's text with `text`.
    pub fn fill(&self, element: &Element, text: &str) {
        self.cmd("POST", &format!("/element/{}/clear", element.0), None);
        self.cmd(
            "POST",
            &format!("/element/{}/value", element.0),
            Some(json!({"text": text})),
        );
    }

    pub fn text(&self, element: &Element) -> String {
        self.cmd("GET", &format!("/element/{}/text", element.0), None)
            .as_str()
            .unwrap_or_default()
            .to_string()
    }

    pub fn attribute(&self, element: &Element, name: &str) -> Option<String> {
        self.cmd(
            "GET",
            &format!("/element/{}/attribute/{name}", element.0),
            None,
        )
        .as_str()
        .map(str::to_string)
    }

    /// Runs `script` in the page (WebDriver's script runs outside the page's CSP).
    pub fn execute(&self, script: &str) -> Value {
        self.cmd(
            "POST",
            "/execute/sync",
            Some(json!({"script": script, "args": []})),
        )
    }

    /// The text of an open `alert()` dialog, if a script opened one.
    pub fn alert_text(&self) -> Option<String> {
        self.raw("GET", "/alert/text", None)
            .ok()
            .and_then(|v| v.as_str().map(str::to_string))
    }

    /// Saves a PNG of the window to `path`.
    pub fn screenshot(&self, path: &Path) {
        let data = self.cmd("GET", "/screenshot", None);
        let png = base64::engine::general_purpose::STANDARD
            .decode(data.as_str().unwrap_or_default())
            .expect("a base64 PNG");
        std::fs::write(path, png).expect("the screenshot is written");
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        let _ = self.raw("DELETE", "", None);
        let _ = self.driver.kill();
        let _ = self.driver.wait();
    }
}
