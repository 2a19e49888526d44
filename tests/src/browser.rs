//! Browser tests: Debian's Chromium, headless, driven over WebDriver by Debian's chromedriver.
//!
//! Every [`Browser`] is a session of its own: its own chromedriver (on a port it picks itself),
//! its own Chromium with a fresh profile and download directory, all in one process group that
//! is killed when the `Browser` is closed or dropped. Tests may run browsers in parallel.
//!
//! Waiting is on a condition with a deadline, never a fixed sleep. Element commands wait for
//! their element first ([`WAIT`]); a click that submits a form returns once the next page has
//! loaded (chromedriver waits for the navigation it started).
//!
//! `bash deploy/install-deps.sh` installs the packages (`chromium`, `chromium-driver`, a font).
//! `HEADEND_CHROMIUM` and `HEADEND_CHROMEDRIVER` name other binaries.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context};
use fantoccini::elements::Element;
use fantoccini::{Client, ClientBuilder, Locator};
use serde_json::{json, Value};
use tokio::io::{AsyncBufReadExt, BufReader};

pub use fantoccini;

/// A phone's viewport (CSS pixels), for [`Browser::resize`].
pub const PHONE: (u32, u32) = (390, 844);
/// The default desktop viewport.
pub const DESKTOP: (u32, u32) = (1280, 1024);

/// How long one attempt to start chromedriver and Chromium may take. Generous: on a loaded
/// 2-core machine with several tests starting browsers at once a start can take seconds.
pub const START_DEADLINE: Duration = Duration::from_secs(60);
/// How many times a start is tried (each with a fresh profile) before the test fails.
const START_ATTEMPTS: u32 = 2;
/// How long element commands wait for their element, and `wait_*` for their condition.
pub const WAIT: Duration = Duration::from_secs(30);
/// Bound on any one WebDriver command (a page load included), so that a hung browser fails the
/// test instead of hanging it.
const COMMAND_DEADLINE: Duration = Duration::from_secs(90);

/// The Chromium and chromedriver binaries.
#[derive(Debug, Clone)]
pub struct Binaries {
    pub chromium: PathBuf,
    pub chromedriver: PathBuf,
}

impl Binaries {
    /// `HEADEND_CHROMIUM` / `HEADEND_CHROMEDRIVER`, else Debian's paths and `PATH`.
    pub fn locate() -> anyhow::Result<Self> {
        const INSTALL: &str = "install Debian's chromium and chromium-driver packages with \
                               `bash deploy/install-deps.sh` (as root or with sudo)";
        let chromium = find_binary(
            "HEADEND_CHROMIUM",
            // Debian's real binary first: /usr/bin/chromium is a shell wrapper around it.
            &["/usr/lib/chromium/chromium"],
            &[
                "chromium",
                "chromium-browser",
                "google-chrome-stable",
                "google-chrome",
            ],
            &["/usr/bin/chromium"],
        )
        .with_context(|| format!("headless Chromium not found: {INSTALL}"))?;
        let chromedriver = find_binary(
            "HEADEND_CHROMEDRIVER",
            &[],
            &["chromedriver"],
            &["/usr/bin/chromedriver", "/usr/lib/chromium/chromedriver"],
        )
        .with_context(|| format!("chromedriver not found: {INSTALL}"))?;
        Ok(Self {
            chromium,
            chromedriver,
        })
    }
}

fn find_binary(
    env: &str,
    first: &[&str],
    names: &[&str],
    last: &[&str],
) -> anyhow::Result<PathBuf> {
    if let Some(path) = std::env::var_os(env).filter(|p| !p.is_empty()) {
        let path = PathBuf::from(path);
        if is_executable(&path) {
            return Ok(path);
        }
        bail!("{env}={} is not an executable file", path.display());
    }
    let on_path = std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).collect::<Vec<_>>())
        .unwrap_or_default();
    let candidates = first
        .iter()
        .map(PathBuf::from)
        .chain(
            names
                .iter()
                .flat_map(|name| on_path.iter().map(move |dir| dir.join(name))),
        )
        .chain(last.iter().map(PathBuf::from));
    let mut looked = Vec::new();
    for candidate in candidates {
        if is_executable(&candidate) {
            return Ok(candidate);
        }
        looked.push(candidate.display().to_string());
    }
    bail!("looked at {env}, {}", looked.join(", "))
}

