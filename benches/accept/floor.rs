//! The sled floor: a receiver that does only the durable part of an accept, on the no-op
//! handler's HTTP stack. It parses the body (JSON, or a form's `payload` field as JSON), writes
//! it as one row keyed by a monotonic big-endian u64, calls sled's flush, fdatasyncs sled's `db`
//! (sled 0.34's flush is only `sync_file_range`) and answers 200. No durable receiver built on
//! sled does less per request, so the daemon's rate divided by this one is what its own work
//! (verification, events, dedup, deliveries, routing) costs.
//!
//! Concurrent requests share a flush and an fdatasync: one committer thread takes every request
//! waiting, inserts their rows, flushes and fdatasyncs once, then answers them all. On the
//! 2-core machine that was faster than a flush and an fdatasync per request on blocking threads
//! (two to four times), and handing the flush to a second thread, as the daemon's committer
//! does, did not make it faster; so it is the floor (docs/benchmarks.md, "The sled floor").

use std::fs::File;
use std::path::Path;
use std::process::{Child, Command};
use std::sync::mpsc;

use actix_web::{HttpRequest, HttpResponse, web};
use tokio::sync::oneshot;

/// The environment variable that makes the benchmark executable serve the floor on a port.
pub const PORT_VAR: &str = "HOOKBRIDGE_BENCH_FLOOR";
/// The environment variable naming the floor's sled directory.
pub const DIR_VAR: &str = "HOOKBRIDGE_BENCH_FLOOR_DIR";

/// How the floor makes a request durable, as the report names it.
pub const VARIANT: &str = "group commit: one committer thread writes the rows of every request waiting, flushes sled and fdatasyncs `db` once, then answers them all (faster than a flush and an fdatasync per request on blocking threads)";

/// Starts this benchmark executable as the floor (see [`server`]) on a free port with its
/// store in `dir`, and waits until it listens; returns the process and its port.
pub fn spawn(dir: &Path) -> (Child, u16) {
    let port = crate::load::free_port();
    let child = Command::new(std::env::current_exe().expect("own path"))
        .env(PORT_VAR, port.to_string())
        .env(DIR_VAR, dir)
        .stdout(std::process::Stdio::null())
        .spawn()
        .expect("start the sled floor");
    crate::load::wait_port(port);
    (child, port)
}

/// A request's body waiting for the committer, and where to tell the request it is durable.
struct Pending {
    body: web::Bytes,
    done: oneshot::Sender<Result<(), String>>,
}

/// sled as the daemon opens it (same cache and background flush), and its `db` file.
struct Store {
    db: sled::Db,
    tree: sled::Tree,
    file: File,
}

impl Store {
    /// Opens (creates) the store in `dir`; the benchmark cannot go on without it.
    fn open(dir: &Path) -> Store {
        let db = sled::Config::new()
            .path(dir)
            .cache_capacity(8 * 1024 * 1024)
            .flush_every_ms(Some(500))
            .open()
            .expect("open the floor's sled store");
        let tree = db.open_tree("floor").expect("open the floor's tree");
        let file = File::open(dir.join("db")).expect("open sled's db file");
        Store { db, tree, file }
    }

    /// sled's flush, then the fdatasync it leaves out.
    fn sync(&self) -> Result<(), String> {
        self.db.flush().map_err(|e| format!("sled flush: {e}"))?;
        self.file
            .sync_data()
            .map_err(|e| format!("fdatasync of db: {e}"))
    }
}

/// Serves `POST /hooks/{hook}` durably as described above, until killed.
pub fn server(port: &str, dir: &Path) {
    use actix_web::{App, HttpServer};
    let store = Store::open(dir);
    let (tx, rx) = mpsc::channel::<Pending>();
    std::thread::Builder::new()
        .name("floor-committer".into())
        .spawn(move || commit(&store, &rx))
        .expect("start the committer");
    let addr = format!("127.0.0.1:{port}");
    let sys = actix_web::rt::System::new();
    let result: std::io::Result<()> = sys.block_on(async move {
        HttpServer::new(move || {
            let tx = tx.clone();
            App::new().route(
                "/hooks/{hook}",
                web::post().to(move |req: HttpRequest, body: web::Bytes| {
                    let tx = tx.clone();
                    async move { accept(&req, body, &tx).await }
                }),
            )
        })
        .bind(addr)?
        .run()
        .await
    });
    if let Err(e) = result {
        eprintln!("sled floor: {e}");
    }
}

/// One request: parsed on the worker, made durable by the committer, then answered.
async fn accept(req: &HttpRequest, body: web::Bytes, tx: &mpsc::Sender<Pending>) -> HttpResponse {
    if let Err(e) = parse(req, &body) {
        return HttpResponse::BadRequest().body(e);
    }
    let (done, durable) = oneshot::channel();
    if tx.send(Pending { body, done }).is_err() {
        return HttpResponse::ServiceUnavailable().body("the committer has stopped");
    }
    match durable.await {
        Ok(Ok(())) => HttpResponse::Ok().body("{\"accepted\":[]}"),
        Ok(Err(e)) => HttpResponse::InternalServerError().body(e),
        Err(_) => HttpResponse::InternalServerError().body("the committer dropped the request"),
    }
}

/// Reads the body as a receiver would: a form body's `payload` field is JSON, any other body is.
fn parse(req: &HttpRequest, body: &[u8]) -> Result<(), String> {
    let form = req.headers().get("content-type").is_some_and(|v| {
        v.as_bytes()
            .starts_with(b"application/x-www-form-urlencoded")
    });
    let parsed: serde_json::Result<serde_json::Value> = if form {
        let payload = form_urlencoded::parse(body)
            .find(|(k, _)| k == "payload")
            .map(|(_, v)| v)
            .ok_or("the form has no payload field")?;
        serde_json::from_str(&payload)
    } else {
        serde_json::from_slice(body)
    };
    parsed
        .map(drop)
        .map_err(|e| format!("the body is not JSON: {e}"))
}

/// The committer: takes every request waiting, writes a row for each under the next keys,
/// flushes and fdatasyncs once, answers them all; until every sender is gone.
fn commit(store: &Store, rx: &mpsc::Receiver<Pending>) {
    let mut next: u64 = 0;
    let mut group = Vec::new();
    while let Ok(first) = rx.recv() {
        group.push(first);
        group.extend(rx.try_iter());
        let result = group
            .iter()
            .try_for_each(|p| {
                next += 1;
                store
                    .tree
                    .insert(next.to_be_bytes(), p.body.as_ref())
                    .map(drop)
                    .map_err(|e| format!("sled insert: {e}"))
            })
            .and_then(|()| store.sync());
        for p in group.drain(..) {
            let _ = p.done.send(result.clone());
        }
    }
}
