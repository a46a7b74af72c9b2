//! A local ArcGIS that speaks the extractChanges flow (docs/arcgis.md, "The change feed"): OAuth2 and
//! generateToken token endpoints, `extractChanges` (async or direct), `jobs/<id>` and
//! `changefiles/<id>.json`. It checks the token on every call and can be told to misbehave.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use actix_web::{App, HttpRequest, HttpResponse, HttpServer, web};
use serde_json::{Value, json};

/// The OAuth2 app credentials and the Enterprise user the server accepts.
pub const CLIENT_ID: &str = "feed-app";
pub const CLIENT_SECRET: &str = "client-secret-QX81";
pub const USERNAME: &str = "editor";
pub const PASSWORD: &str = "password-QX81";

/// What the server does with the next calls.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// The documented flow.
    Normal,
    /// The next authorized call answers `{"error":{"code":498}}` with 200 and revokes the token.
    Refuse498Once,
    /// The next `n` extractChanges calls hang for 30 s.
    Hang(u32),
    /// The next `n` calls to the service answer 503.
    Unavailable(u32),
    /// extractChanges answers `{"error": ...}` with 200.
    ErrorInOk,
    /// The job fails.
    FailJob,
    /// Refuses every token request (bad credentials).
    NoToken,
    /// Admin operations answer that the user lacks the privilege.
    NoPrivilege,
}

/// What the server saw.
#[derive(Debug, Default, Clone)]
pub struct Seen {
    /// Tokens issued, in order.
    pub tokens: Vec<String>,
    /// Calls per endpoint: token, extract, job, file.
    pub calls: BTreeMap<&'static str, u32>,
    /// Calls to the service without a valid token.
    pub unauthorized: u32,
    /// Calls whose query had no `f=json`.
    pub without_f_json: u32,
    /// Calls that carried a token in the URL (ArcGIS takes it in a header; URLs reach logs).
    pub token_in_query: u32,
    /// Requests to paths the server does not serve: path and query, and whether a token came.
    pub stray: Vec<(String, bool)>,
}

/// One edit of a live layer: its serverGen, layer, operation and feature.
#[derive(Debug, Clone)]
struct Edit {
    gen_: u64,
    layer: u32,
    op: &'static str,
    oid: u64,
    feature: Value,
}

struct State {
    /// Edits made with [`Arcgis::edit`]; once there is one, extractChanges answers from them
    /// (by `layerServerGens` or `serverGens`) instead of the fixed change file.
    edits: Vec<Edit>,
    /// The service's current serverGen.
    gen_: u64,
    /// Change files of jobs answered from edits.
    job_files: BTreeMap<String, Vec<u8>>,
    /// Feature-service webhook resources by id (ArcGIS Online's admin shape).
    webhooks: BTreeMap<String, Value>,
    mode: Mode,
    seen: Seen,
    valid: Option<String>,
    file: Vec<u8>,
    base: String,
    polls: BTreeMap<String, u32>,
}

/// A running local ArcGIS.
pub struct Arcgis {
    /// `http://127.0.0.1:PORT`.
    pub base: String,
    state: Arc<Mutex<State>>,
    /// The serverGen the next window handed out starts at.
    next_gen: AtomicU64,
}