fn is_executable(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    path.metadata()
        .map(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        .unwrap_or(false)
}

/// A cookie as the browser holds it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cookie {
    pub name: String,
    pub value: String,
    pub domain: Option<String>,
    pub path: Option<String>,
    pub secure: bool,
    pub http_only: bool,
    /// `Strict`, `Lax` or `None` (Chromium reports `Lax` for a cookie set without one).
    pub same_site: Option<String>,
}

/// A headless Chromium session. Dropping it kills its processes; [`Browser::close`] ends the
/// session politely first.
pub struct Browser {
    client: Option<Client>,
    driver: tokio::process::Child,
    /// The process group of chromedriver and Chromium (chromedriver's pid).
    group: i32,
    /// `profile/`, `downloads/`, `chromedriver.log`.
    dir: Option<tempfile::TempDir>,
    downloads: PathBuf,
    taken: Mutex<HashSet<PathBuf>>,
    startup: Duration,
    /// Set once `close` has ended everything: `Drop` has nothing left to do.
    closed: bool,
}

impl Browser {
    /// Starts a session, or panics with the reason (binaries missing, Chromium not starting).
    pub async fn start() -> Self {
        Self::try_start().await.unwrap_or_else(|e| panic!("{e:#}"))
    }

    pub async fn try_start() -> anyhow::Result<Self> {
        let binaries = Binaries::locate()?;
        Self::start_with(&binaries).await
    }

    /// Starts a session with these binaries, trying again once with a fresh profile when
    /// Chromium does not come up (its start is the one step known to fail under heavy load).
    pub async fn start_with(binaries: &Binaries) -> anyhow::Result<Self> {
        let mut errors = Vec::new();
        for attempt in 1..=START_ATTEMPTS {
            match Self::launch(binaries).await {
                Ok(browser) => return Ok(browser),
                Err(e) => {
                    eprintln!("browser start attempt {attempt} of {START_ATTEMPTS} failed: {e:#}");
                    errors.push(format!("attempt {attempt}: {e:#}"));
                }
            }
        }
        bail!(
            "headless Chromium did not start ({} with {}):\n{}",
            binaries.chromium.display(),
            binaries.chromedriver.display(),
            errors.join("\n")
        )
    }

    async fn launch(binaries: &Binaries) -> anyhow::Result<Self> {
        let began = Instant::now();
        let dir = tempfile::Builder::new()
            .prefix("headend-browser")
            .tempdir()
            .context("browser temporary directory")?;
        let profile = dir.path().join("profile");
        let downloads = dir.path().join("downloads");
        std::fs::create_dir(&profile).context("browser profile directory")?;
        std::fs::create_dir(&downloads).context("browser download directory")?;
        let log = dir.path().join("chromedriver.log");
        let stderr = std::fs::File::create(dir.path().join("chromedriver.stderr"))?;

        let mut driver = tokio::process::Command::new(&binaries.chromedriver)
            .arg("--port=0")
            .arg(format!("--log-path={}", log.display()))
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(stderr)
            // Its own process group, Chromium included: one signal ends them all.
            .process_group(0)
            .kill_on_drop(true)
            .spawn()
            .with_context(|| format!("spawn {}", binaries.chromedriver.display()))?;
        let group = driver
            .id()
            .and_then(|id| i32::try_from(id).ok())
            .context("chromedriver pid")?;
        let stdout = driver.stdout.take().context("chromedriver stdout")?;
        let mut browser = Self {
            client: None,
            driver,
            group,
            dir: Some(dir),
            downloads: downloads.clone(),
            taken: Mutex::new(HashSet::new()),
            startup: Duration::ZERO,
            closed: false,
        };

        let session = async {
            let port = driver_port(stdout).await?;
            let capabilities = capabilities(&binaries.chromium, &profile, &downloads);
            ClientBuilder::new(hyper_util::client::legacy::connect::HttpConnector::new())
                .capabilities(capabilities)
                .connect(&format!("http://127.0.0.1:{port}"))
                .await
                .context("new WebDriver session")
        };
        match tokio::time::timeout(START_DEADLINE, session).await {
            Ok(Ok(client)) => {
                browser.client = Some(client);
                browser.startup = began.elapsed();
                Ok(browser)
            }
            Ok(Err(e)) => Err(e.context(browser.log_tail())),
            Err(_) => Err(anyhow!(
                "no session within {} s; {}",
                START_DEADLINE.as_secs(),
                browser.log_tail()
            )),
        }
        // On error `browser` is dropped here: its processes are killed, its directory removed.
    }

