//! Starts the real `cairn` binary for end-to-end tests and talks to it over real sockets.

#![allow(dead_code)]

use std::collections::BTreeMap;
use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

pub const BIN: &str = env!("CARGO_BIN_EXE_cairn");

/// The shared artifacts next to the project.
pub fn samples() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../../shared/stratos-samples")
}

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port on loopback")
}

/// An offset that moves every given proxy port onto a free port.
pub fn free_offset(proxy_ports: &[u16]) -> u16 {
    let seed =
        std::process::id() as u64 ^ Instant::now().elapsed().as_nanos() as u64 ^ free_port() as u64;
    for attempt in 0..500u64 {
        let offset = 10_000
            + ((seed
                .wrapping_mul(2_654_435_761)
                .wrapping_add(attempt * 7_919))
                % 45_000) as u16;
        let all_free = proxy_ports.iter().all(|p| {
            let port = p.checked_add(offset);
            port.is_some_and(|port| TcpListener::bind(("127.0.0.1", port)).is_ok())
        });
        if all_free {
            return offset;
        }
    }
    panic!("no offset puts proxy ports {proxy_ports:?} on free ports");
}

pub struct Cairn {
    pub data_dir: PathBuf,
    pub api: SocketAddr,
    pub stratos: SocketAddr,
    pub offset: u16,
    child: Option<Child>,
    _temp: TempDir,
}

/// A directory removed when dropped.
pub struct TempDir(pub PathBuf);

impl TempDir {
    pub fn new(name: &str) -> TempDir {
        let dir = std::env::temp_dir().join(format!(
            "cairn-test-{name}-{}-{}",
            std::process::id(),
            free_port()
        ));
        std::fs::create_dir_all(&dir).expect("temp dir");
        TempDir(dir)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

impl Cairn {
    pub fn start(name: &str, proxy_ports: &[u16]) -> Cairn {
        let temp = TempDir::new(name);
        let mut cairn = Cairn {
            data_dir: temp.0.clone(),
            api: SocketAddr::from(([127, 0, 0, 1], free_port())),
            stratos: SocketAddr::from(([127, 0, 0, 1], free_port())),
            offset: free_offset(proxy_ports),
            child: None,
            _temp: temp,
        };
        cairn.launch();
        cairn
    }

    /// Starts the process again on the same data directory and ports.
    pub fn launch(&mut self) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.data_dir.join("cairn.out"))
            .expect("log file");
        let child = Command::new(BIN)
            .args(["up", "--data-dir"])
            .arg(&self.data_dir)
            .args(["--listen", &self.api.to_string()])
            .args(["--stratos-api", &self.stratos.to_string()])
            .args(["--proxy-port-offset", &self.offset.to_string()])
            .args(["--stop-grace", "2"])
            .env("CAIRN_LOG", "info")
            .stdout(Stdio::from(log.try_clone().expect("log file")))
            .stderr(Stdio::from(log))
            .spawn()
            .expect("cairn starts");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            if std::net::TcpStream::connect(self.api).is_ok() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        panic!(
            "cairn did not listen on {} within 20 s:\n{}",
            self.api,
            self.output()
        );
    }

    /// What the process printed, for failure messages.
    pub fn output(&self) -> String {
        std::fs::read_to_string(self.data_dir.join("cairn.out")).unwrap_or_default()
    }

    pub fn kill9(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.api)
    }

    pub fn get(&self, path: &str) -> (u16, Value) {
        let response = client()
            .get(self.url(path))
            .send()
            .expect("native API answers");
        let status = response.status().as_u16();
        (status, response.json().unwrap_or(Value::Null))
    }

    pub fn post_blueprint(&self, yaml: &str) -> (u16, Value) {
        let response = client()
            .post(self.url("/v1/blueprints"))
            .body(yaml.to_string())
            .send()
            .expect("native API answers");
        let status = response.status().as_u16();
        (status, response.json().unwrap_or(Value::Null))
    }

    pub fn view(&self, app: &str) -> Option<Value> {
        let (status, body) = self.get(&format!("/v1/applications/{app}"));
        (status == 200).then_some(body)
    }

    /// Waits until `check` holds for the application's view, or fails with the last view.
    pub fn wait_for(
        &self,
        app: &str,
        what: &str,
        timeout: Duration,
        check: impl Fn(&Value) -> bool,
    ) -> Value {
        let deadline = Instant::now() + timeout;
        let mut last = Value::Null;
        while Instant::now() < deadline {
            if let Some(view) = self.view(app) {
                if check(&view) {
                    return view;
                }
                last = view;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!(
            "{app}: {what} not reached within {timeout:?}; last view:\n{}\n--- cairn output ---\n{}",
            serde_json::to_string_pretty(&last).unwrap_or_default(),
            tail(&self.output(), 60)
        );
    }

    pub fn wait_active(&self, app: &str) -> Value {
        self.wait_for(app, "Active", Duration::from_secs(30), |v| {
            v["status"] == "Active"
        })
    }

    /// `curl` exactly as Stratos' sample scripts call it; returns the HTTP status.
    pub fn stratos_curl(&self, method: &str, path: &str, file: Option<&Path>) -> (u16, String) {
        let mut command = Command::new("curl");
        command
            .args([
                "-sS",
                "-k",
                "-u",
                "admin:admin",
                "-H",
                "Content-Type: application/json",
            ])
            .args(["-X", method, "-w", "\n%{http_code}"]);
        if let Some(file) = file {
            command.arg("-d").arg(format!("@{}", file.display()));
        }
        command.arg(format!("https://{}/api/{path}", self.stratos));
        let output = command
            .output()
            .expect("curl runs (the test script installs it)");
        let text = String::from_utf8_lossy(&output.stdout).to_string();
        let (body, code) = text.rsplit_once('\n').unwrap_or(("", &text));
        let body = format!("{body}{}", String::from_utf8_lossy(&output.stderr));
        (code.trim().parse().unwrap_or(0), body)
    }
}

impl Drop for Cairn {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            // SIGTERM lets `up` stop its members; SIGKILL after a while in case it hangs.
            let _ = Command::new("kill").arg(child.id().to_string()).status();
            let deadline = Instant::now() + Duration::from_secs(10);
            while Instant::now() < deadline {
                if let Ok(Some(_)) = child.try_wait() {
                    break;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            let _ = child.kill();
            let _ = child.wait();
        }
        kill_members_of(&self.data_dir);
    }
}

pub fn client() -> reqwest::blocking::Client {
    reqwest::blocking::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .expect("http client")
}

pub fn tail(text: &str, lines: usize) -> String {
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

/// Processes whose environment marks them as members of the Cairn with this data directory.
pub fn member_processes(data_dir: &Path) -> BTreeMap<u32, String> {
    let marker = format!("CAIRN_DATA_DIR={}", data_dir.display());
    let mut found = BTreeMap::new();
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return found;
    };
    for entry in entries.flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let Ok(environ) = std::fs::read(format!("/proc/{pid}/environ")) else {
            continue;
        };
        // A zombie has an empty environment; it is not running.
        let vars: Vec<String> = environ
            .split(|b| *b == 0)
            .map(|v| String::from_utf8_lossy(v).to_string())
            .collect();
        if !vars.contains(&marker) {
            continue;
        }
        if let Some(id) = vars.iter().find_map(|v| v.strip_prefix("CAIRN_MEMBER_ID=")) {
            found.insert(pid, id.to_string());
        }
    }
    found
}

