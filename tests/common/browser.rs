//! A real browser for UI tests: Debian's headless `chromium` driven over WebDriver
//! (`chromedriver` on a free loopback port), screenshots, and waiting on a condition in the
//! page. Without chromium a test is skipped, except in CI (`CI` set), where it fails:
//! `scripts/test` installs `chromium` and `chromium-driver` when they are missing.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use fantoccini::{Client, ClientBuilder, Locator};
use serde_json::json;

pub const CHROMIUM: &str = "/usr/bin/chromium";

/// `chromedriver` on a free loopback port, killed when dropped.
pub struct Driver {
    child: Child,
    pub url: String,
}

impl Drop for Driver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port()
}

fn which(program: &str) -> Option<PathBuf> {
    std::env::var_os("PATH")?
        .to_string_lossy()
        .split(':')
        .map(|dir| Path::new(dir).join(program))
        .find(|p| p.is_file())
}

/// Starts chromedriver, or says why it cannot (the test is then skipped outside CI).
pub async fn start_driver() -> Option<Driver> {
    let missing = |what: &str| {
        let message =
            format!("{what} is not installed; scripts/test installs chromium and chromium-driver");
        assert!(std::env::var_os("CI").is_none(), "{message}");
        eprintln!("skipping the browser test: {message}");
        None
    };
    if !Path::new(CHROMIUM).is_file() {
        return missing(CHROMIUM);
    }
    let Some(chromedriver) = which("chromedriver") else {
        return missing("chromedriver");
    };
    let port = free_port();
    // No --allowed-ips: with it, chromedriver would listen on every interface.
    let child = Command::new(chromedriver)
        .arg(format!("--port={port}"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start chromedriver");
    let driver = Driver {
        child,
        url: format!("http://127.0.0.1:{port}"),
    };
    let status = format!("{}/status", driver.url);
    rustls::crypto::ring::default_provider()
        .install_default()
        .ok();
    let http = reqwest::Client::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let ready = match http.get(&status).send().await {
            Ok(r) => r
                .json::<serde_json::Value>()
                .await
                .is_ok_and(|v| v["value"]["ready"] == true),
            Err(_) => false,
        };
        if ready {
            return Some(driver);
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "chromedriver did not become ready"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

pub async fn browser(driver: &Driver, profile: &Path) -> Client {
    browser_with(driver, profile, &[]).await
}

/// A browser session with extra Chromium switches.
pub async fn browser_with(driver: &Driver, profile: &Path, extra: &[&str]) -> Client {
    let mut args = vec![
        json!("--headless"),
        json!("--no-sandbox"),
        json!("--disable-gpu"),
        json!("--disable-background-networking"),
        json!("--disable-component-update"),
        json!("--disable-sync"),
        json!("--no-first-run"),
        json!("--window-size=1280,900"),
        json!(format!("--user-data-dir={}", profile.display())),
    ];
    args.extend(extra.iter().map(|a| json!(a)));
    let mut caps = serde_json::Map::new();
    caps.insert("browserName".into(), json!("chrome"));
    caps.insert(
        "goog:chromeOptions".into(),
        json!({
            "binary": CHROMIUM,
            "args": args,
        }),
    );
    // chromedriver speaks plain HTTP on loopback, so no TLS connector is needed.
    ClientBuilder::new(hyper_util::client::legacy::connect::HttpConnector::new())
        .capabilities(caps)
        .connect(&driver.url)
        .await
        .expect("a WebDriver session")
}

/// Where screenshots go: `docs/screenshots/` (the README's) when `SLUICE_UPDATE_SCREENSHOTS`
/// is set, else a scratch folder, so that running the tests leaves the checkout unchanged.
pub fn screenshot_path(name: &str) -> PathBuf {
    let dir = if std::env::var_os("SLUICE_UPDATE_SCREENSHOTS").is_some() {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/screenshots")
    } else {
        std::env::temp_dir().join("sluice-browser-screenshots")
    };
    std::fs::create_dir_all(&dir).expect("screenshots folder");
    dir.join(name)
}

pub async fn save_screenshot(c: &Client, name: &str) {
    let png = c.screenshot().await.expect("screenshot");
    assert!(png.starts_with(b"\x89PNG"), "a PNG");
    std::fs::write(screenshot_path(name), png).expect("write screenshot");
}

/// Waits until `script` (a JavaScript expression) is true in the page.
pub async fn wait_until(c: &Client, what: &str, script: &str, limit: Duration) {
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        let value = c
            .execute(&format!("return Boolean({script});"), vec![])
            .await
            .expect("script runs");
        if value == json!(true) {
            return;
        }
        if tokio::time::Instant::now() > deadline {
            let source = c.source().await.unwrap_or_default();
            panic!("timed out after {limit:?} waiting for {what}:\n{source}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Logs in through the form as `admin`.
pub async fn log_in(c: &Client, base: &str, password: &str) {
    c.goto(&format!("{base}/login")).await.expect("login page");
    c.find(Locator::Id("name"))
        .await
        .expect("name")
        .send_keys("admin")
        .await
        .expect("type");
    c.find(Locator::Id("password"))
        .await
        .expect("password")
        .send_keys(password)
        .await
        .expect("type");
    c.find(Locator::Css("form button[type=submit]"))
        .await
        .expect("button")
        .click()
        .await
        .expect("log in");
    c.wait()
        .for_element(Locator::Css("a[href='/runs']"))
        .await
        .expect("logged in");
}

/// Opens `path` and checks that nothing scrolls sideways at the window's width.
pub async fn no_sideways_scroll(c: &Client, base: &str, path: &str) {
    c.goto(&format!("{base}{path}"))
        .await
        .expect("open the page");
    c.wait()
        .for_element(Locator::Css("main"))
        .await
        .expect("a page");
    let widths = c
        .execute(
            "return [document.documentElement.scrollWidth, window.innerWidth];",
            vec![],
        )
        .await
        .expect("widths");
    let scroll = widths[0].as_u64().expect("a number");
    assert!(scroll <= 390, "{path} scrolls sideways at 390 px: {widths}");
}