    /// How long the start took (chromedriver, Chromium and the WebDriver session).
    pub fn startup_time(&self) -> Duration {
        self.startup
    }

    /// The WebDriver client, for what this harness does not wrap.
    pub fn client(&self) -> &Client {
        self.client.as_ref().expect("browser session closed")
    }

    /// Opens `url` and waits for the page to load.
    pub async fn goto(&self, url: &str) -> anyhow::Result<()> {
        command(format!("open {url}"), self.client().goto(url)).await
    }

    /// Resizes the window, which headless Chromium makes the viewport: [`PHONE`] or
    /// [`DESKTOP`]. Media queries follow at once.
    pub async fn resize(&self, (width, height): (u32, u32)) -> anyhow::Result<()> {
        command(
            format!("resize to {width}x{height}"),
            self.client().set_window_size(width, height),
        )
        .await
    }

    /// The page's URL.
    pub async fn current_url(&self) -> anyhow::Result<String> {
        let url = command("current URL", self.client().current_url()).await?;
        Ok(url.to_string())
    }

    /// The page's HTML as the browser has it now.
    pub async fn html(&self) -> anyhow::Result<String> {
        command("page source", self.client().source()).await
    }

    /// The first element matching `css`, waiting up to [`WAIT`] for it to be in the page.
    pub async fn wait_for(&self, css: &str) -> anyhow::Result<Element> {
        self.wait_until(&format!("an element `{css}`"), || async {
            let found = self.client().find_all(Locator::Css(css)).await.ok()?;
            found.into_iter().next()
        })
        .await
    }

    /// Waits until an element matching `css` has a text containing `needle`; returns the text.
    pub async fn wait_for_text(&self, css: &str, needle: &str) -> anyhow::Result<String> {
        self.wait_until(&format!("`{css}` containing {needle:?}"), || async {
            let found = self.client().find_all(Locator::Css(css)).await.ok()?;
            for element in found {
                let text = element.text().await.ok()?;
                if text.contains(needle) {
                    return Some(text);
                }
            }
            None
        })
        .await
    }

    /// Waits until the page's URL has this path (e.g. after a form redirects).
    pub async fn wait_for_path(&self, path: &str) -> anyhow::Result<String> {
        self.wait_until(&format!("the URL path {path:?}"), || async {
            let url = self.client().current_url().await.ok()?;
            (url.path() == path).then(|| url.to_string())
        })
        .await
    }

    /// Waits until `script` (a function body: `return ...`) returns something truthy.
    pub async fn wait_for_js(&self, script: &str) -> anyhow::Result<Value> {
        self.wait_until(&format!("`{script}` to be truthy"), || async {
            let value = self.client().execute(script, Vec::new()).await.ok()?;
            let truthy = match &value {
                Value::Null => false,
                Value::Bool(b) => *b,
                Value::Number(n) => n.as_f64() != Some(0.0),
                Value::String(s) => !s.is_empty(),
                _ => true,
            };
            truthy.then_some(value)
        })
        .await
    }

    /// Polls `check` until it returns `Some` or [`WAIT`] passes; on a timeout the page is
    /// saved (screenshot and HTML) and the error says where, with the page's text.
    pub async fn wait_until<T, F, Fut>(&self, what: &str, check: F) -> anyhow::Result<T>
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = Option<T>>,
    {
        if let Some(found) = crate::eventually(WAIT, check).await {
            return Ok(found);
        }
        Err(anyhow!(
            "timed out after {} s waiting for {what}; {}",
            WAIT.as_secs(),
            self.describe_page().await
        ))
    }