impl Arcgis {
    /// Starts a server that serves `file` as every change file.
    pub fn start(file: Vec<u8>) -> Arcgis {
        let port = super::common::free_port();
        let base = format!("http://127.0.0.1:{port}");
        let state = Arc::new(Mutex::new(State {
            edits: Vec::new(),
            gen_: 1_404_636,
            job_files: BTreeMap::new(),
            webhooks: BTreeMap::new(),
            mode: Mode::Normal,
            seen: Seen::default(),
            valid: None,
            file,
            base: base.clone(),
            polls: BTreeMap::new(),
        }));
        let shared = web::Data::from(state.clone());
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            actix_web::rt::System::new().block_on(async move {
                let server = HttpServer::new(move || {
                    App::new()
                        .app_data(shared.clone())
                        .route("/sharing/rest/oauth2/token", web::post().to(oauth))
                        .route("/sharing/rest/generateToken", web::post().to(generate))
                        .route(
                            "/rest/services/{svc}/FeatureServer",
                            web::get().to(service_info),
                        )
                        .route(
                            "/rest/admin/services/{svc}/FeatureServer/WebHooks",
                            web::get().to(webhook_list),
                        )
                        .route(
                            "/rest/admin/services/{svc}/FeatureServer/WebHooks/create",
                            web::post().to(webhook_create),
                        )
                        .route(
                            "/rest/admin/services/{svc}/FeatureServer/WebHooks/{id}",
                            web::get().to(webhook),
                        )
                        .route(
                            "/rest/services/{svc}/FeatureServer/extractChanges",
                            web::get().to(extract),
                        )
                        .route(
                            "/rest/services/{svc}/FeatureServer/jobs/{id}",
                            web::get().to(job),
                        )
                        .route(
                            "/rest/services/{svc}/FeatureServer/changefiles/{id}",
                            web::get().to(change_file),
                        )
                        .default_service(web::to(stray))
                })
                .workers(2)
                .disable_signals()
                .bind(("127.0.0.1", port))
                .expect("bind the local ArcGIS")
                .run();
                let _ = tx.send(());
                let _ = server.await;
            });
        });
        rx.recv().expect("local ArcGIS started");
        Arcgis {
            base,
            state,
            next_gen: AtomicU64::new(1_404_636),
        }
    }

    /// Sets what the server does next.
    pub fn set(&self, mode: Mode) {
        self.state.lock().unwrap().mode = mode;
    }

    /// What the server saw so far.
    pub fn seen(&self) -> Seen {
        self.state.lock().unwrap().seen.clone()
    }

    /// Calls to one endpoint so far.
    pub fn calls(&self, what: &str) -> u32 {
        self.seen().calls.get(what).copied().unwrap_or(0)
    }

    /// The URL of feature service `svc` on this server.
    pub fn service_url(&self, svc: &str) -> String {
        format!("{}/rest/services/{svc}/FeatureServer", self.base)
    }

    /// Edits a live layer as an editor would, with no webhook delivery: `op` is add, update
    /// or delete of feature `oid`. Returns the service's new serverGen.
    pub fn edit(&self, layer: u32, op: &'static str, oid: u64, notes: &str) -> u64 {
        let mut st = self.state.lock().unwrap();
        st.gen_ += 1;
        let gen_ = st.gen_;
        let feature = json!({
            "geometry": {"x": -117.19 + oid as f64 / 1000.0, "y": 34.05},
            "attributes": {"OBJECTID": oid, "GlobalID": format!("{{0000{oid:04}-0000-0000-0000-000000000000}}"),
                "Notes": notes}
        });
        st.edits.push(Edit {
            gen_,
            layer,
            op,
            oid,
            feature,
        });
        gen_
    }

    /// Sets webhook `id` of service `svc` as ArcGIS Online would show it: `active`, and the
    /// failed notification attempts. Returns its resource URL.
    pub fn set_webhook(&self, svc: &str, id: &str, active: bool, attempts: i64) -> String {
        let mut st = self.state.lock().unwrap();
        let resource = json!({
            "id": id, "name": format!("{svc} to hookbridge"), "active": active,
            "hookUrl": "https://hooks.example/hooks/parcels", "serviceUrl": format!("{}/rest/services/{svc}/FeatureServer", st.base),
            "signatureKey": "", "format": "json", "contentType": "application/json",
            "changeTypes": "*", "serverGen": st.gen_, "curNotificationAttempts": attempts,
            "scheduleInfo": {"name": "", "startAt": 0, "state": "enabled",
                "recurrenceInfo": {"frequency": "second", "interval": 30}},
            "createdTime": 1_700_000_000_000u64, "lastUpdatedTime": 1_700_000_000_000u64
        });
        st.webhooks.insert(id.to_string(), resource);
        format!(
            "{}/rest/admin/services/{svc}/FeatureServer/WebHooks/{id}",
            st.base
        )
    }

    /// The service's current serverGen.
    pub fn server_gen(&self) -> u64 {
        self.state.lock().unwrap().gen_
    }

    /// A changesUrl of service `svc` on this server over a window of its own, as each ArcGIS
    /// delivery names the serverGens since the one before.
    pub fn changes_url(&self, svc: &str, asynchronous: bool) -> String {
        let from = self.next_gen.fetch_add(4, Ordering::Relaxed);
        self.window_url(svc, from, from + 4, asynchronous)
    }

    /// The changesUrl of service `svc` over the serverGens `from` to `to`.
    pub fn window_url(&self, svc: &str, from: u64, to: u64, asynchronous: bool) -> String {
        format!(
            "{}/rest/services/{svc}/FeatureServer/extractChanges?serverGens=[{from},{to}]{}&returnUpdates=true",
            self.base,
            if asynchronous { "&async=true" } else { "" }
        )
    }
}