fn kill_members_of(data_dir: &Path) {
    for pid in member_processes(data_dir).keys() {
        let _ = Command::new("kill")
            .args(["-9", &format!("-{pid}")])
            .status();
        let _ = Command::new("kill").args(["-9", &pid.to_string()]).status();
    }
}

/// How many members of a runtime view are Active.
pub fn active(view: &Value) -> usize {
    members(view)
        .iter()
        .filter(|(_, m)| m["status"] == "Active")
        .count()
}

/// Every member of every cluster in a runtime view, with the cluster alias.
pub fn members(view: &Value) -> Vec<(String, Value)> {
    let mut out = Vec::new();
    fn walk(node: &Value, out: &mut Vec<(String, Value)>) {
        for c in node["clusters"].as_array().into_iter().flatten() {
            for m in c["members"].as_array().into_iter().flatten() {
                out.push((c["alias"].as_str().unwrap_or("").to_string(), m.clone()));
            }
        }
        for g in node["groups"].as_array().into_iter().flatten() {
            for i in g["instances"].as_array().into_iter().flatten() {
                walk(i, out);
            }
        }
    }
    walk(view, &mut out);
    out
}

/// The pid of a member, from /proc.
pub fn pid_of(data_dir: &Path, member: &str) -> Option<u32> {
    member_processes(data_dir)
        .into_iter()
        .find(|(_, id)| id == member)
        .map(|(pid, _)| pid)
}

pub fn kill9(pid: u32) {
    let status = Command::new("kill")
        .args(["-9", &pid.to_string()])
        .status()
        .expect("kill runs");
    assert!(status.success(), "kill -9 {pid}");
}

/// Clients sending GET requests in a loop until finished (bounded to a minute), counting answers.
pub struct Load {
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    ok: std::sync::Arc<std::sync::atomic::AtomicU64>,
    failures: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
    workers: Vec<std::thread::JoinHandle<()>>,
}

impl Load {
    /// `workers` clients requesting `url`, with `host` as the Host header when given.
    pub fn start(url: &str, workers: usize, host: Option<&str>) -> Load {
        use std::sync::atomic::Ordering;
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let ok = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
        let failures = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let workers = (0..workers)
            .map(|_| {
                let (url, host) = (url.to_string(), host.map(str::to_string));
                let (stop, ok, failures) = (stop.clone(), ok.clone(), failures.clone());
                std::thread::spawn(move || {
                    let http = client();
                    let deadline = Instant::now() + Duration::from_secs(60);
                    while !stop.load(Ordering::Relaxed) && Instant::now() < deadline {
                        let mut request = http.get(&url);
                        if let Some(host) = &host {
                            request = request.header("Host", host);
                        }
                        let failure = match request.send() {
                            Ok(r) if r.status() == 200 => {
                                ok.fetch_add(1, Ordering::Relaxed);
                                continue;
                            }
                            Ok(r) => format!("HTTP {}", r.status()),
                            Err(e) => e.to_string(),
                        };
                        failures
                            .lock()
                            .unwrap_or_else(|e| e.into_inner())
                            .push(failure);
                    }
                })
            })
            .collect();
        Load {
            stop,
            ok,
            failures,
            workers,
        }
    }

    /// Answers so far.
    pub fn ok(&self) -> u64 {
        self.ok.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Stops the clients; returns the answered count and the failures.
    pub fn finish(self) -> (u64, Vec<String>) {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        for w in self.workers {
            let _ = w.join();
        }
        let failures = self
            .failures
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        (self.ok.load(std::sync::atomic::Ordering::Relaxed), failures)
    }
}