    /// The number of elements matching `css` now (no waiting).
    pub async fn count(&self, css: &str) -> anyhow::Result<usize> {
        let found = command(
            format!("find `{css}`"),
            self.client().find_all(Locator::Css(css)),
        )
        .await?;
        Ok(found.len())
    }

    /// The rendered text of the first element matching `css` (waiting for it).
    pub async fn text(&self, css: &str) -> anyhow::Result<String> {
        let element = self.wait_for(css).await?;
        command(format!("text of `{css}`"), element.text()).await
    }

    /// An attribute of the first element matching `css` (waiting for it).
    pub async fn attr(&self, css: &str, name: &str) -> anyhow::Result<Option<String>> {
        let element = self.wait_for(css).await?;
        command(format!("attribute {name} of `{css}`"), element.attr(name)).await
    }

    /// Types `text` into the first element matching `css`, replacing what it held.
    pub async fn fill(&self, css: &str, text: &str) -> anyhow::Result<()> {
        self.retry(&format!("fill `{css}`"), || async {
            let element = self.client().find(Locator::Css(css)).await?;
            element.clear().await?;
            element.send_keys(text).await
        })
        .await
    }

    /// Sets the value of a form control by script (date and hidden inputs, selects) and fires
    /// its `input` and `change` events.
    pub async fn set_value(&self, css: &str, value: &str) -> anyhow::Result<()> {
        self.wait_for(css).await?;
        let script = "const el = document.querySelector(arguments[0]);
            el.value = arguments[1];
            el.dispatchEvent(new Event('input', { bubbles: true }));
            el.dispatchEvent(new Event('change', { bubbles: true }));";
        self.execute_with(script, vec![json!(css), json!(value)])
            .await
            .map(drop)
    }

    /// Clicks the first element matching `css` once it is there and clickable. A click that
    /// starts a navigation returns once the new page has loaded.
    pub async fn click(&self, css: &str) -> anyhow::Result<()> {
        self.retry(&format!("click `{css}`"), || async {
            self.client().find(Locator::Css(css)).await?.click().await
        })
        .await
    }

    /// Runs `action` until it succeeds, retrying while [`WAIT`] lasts on the errors that mean
    /// the page is not ready yet (element missing, replaced, covered, not yet interactable):
    /// such a failed click did not click. Other errors fail at once, so nothing runs twice.
    async fn retry<F, Fut>(&self, what: &str, mut action: F) -> anyhow::Result<()>
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = Result<(), fantoccini::error::CmdError>>,
    {
        use fantoccini::error::{CmdError, ErrorStatus};
        let until = Instant::now() + WAIT;
        let mut delay = Duration::from_millis(5);
        loop {
            let error = match tokio::time::timeout(COMMAND_DEADLINE, action()).await {
                Ok(Ok(())) => return Ok(()),
                Ok(Err(CmdError::Standard(e)))
                    if Instant::now() < until
                        && matches!(
                            e.error,
                            ErrorStatus::NoSuchElement
                                | ErrorStatus::StaleElementReference
                                | ErrorStatus::ElementClickIntercepted
                                | ErrorStatus::ElementNotInteractable
                                | ErrorStatus::InvalidElementState
                        ) =>
                {
                    tokio::time::sleep(delay).await;
                    delay = (delay * 2).min(Duration::from_millis(100));
                    continue;
                }
                // chromedriver appends its stack trace: the first line says it all.
                Ok(Err(e)) => e.to_string().lines().next().unwrap_or_default().to_owned(),
                Err(_) => format!("no answer in {} s", COMMAND_DEADLINE.as_secs()),
            };
            bail!("{what}: {error}; {}", self.describe_page().await);
        }
    }

    /// Runs `script` as the body of a function in the page (`return` gives the result).
    pub async fn execute(&self, script: &str) -> anyhow::Result<Value> {
        self.execute_with(script, Vec::new()).await
    }

    /// Runs `script` with `arguments[0..]`.
    pub async fn execute_with(&self, script: &str, args: Vec<Value>) -> anyhow::Result<Value> {
        command(
            format!("script `{script}`"),
            self.client().execute(script, args),
        )
        .await
    }