fn count(st: &mut State, what: &'static str) {
    *st.seen.calls.entry(what).or_default() += 1;
}

fn query(req: &HttpRequest) -> BTreeMap<String, String> {
    form_urlencoded::parse(req.query_string().as_bytes())
        .into_owned()
        .collect()
}

/// Issues a new token and makes it the only valid one.
fn issue(st: &mut State) -> String {
    let t = format!(
        "TKN{}-secretpart-{}",
        st.seen.tokens.len() + 1,
        std::process::id()
    );
    st.seen.tokens.push(t.clone());
    st.valid = Some(t.clone());
    t
}

async fn oauth(
    st: web::Data<Mutex<State>>,
    form: web::Form<BTreeMap<String, String>>,
) -> HttpResponse {
    let mut st = st.lock().unwrap();
    count(&mut st, "token");
    let ok = form.get("client_id").map(String::as_str) == Some(CLIENT_ID)
        && form.get("client_secret").map(String::as_str) == Some(CLIENT_SECRET)
        && form.get("grant_type").map(String::as_str) == Some("client_credentials");
    if !ok || st.mode == Mode::NoToken {
        return HttpResponse::Ok().json(json!({"error": {"code": 400, "error": "invalid_client",
            "message": "Invalid client_id or client_secret"}}));
    }
    let t = issue(&mut st);
    HttpResponse::Ok().json(json!({"access_token": t, "expires_in": 7200}))
}

async fn generate(
    st: web::Data<Mutex<State>>,
    form: web::Form<BTreeMap<String, String>>,
) -> HttpResponse {
    let mut st = st.lock().unwrap();
    count(&mut st, "token");
    let ok = form.get("username").map(String::as_str) == Some(USERNAME)
        && form.get("password").map(String::as_str) == Some(PASSWORD);
    if !ok || st.mode == Mode::NoToken {
        return HttpResponse::Ok()
            .json(json!({"error": {"code": 400, "message": "Invalid username or password."}}));
    }
    let t = issue(&mut st);
    let expires = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
        + 3_600_000;
    HttpResponse::Ok().json(json!({"token": t, "expires": expires, "ssl": false}))
}

