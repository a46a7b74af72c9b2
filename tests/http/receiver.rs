//! A real HTTP receiver for the sink's tests: actix-web on a loopback port, recording every
//! request and answering as a test scripts it (status, headers, body, a delay), per path.

use std::collections::{BTreeMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use actix_web::dev::ServerHandle;
use actix_web::{App, HttpRequest, HttpResponse, HttpServer, web};

/// One request as the receiver saw it.
#[derive(Debug, Clone)]
pub struct Captured {
    pub method: String,
    /// Path and query.
    pub path: String,
    /// Header names in lower case; a repeated header keeps its last value.
    pub headers: BTreeMap<String, String>,
    pub body: Vec<u8>,
    pub at: Instant,
}

impl Captured {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).map(String::as_str)
    }

    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| {
            panic!(
                "body is not JSON ({e}): {}",
                String::from_utf8_lossy(&self.body)
            )
        })
    }

    /// The event id hookbridge sends with every request.
    pub fn event_id(&self) -> String {
        self.header("x-hookbridge-event-id")
            .unwrap_or_default()
            .to_string()
    }
}

/// One scripted answer.
#[derive(Debug, Clone)]
pub struct Reply {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: String,
    /// Waits this long before answering (a hanging receiver).
    pub delay: Duration,
}

impl Reply {
    pub fn status(status: u16) -> Reply {
        Reply {
            status,
            headers: vec![],
            body: String::new(),
            delay: Duration::ZERO,
        }
    }

    pub fn header(mut self, name: &str, value: &str) -> Reply {
        self.headers.push((name.into(), value.into()));
        self
    }

    pub fn body(mut self, body: &str) -> Reply {
        self.body = body.into();
        self
    }

    pub fn delay(mut self, delay: Duration) -> Reply {
        self.delay = delay;
        self
    }
}

#[derive(Default)]
struct State {
    requests: Vec<Captured>,
    /// Answers by path (without query), used up in order; then `default`.
    script: BTreeMap<String, VecDeque<Reply>>,
    /// The answer when nothing is scripted (200 unless set).
    default: Option<Reply>,
    /// Requests being answered now, and the most at once so far.
    active: usize,
    most: usize,
}

/// A running receiver; stopped on drop.
pub struct Receiver {
    /// `http://127.0.0.1:PORT`.
    pub base: String,
    state: Arc<Mutex<State>>,
    handle: ServerHandle,
}

impl Receiver {
    /// Listens on a free port.
    pub fn start() -> Receiver {
        Receiver::start_on(super::common::free_port())
    }

    /// Listens on `port` (a test that starts the receiver late picks the port first).
    pub fn start_on(port: u16) -> Receiver {
        Receiver::start_with(port, None)
    }

    /// Serves HTTPS with `tls` on a free port.
    pub fn start_tls(tls: rustls::ServerConfig) -> Receiver {
        let mut r = Receiver::start_with(super::common::free_port(), Some(tls));
        r.base = r.base.replacen("http://", "https://", 1);
        r
    }

    fn start_with(port: u16, tls: Option<rustls::ServerConfig>) -> Receiver {
        let state = Arc::new(Mutex::new(State::default()));
        let shared = web::Data::from(state.clone());
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            actix_web::rt::System::new().block_on(async move {
                let server = HttpServer::new(move || {
                    App::new()
                        .app_data(shared.clone())
                        .app_data(web::PayloadConfig::new(16 * 1024 * 1024))
                        .default_service(web::to(receive))
                })
                .workers(2)
                .disable_signals();
                let server = match tls {
                    Some(tls) => server.bind_rustls_0_23(("127.0.0.1", port), tls),
                    None => server.bind(("127.0.0.1", port)),
                }
                .expect("bind the receiver")
                .run();
                let _ = tx.send(server.handle());
                let _ = server.await;
            });
        });
        let handle = rx.recv().expect("receiver started");
        Receiver {
            base: format!("http://127.0.0.1:{port}"),
            state,
            handle,
        }
    }

    /// Answers the next request to `path` with `reply` (after any answers already scripted).
    pub fn reply(&self, path: &str, reply: Reply) {
        self.state
            .lock()
            .unwrap()
            .script
            .entry(path.to_string())
            .or_default()
            .push_back(reply);
    }

    /// Answers every unscripted request with `reply`.
    pub fn reply_always(&self, reply: Reply) {
        self.state.lock().unwrap().default = Some(reply);
    }

    /// Every request so far.
    pub fn requests(&self) -> Vec<Captured> {
        self.state.lock().unwrap().requests.clone()
    }

    /// The requests to `path` so far.
    pub fn requests_to(&self, path: &str) -> Vec<Captured> {
        self.requests()
            .into_iter()
            .filter(|r| r.path.split('?').next() == Some(path))
            .collect()
    }

    /// The most requests the receiver was answering at once.
    pub fn most_at_once(&self) -> usize {
        self.state.lock().unwrap().most
    }

    /// Waits (20 s at most) until `done` holds for the requests, returning them.
    pub async fn wait_until(&self, done: impl Fn(&[Captured]) -> bool) -> Vec<Captured> {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let requests = self.requests();
            if done(&requests) || Instant::now() > deadline {
                return requests;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Waits until at least `n` requests arrived.
    pub async fn wait_requests(&self, n: usize) -> Vec<Captured> {
        self.wait_until(|r| r.len() >= n).await
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        let handle = self.handle.clone();
        std::thread::spawn(move || actix_web::rt::System::new().block_on(handle.stop(false)));
    }
}

async fn receive(
    req: HttpRequest,
    body: web::Bytes,
    state: web::Data<Mutex<State>>,
) -> HttpResponse {
    let path = req.uri().path().to_string();
    let reply = {
        let mut st = state.lock().unwrap();
        st.requests.push(Captured {
            method: req.method().to_string(),
            path: req
                .uri()
                .path_and_query()
                .map(|p| p.to_string())
                .unwrap_or_default(),
            headers: req
                .headers()
                .iter()
                .map(|(k, v)| (k.as_str().to_string(), v.to_str().unwrap_or("").to_string()))
                .collect(),
            body: body.to_vec(),
            at: Instant::now(),
        });
        st.active += 1;
        st.most = st.most.max(st.active);
        let scripted = st.script.get_mut(&path).and_then(VecDeque::pop_front);
        scripted
            .or_else(|| st.default.clone())
            .unwrap_or_else(|| Reply::status(200))
    };
    if !reply.delay.is_zero() {
        actix_web::rt::time::sleep(reply.delay).await;
    }
    state.lock().unwrap().active -= 1;
    let mut answer = HttpResponse::build(
        actix_web::http::StatusCode::from_u16(reply.status).expect("a status code"),
    );
    for (name, value) in &reply.headers {
        answer.insert_header((name.as_str(), value.as_str()));
    }
    answer.body(reply.body)
}