    /// Every cookie the browser would send to the current page, HttpOnly ones included.
    pub async fn cookies(&self) -> anyhow::Result<Vec<Cookie>> {
        let cookies = command("cookies", self.client().get_all_cookies()).await?;
        Ok(cookies
            .into_iter()
            .map(|c| Cookie {
                name: c.name().to_owned(),
                value: c.value().to_owned(),
                domain: c.domain().map(str::to_owned),
                path: c.path().map(str::to_owned),
                secure: c.secure().unwrap_or(false),
                http_only: c.http_only().unwrap_or(false),
                same_site: c.same_site().map(|s| s.to_string()),
            })
            .collect())
    }

    /// The cookie named `name`, if the browser holds one for the current page.
    pub async fn cookie(&self, name: &str) -> anyhow::Result<Option<Cookie>> {
        Ok(self.cookies().await?.into_iter().find(|c| c.name == name))
    }

    /// Where this session's downloads land.
    pub fn downloads_dir(&self) -> &Path {
        &self.downloads
    }

    /// Waits for the next completed download (one not returned before) and returns its path.
    /// Chromium writes `*.crdownload` (and hidden temporary files) and renames it when done.
    pub async fn wait_download(&self) -> anyhow::Result<PathBuf> {
        let found = crate::eventually(WAIT, || async {
            let entries: Vec<PathBuf> = std::fs::read_dir(&self.downloads)
                .ok()?
                .filter_map(|e| e.ok().map(|e| e.path()))
                .collect();
            // In progress: `*.crdownload`, and Chromium's hidden temporary files.
            let partial = |p: &PathBuf| {
                p.extension().is_some_and(|e| e == "crdownload")
                    || p.file_name()
                        .is_some_and(|n| n.as_encoded_bytes().starts_with(b"."))
            };
            if entries.iter().any(partial) {
                return None;
            }
            let mut taken = self.taken.lock().expect("downloads lock");
            let new = entries.into_iter().find(|p| !taken.contains(p))?;
            taken.insert(new.clone());
            Some(new)
        })
        .await;
        match found {
            Some(path) => Ok(path),
            None => bail!(
                "no download completed in {} within {} s; {}",
                self.downloads.display(),
                WAIT.as_secs(),
                self.describe_page().await
            ),
        }
    }

    /// Saves a PNG of the viewport.
    pub async fn screenshot(&self, path: impl AsRef<Path>) -> anyhow::Result<()> {
        let path = path.as_ref();
        let png = command("screenshot", self.client().screenshot()).await?;
        if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
            std::fs::create_dir_all(parent)?;
        }
        std::fs::write(path, png).with_context(|| format!("write {}", path.display()))
    }

    /// For error messages: the URL, where a screenshot and the HTML were saved, and the start
    /// of the page's text.
    async fn describe_page(&self) -> String {
        static N: AtomicU64 = AtomicU64::new(0);
        let client = self.client();
        let quick = Duration::from_secs(10);
        let url = tokio::time::timeout(quick, client.current_url())
            .await
            .ok()
            .and_then(Result::ok)
            .map_or_else(|| "?".to_owned(), |u| u.to_string());
        let text = tokio::time::timeout(
            quick,
            client.execute(
                "return document.body ? document.body.innerText : ''",
                vec![],
            ),
        )
        .await
        .ok()
        .and_then(Result::ok)
        .and_then(|v| v.as_str().map(str::to_owned))
        .unwrap_or_default();
        let text: String = text.chars().take(600).collect();
        let stem = std::env::temp_dir()
            .join("headend-browser-failures")
            .join(format!(
                "{}-{}",
                std::process::id(),
                N.fetch_add(1, Ordering::Relaxed)
            ));
        let png = stem.with_extension("png");
        let saved = match tokio::time::timeout(quick, self.screenshot(&png)).await {
            Ok(Ok(())) => {
                if let Ok(Ok(html)) = tokio::time::timeout(quick, client.source()).await {
                    let _ = std::fs::write(stem.with_extension("html"), html);
                }
                format!("page saved to {}.{{png,html}}", stem.display())
            }
            _ => "no screenshot".to_owned(),
        };
        format!("page {url} ({saved}), its text: {text:?}")
    }

    /// The end of chromedriver's log, for start errors.
    fn log_tail(&self) -> String {
        let Some(dir) = &self.dir else {
            return String::new();
        };
        let mut tail = String::new();
        for name in ["chromedriver.stderr", "chromedriver.log"] {
            let text = std::fs::read_to_string(dir.path().join(name)).unwrap_or_default();
            let lines: Vec<&str> = text.lines().collect();
            let from = lines.len().saturating_sub(15);
            tail.push_str(&format!("\n--- {name}:\n{}", lines[from..].join("\n")));
        }
        tail
    }

    /// Ends the session (Chromium exits), then stops chromedriver and removes the profile.
    pub async fn close(mut self) -> anyhow::Result<()> {
        if let Some(client) = self.client.take() {
            let _ = tokio::time::timeout(Duration::from_secs(10), client.close()).await;
        }
        self.kill();
        let _ = tokio::time::timeout(Duration::from_secs(10), self.driver.wait()).await;
        let until = Instant::now() + Duration::from_secs(5);
        while group_alive(self.group) && Instant::now() < until {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        self.remove_dir();
        self.closed = true;
        Ok(())
    }

    fn kill(&mut self) {
        use nix::sys::signal::{killpg, Signal};
        let _ = killpg(nix::unistd::Pid::from_raw(self.group), Signal::SIGKILL);
        let _ = self.driver.start_kill();
    }

    /// Removes the profile once no live process of the group is left to write into it.
    fn remove_dir(&mut self) {
        let until = Instant::now() + Duration::from_secs(5);
        while group_alive(self.group) && Instant::now() < until {
            let _ = self.driver.try_wait();
            std::thread::sleep(Duration::from_millis(10));
        }
        if let Some(dir) = self.dir.take() {
            let path = dir.path().to_owned();
            if dir.close().is_err() {
                let _ = std::fs::remove_dir_all(path);
            }
        }
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        if self.closed {
            return;
        }
        self.client.take();
        self.kill();
        self.remove_dir();
    }
}