/// The token a request carries in `X-Esri-Authorization: Bearer <token>`, as ArcGIS REST
/// takes it.
fn header_token(req: &HttpRequest) -> Option<String> {
    req.headers()
        .get("x-esri-authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::to_string)
}

/// Records a request to a path this server does not serve, and whether it carried a token.
async fn stray(st: web::Data<Mutex<State>>, req: HttpRequest) -> HttpResponse {
    let had = header_token(&req).is_some() || query(&req).contains_key("token");
    let path = req
        .uri()
        .path_and_query()
        .map(|p| p.to_string())
        .unwrap_or_default();
    st.lock().unwrap().seen.stray.push((path, had));
    HttpResponse::NotFound().finish()
}

/// Checks the token (and f=json) of a service call; `Err` is the answer to give instead. A
/// token in the query is refused like a missing one: the strict server wants it in the header.
fn check(st: &mut State, req: &HttpRequest) -> Result<(), Box<HttpResponse>> {
    let q = query(req);
    if q.get("f").map(String::as_str) != Some("json") {
        st.seen.without_f_json += 1;
    }
    if q.contains_key("token") {
        st.seen.token_in_query += 1;
    }
    let token = header_token(req);
    let token = token.as_ref();
    if token.is_none() || token != st.valid.as_ref() {
        st.seen.unauthorized += 1;
        let code = if token.is_none() { 499 } else { 498 };
        return Err(Box::new(HttpResponse::Ok().json(
            json!({"error": {"code": code, "message": "Invalid token.", "details": []}}),
        )));
    }
    if st.mode == Mode::Refuse498Once {
        st.mode = Mode::Normal;
        st.valid = None;
        return Err(Box::new(HttpResponse::Ok().json(
            json!({"error": {"code": 498, "message": "Invalid token.", "details": []}}),
        )));
    }
    if let Mode::Unavailable(n) = st.mode {
        st.mode = if n > 1 {
            Mode::Unavailable(n - 1)
        } else {
            Mode::Normal
        };
        return Err(Box::new(
            HttpResponse::ServiceUnavailable().body("maintenance"),
        ));
    }
    Ok(())
}

async fn extract(
    st: web::Data<Mutex<State>>,
    req: HttpRequest,
    svc: web::Path<String>,
) -> HttpResponse {
    let hang = {
        let mut st = st.lock().unwrap();
        count(&mut st, "extract");
        // The service `broken` is down for good: an outage that never ends.
        if svc.as_str() == "broken" {
            count(&mut st, "broken");
            return HttpResponse::ServiceUnavailable().body("maintenance");
        }
        if let Err(answer) = check(&mut st, &req) {
            return *answer;
        }
        match st.mode {
            Mode::Hang(n) => {
                st.mode = if n > 1 {
                    Mode::Hang(n - 1)
                } else {
                    Mode::Normal
                };
                true
            }
            _ => false,
        }
    };
    if hang {
        actix_web::rt::time::sleep(Duration::from_secs(30)).await;
        return HttpResponse::Ok().json(json!({"error": {"code": 500, "message": "too late"}}));
    }
    let mut st = st.lock().unwrap();
    let q = query(&req);
    let live = q.contains_key("layers") || q.contains_key("layerServerGens");
    if live || !st.edits.is_empty() {
        let file = match from_edits(&st, &q) {
            Ok(f) => f,
            Err(e) => {
                return HttpResponse::Ok().json(json!({"error": {"code": 400, "message": e}}));
            }
        };
        if q.get("async").map(String::as_str) == Some("true") {
            let id = format!("job{}", st.seen.calls["extract"]);
            st.job_files.insert(format!("{id}.json"), file);
            let url = format!("{}/rest/services/{svc}/FeatureServer/jobs/{id}", st.base);
            return HttpResponse::Ok().json(json!({"statusUrl": url}));
        }
        return HttpResponse::Ok()
            .content_type("application/json")
            .body(file);
    }
    if st.mode == Mode::ErrorInOk {
        return HttpResponse::Ok().json(json!({"error": {"code": 400,
            "message": "Unable to extract changes: serverGens out of range", "details": []}}));
    }
    if query(&req).get("async").map(String::as_str) == Some("true") {
        let id = format!("job{}", st.seen.calls["extract"]);
        let url = format!("{}/rest/services/{svc}/FeatureServer/jobs/{id}", st.base);
        return HttpResponse::Ok().json(json!({"statusUrl": url}));
    }
    HttpResponse::Ok()
        .content_type("application/json")
        .body(st.file.clone())
}

async fn job(
    st: web::Data<Mutex<State>>,
    req: HttpRequest,
    p: web::Path<(String, String)>,
) -> HttpResponse {
    let (svc, id) = p.into_inner();
    let mut st = st.lock().unwrap();
    count(&mut st, "job");
    if let Err(answer) = check(&mut st, &req) {
        return *answer;
    }
    if st.mode == Mode::FailJob {
        return HttpResponse::Ok().json(json!({"status": "Failed",
            "error": {"code": 500, "message": "Failed to extract changes (layer is not change-tracked)"}}));
    }
    let polls = st.polls.entry(id.clone()).or_default();
    *polls += 1;
    if *polls < 2 {
        return HttpResponse::Ok().json(json!({"status": "Pending"}));
    }
    let url = format!(
        "{}/rest/services/{svc}/FeatureServer/changefiles/{id}.json",
        st.base
    );
    HttpResponse::Ok().json(
        json!({"status": "Completed", "resultUrl": url, "submissionTime": 1, "lastUpdatedTime": 2}),
    )
}

async fn change_file(
    st: web::Data<Mutex<State>>,
    req: HttpRequest,
    p: web::Path<(String, String)>,
) -> HttpResponse {
    let (_, id) = p.into_inner();
    let mut st = st.lock().unwrap();
    count(&mut st, "file");
    if let Err(answer) = check(&mut st, &req) {
        return *answer;
    }
    let file = st
        .job_files
        .get(&id)
        .cloned()
        .unwrap_or_else(|| st.file.clone());
    HttpResponse::Ok()
        .content_type("application/json")
        .body(file)
}

/// A webhook resource of the admin API, as set by [`Arcgis::set_webhook`].
async fn webhook(
    st: web::Data<Mutex<State>>,
    req: HttpRequest,
    p: web::Path<(String, String)>,
) -> HttpResponse {
    let (_, id) = p.into_inner();
    let mut st = st.lock().unwrap();
    count(&mut st, "webhook");
    if let Err(answer) = check(&mut st, &req) {
        return *answer;
    }
    match st.webhooks.get(&id) {
        Some(w) => HttpResponse::Ok().json(w),
        None => HttpResponse::Ok().json(json!({"error": {"code": 404,
            "message": "Webhook does not exist.", "details": []}})),
    }
}

/// The webhooks of a service, as ArcGIS Online lists them.
async fn webhook_list(st: web::Data<Mutex<State>>, req: HttpRequest) -> HttpResponse {
    let mut st = st.lock().unwrap();
    count(&mut st, "webhooks");
    if let Err(answer) = check(&mut st, &req) {
        return *answer;
    }
    if st.mode == Mode::NoPrivilege {
        return no_privilege();
    }
    let all: Vec<Value> = st.webhooks.values().cloned().collect();
    HttpResponse::Ok().json(json!({ "webhooks": all }))
}

fn no_privilege() -> HttpResponse {
    HttpResponse::Ok().json(json!({"error": {"code": 403,
        "message": "You do not have permissions to access this resource or perform this operation.",
        "details": []}}))
}

/// `WebHooks/create`, POST only, as the admin API wants: `name` and `hookUrl` required; with a
/// `signatureKey`, the payload URL must answer the CRC challenge before the webhook exists.
async fn webhook_create(
    st: web::Data<Mutex<State>>,
    req: HttpRequest,
    p: web::Path<String>,
    form: web::Form<BTreeMap<String, String>>,
) -> HttpResponse {
    let svc = p.into_inner();
    {
        let mut st = st.lock().unwrap();
        count(&mut st, "create");
        if form.contains_key("token") {
            st.seen.token_in_query += 1;
        }
        if let Err(answer) = check(&mut st, &req) {
            return *answer;
        }
        if st.mode == Mode::NoPrivilege {
            return no_privilege();
        }
    }
    let (Some(name), Some(hook_url)) = (form.get("name"), form.get("hookUrl")) else {
        return HttpResponse::Ok().json(json!({"error": {"code": 400,
            "message": "'name' and 'hookUrl' are required.", "details": []}}));
    };
    let key = form.get("signatureKey").cloned().unwrap_or_default();
    if !key.is_empty() {
        let token = format!("crc{}", std::process::id());
        let answer = reqwest::Client::new()
            .get(format!("{hook_url}?crc_token={token}"))
            .send()
            .await;
        let got: Option<Value> = match answer {
            Ok(r) if r.status().is_success() => r.json().await.ok(),
            _ => None,
        };
        use base64::Engine;
        use hmac::Mac;
        let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(key.as_bytes()).unwrap();
        mac.update(token.as_bytes());
        let want = format!(
            "sha256={}",
            base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes())
        );
        if got.as_ref().and_then(|v| v["response_token"].as_str()) != Some(want.as_str()) {
            return HttpResponse::Ok().json(json!({"error": {"code": 400,
                "message": "Unable to validate the hookUrl: the CRC response did not match.",
                "details": []}}));
        }
    }
    let mut st = st.lock().unwrap();
    let id = format!("wh{}", st.webhooks.len() + 1);
    let resource = json!({
        "id": id, "name": name, "active": true, "hookUrl": hook_url,
        "serviceUrl": format!("{}/rest/services/{svc}/FeatureServer", st.base),
        "signatureKey": key, "format": "json",
        "contentType": form.get("contentType").cloned().unwrap_or_default(),
        "changeTypes": form.get("changeTypes").cloned().unwrap_or_else(|| "*".into()),
        "serverGen": st.gen_, "curNotificationAttempts": 0,
        "createdTime": 1_700_000_000_000u64, "lastUpdatedTime": 1_700_000_000_000u64
    });
    st.webhooks.insert(id.clone(), resource.clone());
    let url = format!(
        "{}/rest/admin/services/{svc}/FeatureServer/WebHooks/{id}",
        st.base
    );
    let mut answer = resource;
    answer["url"] = Value::from(url);
    HttpResponse::Ok().json(answer)
}