/// Whether a process of group `group` is still running (zombies do not count: their parent
/// may be an init that never reaps).
fn group_alive(group: i32) -> bool {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return false;
    };
    entries.filter_map(Result::ok).any(|entry| {
        let Ok(stat) = std::fs::read_to_string(entry.path().join("stat")) else {
            return false;
        };
        // pid (comm) state ppid pgrp ...; comm may contain spaces and parentheses.
        let Some((_, rest)) = stat.rsplit_once(')') else {
            return false;
        };
        let mut fields = rest.split_whitespace();
        let state = fields.next();
        let pgrp = fields.nth(1).and_then(|f| f.parse::<i32>().ok());
        pgrp == Some(group) && state != Some("Z") && state != Some("X")
    })
}

/// Reads chromedriver's stdout up to "ChromeDriver was started successfully on port N.", then
/// keeps draining it in the background (Chromium's output may follow).
async fn driver_port(stdout: tokio::process::ChildStdout) -> anyhow::Result<u16> {
    let mut lines = BufReader::new(stdout).lines();
    let mut seen = Vec::new();
    while let Some(line) = lines.next_line().await.context("chromedriver stdout")? {
        if let Some(port) = line
            .split_once("started successfully on port ")
            .and_then(|(_, p)| p.trim_end_matches('.').trim().parse::<u16>().ok())
        {
            tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
            return Ok(port);
        }
        seen.push(line);
    }
    bail!("chromedriver exited before listening: {}", seen.join("\n"))
}

fn capabilities(chromium: &Path, profile: &Path, downloads: &Path) -> fantoccini::wd::Capabilities {
    let args = [
        "--headless=new".to_owned(),
        // Chromium's sandbox cannot run as root, which CI is.
        "--no-sandbox".to_owned(),
        "--disable-dev-shm-usage".to_owned(),
        "--disable-gpu".to_owned(),
        format!("--user-data-dir={}", profile.display()),
        "--window-size=1280,1024".to_owned(),
        "--lang=en-US".to_owned(),
        "--no-first-run".to_owned(),
        "--no-default-browser-check".to_owned(),
        "--disable-extensions".to_owned(),
        "--disable-background-networking".to_owned(),
        "--disable-component-update".to_owned(),
        "--disable-default-apps".to_owned(),
        "--disable-sync".to_owned(),
        "--disable-breakpad".to_owned(),
        "--password-store=basic".to_owned(),
        "--mute-audio".to_owned(),
    ];
    let capabilities = json!({
        "browserName": "chrome",
        "pageLoadStrategy": "normal",
        "timeouts": { "pageLoad": 60_000, "script": 30_000, "implicit": 0 },
        "goog:chromeOptions": {
            "binary": chromium,
            "args": args,
            "prefs": {
                "download.default_directory": downloads,
                "download.prompt_for_download": false,
                "download.directory_upgrade": true,
                "safebrowsing.enabled": false,
                "credentials_enable_service": false,
                "profile.password_manager_enabled": false,
                "profile.password_manager_leak_detection": false,
            },
        },
    });
    match capabilities {
        Value::Object(map) => map,
        _ => unreachable!("capabilities are an object"),
    }
}

/// Runs one WebDriver command with [`COMMAND_DEADLINE`], naming it in the error.
async fn command<T, E>(
    what: impl std::fmt::Display,
    fut: impl std::future::Future<Output = Result<T, E>>,
) -> anyhow::Result<T>
where
    E: std::error::Error + Send + Sync + 'static,
{
    match tokio::time::timeout(COMMAND_DEADLINE, fut).await {
        Ok(result) => result.with_context(|| what.to_string()),
        Err(_) => bail!("{what}: no answer in {} s", COMMAND_DEADLINE.as_secs()),
    }
}

impl Browser {
    /// Makes pages follow a dark system theme (`prefers-color-scheme: dark`) for the rest of
    /// the session, through chromedriver's DevTools endpoint
    /// (`POST /session/{id}/goog/cdp/execute`, `Emulation.setEmulatedMedia`).
    pub async fn emulate_dark_mode(&self) -> anyhow::Result<()> {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let dir = self.dir.as_ref().context("browser closed")?;
        // chromedriver listens on a port it picked (`--port=0`) and logs it.
        let log = std::fs::read_to_string(dir.path().join("chromedriver.log"))
            .context("chromedriver log")?;
        let port: u16 = log
            .lines()
            .find_map(|l| {
                let (_, p) = l.split_once("started successfully on port ")?;
                p.trim().trim_end_matches('.').parse().ok()
            })
            .context("chromedriver's port in its log")?;
        let session = command("session id", self.client().session_id())
            .await?
            .context("no WebDriver session")?;
        let body = json!({
            "cmd": "Emulation.setEmulatedMedia",
            "params": { "features": [{ "name": "prefers-color-scheme", "value": "dark" }] },
        })
        .to_string();
        let request = format!(
            "POST /session/{session}/goog/cdp/execute HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n\
             Content-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        );
        let exchange = async {
            let mut stream = tokio::net::TcpStream::connect(("127.0.0.1", port)).await?;
            stream.write_all(request.as_bytes()).await?;
            // chromedriver keeps the connection open: read the head, then Content-Length bytes.
            let mut answer = Vec::new();
            let mut chunk = [0u8; 4096];
            loop {
                let n = stream.read(&mut chunk).await?;
                answer.extend_from_slice(&chunk[..n]);
                let text = String::from_utf8_lossy(&answer).into_owned();
                if let Some((head, body)) = text.split_once("\r\n\r\n") {
                    let length = head
                        .lines()
                        .find_map(|l| {
                            let (name, value) = l.split_once(':')?;
                            name.eq_ignore_ascii_case("content-length")
                                .then(|| value.trim().parse::<usize>().ok())?
                        })
                        .unwrap_or(0);
                    if body.len() >= length {
                        return anyhow::Ok(text);
                    }
                }
                if n == 0 {
                    bail!("chromedriver closed the connection: {text}");
                }
            }
        };
        let answer = tokio::time::timeout(COMMAND_DEADLINE, exchange)
            .await
            .map_err(|_| anyhow!("dark mode: no answer in {} s", COMMAND_DEADLINE.as_secs()))??;
        if answer.split_whitespace().nth(1) != Some("200") {
            bail!("chromedriver refused the dark mode emulation: {answer}");
        }
        Ok(())
    }
}