/// The service resource: its layers' current serverGens in `changeTrackingInfo`.
async fn service_info(st: web::Data<Mutex<State>>, req: HttpRequest) -> HttpResponse {
    let mut st = st.lock().unwrap();
    count(&mut st, "service");
    if let Err(answer) = check(&mut st, &req) {
        return *answer;
    }
    let gens: Vec<Value> = [0, 1]
        .iter()
        .map(|id| json!({"id": id, "minServerGen": 1_404_000, "serverGen": st.gen_}))
        .collect();
    HttpResponse::Ok().json(json!({
        "currentVersion": 11.3,
        "capabilities": "Query,Editing,Create,Update,Delete,ChangeTracking",
        "changeTrackingInfo": {"lastSyncDate": 1_700_000_000_000u64, "layerServerGens": gens},
        "layers": [{"id": 0, "name": "Parcels"}, {"id": 1, "name": "Inspections"}]
    }))
}

/// The change file of the edits a query asks for: per layer of `layers`, the edits after
/// `layerServerGens[layer]` (or `serverGens[0]`) up to `serverGens[1]` (or now), netted per
/// feature as ArcGIS does (an add then an update is one add; an add then a delete, nothing).
fn from_edits(st: &State, q: &BTreeMap<String, String>) -> Result<Vec<u8>, String> {
    let parse = |k: &str| -> Result<Option<Value>, String> {
        q.get(k)
            .map(|v| serde_json::from_str(v).map_err(|e| format!("{k}: {e}")))
            .transpose()
    };
    let window = parse("serverGens")?;
    let since = parse("layerServerGens")?;
    let layers: Vec<u32> = match parse("layers")? {
        Some(v) => serde_json::from_value(v).map_err(|e| format!("layers: {e}"))?,
        None => vec![0],
    };
    if window.is_none() && since.is_none() {
        return Err("one of serverGens and layerServerGens is required".into());
    }
    let mut gens = Vec::new();
    let mut edits = Vec::new();
    for layer in layers {
        let from = since
            .as_ref()
            .and_then(|s| s.as_array())
            .and_then(|a| a.iter().find(|g| g["id"] == layer))
            .and_then(|g| g["serverGen"].as_u64())
            .or_else(|| window.as_ref().and_then(|w| w[0].as_u64()))
            .ok_or_else(|| format!("no serverGen for layer {layer}"))?;
        let to = window
            .as_ref()
            .and_then(|w| w[1].as_u64())
            .unwrap_or(st.gen_);
        let mut net: BTreeMap<u64, (&str, &str, Value)> = BTreeMap::new();
        for e in st
            .edits
            .iter()
            .filter(|e| e.layer == layer && e.gen_ > from && e.gen_ <= to)
        {
            let first = net.get(&e.oid).map(|(f, _, _)| *f).unwrap_or(e.op);
            net.insert(e.oid, (first, e.op, e.feature.clone()));
        }
        let (mut adds, mut updates, mut deletes) = (Vec::new(), Vec::new(), Vec::new());
        for (oid, (first, last, feature)) in net {
            match (first, last) {
                ("add", "delete") => {}
                (_, "delete") => deletes.push(json!(oid)),
                ("add", _) => adds.push(feature),
                _ => updates.push(feature),
            }
        }
        gens.push(json!({"id": layer, "serverGen": to}));
        edits.push(json!({"id": layer,
            "features": {"adds": adds, "updates": updates, "deleteIds": deletes}}));
    }
    Ok(serde_json::to_vec(&json!({"layerServerGens": gens, "edits": edits})).unwrap())
}

/// The real change file of `tests/real`.
pub fn real_change_file() -> Vec<u8> {
    std::fs::read(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/real/aws-lambda-demo_extractChanges-result_changefile.json"
    ))
    .expect("the real change file")
}

/// The real change file with a second layer (ids only) and a delete, for order checks.
pub fn two_layer_change_file() -> Vec<u8> {
    let mut v: Value = serde_json::from_slice(&real_change_file()).unwrap();
    v["edits"][0]["features"]["deleteIds"] = json!([61]);
    v["layerServerGens"]
        .as_array_mut()
        .unwrap()
        .push(json!({"id": 1, "serverGen": 1770630}));
    v["edits"].as_array_mut().unwrap().push(json!({"id": 1,
        "objectIds": {"adds": [5], "updates": [3], "deletes": []}}));
    serde_json::to_vec(&v).unwrap()
}
