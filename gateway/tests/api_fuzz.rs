//! A schema-driven fuzzer: reads the OpenAPI document the running gateway serves and, for every
//! operation in it, sends generated requests (valid per the schema, at its boundaries, and
//! invalid: wrong types, over-length and missing fields, unknown fields, bad ids, bad query
//! values, no or wrong API key, a service key on admin routes, bad or reused Idempotency-Keys,
//! oversized and non-JSON bodies). Every answer must be:
//!
//! - not a 5xx;
//! - a (route, status) pair the document lists for that operation;
//! - for an error, exactly the documented `{code, message}` JSON;
//! - with its `Retry-After` / `Idempotent-Replayed` headers declared where they appear.
//!
//! The generator is seeded (printed; set `API_FUZZ_SEED` to replay a run).

mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use horizon_sim::{HorizonSim, SimConfig};

use serde_json::{Map, Value, json};
use support::*;

/// splitmix64: small, seedable and good enough to pick cases.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform in `0..n` (n > 0).
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }

    fn range(&mut self, lo: i64, hi: i64) -> i64 {
        if hi <= lo {
            return lo;
        }
        let span = (hi - lo) as u64 + 1;
        lo + self.below(span) as i64
    }

    fn chance(&mut self, percent: u64) -> bool {
        self.below(100) < percent
    }

    fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len() as u64) as usize]
    }

    fn bytes32(&mut self) -> [u8; 32] {
        let mut out = [0u8; 32];
        for chunk in out.chunks_mut(8) {
            chunk.copy_from_slice(&self.next().to_le_bytes());
        }
        out
    }

    fn uuid(&mut self) -> String {
        let hex: String = (0..32)
            .map(|_| char::from(b"0123456789abcdef"[self.below(16) as usize]))
            .collect();
        format!(
            "{}-{}-{}-{}-{}",
            &hex[..8],
            &hex[8..12],
            &hex[12..16],
            &hex[16..20],
            &hex[20..]
        )
    }

    fn alnum(&mut self, len: usize) -> String {
        const ALPHABET: &[u8] = b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789";
        (0..len).map(|_| char::from(*self.pick(ALPHABET))).collect()
    }
}

const UUID_PATTERN: &str = "^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$";

/// What the fuzzer knows exists, so valid requests reach the handlers' inner paths.
struct Known {
    user_ids: Vec<String>,
    wallet_ids: Vec<String>,
    /// Learnt from the fuzzer's own successful creations.
    webhook_ids: Vec<String>,
    payment_ids: Vec<String>,
}

/// One operation of the document.
struct Operation {
    method: String,
    template: String,
    op: Value,
    admin: bool,
}

/// The request being built.
struct Draft {
    path: String,
    query: Vec<(String, String)>,
    headers: Vec<(String, String)>,
    body: Option<Vec<u8>>,
    case: &'static str,
}

struct Fuzzer<'a> {
    rng: Rng,
    doc: &'a Value,
    known: Known,
    admin_key: String,
    service_key: String,
    max_body_bytes: usize,
    /// Idempotency-Keys used before, with the path they were used on.
    used_keys: Vec<(String, String)>,
    /// When set, every request is of this case.
    force_case: Option<&'static str>,
}

impl Fuzzer<'_> {
    fn resolve<'s>(&'s self, schema: &'s Value) -> &'s Value {
        match schema["$ref"].as_str() {
            Some(r) => {
                let name = r.rsplit('/').next().unwrap_or_default();
                &self.doc["components"]["schemas"][name]
            }
            None => schema,
        }
    }

    /// A value valid per `schema` (as far as the schema says; the server may still refuse
    /// for reasons only prose states, which must then be documented answers).
    fn valid(&mut self, name: &str, schema: &Value) -> Value {
        let schema = self.resolve(schema).clone();
        for alternatives in ["oneOf", "anyOf"] {
            if let Some(options) = schema[alternatives].as_array() {
                let options = options.clone();
                let chosen = self.rng.pick(&options).clone();
                return self.valid(name, &chosen);
            }
        }
        if let Some(values) = schema["enum"].as_array() {
            return self.rng.pick(values).clone();
        }
        let types: Vec<String> = match &schema["type"] {
            Value::String(t) => vec![t.clone()],
            Value::Array(ts) => ts
                .iter()
                .filter_map(|t| t.as_str().map(str::to_owned))
                .collect(),
            _ => vec!["string".to_owned()],
        };
        let non_null: Vec<String> = types.iter().filter(|t| *t != "null").cloned().collect();
        if non_null.is_empty() || (types.len() > non_null.len() && self.rng.chance(10)) {
            return Value::Null;
        }
        match self.rng.pick(&non_null).as_str() {
            "integer" => {
                let lo = schema["minimum"].as_i64().unwrap_or(0);
                let hi = schema["maximum"].as_i64().unwrap_or(lo + 1000);
                match self.rng.below(4) {
                    0 => json!(lo),
                    1 => json!(hi),
                    _ => json!(self.rng.range(lo, hi)),
                }
            }
            "number" => json!(self.rng.range(0, 1000)),
            "boolean" => json!(self.rng.chance(50)),
            "array" => {
                let lo = schema["minItems"].as_u64().unwrap_or(0);
                let hi = schema["maxItems"].as_u64().unwrap_or(lo + 3);
                let n = self.rng.range(lo as i64, hi as i64);
                let items = schema["items"].clone();
                let mut values: Vec<Value> = Vec::new();
                for _ in 0..n {
                    let value = self.valid(name, &items);
                    if schema["uniqueItems"] != true || !values.contains(&value) {
                        values.push(value);
                    }
                }
                Value::Array(values)
            }
            "object" => self.valid_object(&schema),
            _ => json!(self.valid_string(name, &schema)),
        }
    }

    fn valid_object(&mut self, schema: &Value) -> Value {
        let required: BTreeSet<String> = schema["required"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|r| r.as_str().map(str::to_owned))
            .collect();
        let mut out = Map::new();
        let properties = schema["properties"]
            .as_object()
            .cloned()
            .unwrap_or_default();
        for (name, property) in properties {
            if required.contains(&name) || self.rng.chance(60) {
                let value = self.valid(&name, &property);
                out.insert(name, value);
            }
        }
        Value::Object(out)
    }

    fn valid_string(&mut self, name: &str, schema: &Value) -> String {
        let pattern = schema["pattern"].as_str().unwrap_or_default();
        let min = schema["minLength"].as_u64().unwrap_or(1) as usize;
        let max = schema["maxLength"].as_u64().unwrap_or(40) as usize;
        if pattern == UUID_PATTERN || schema["format"] == "uuid" {
            return self.id_for(name);
        }
        if pattern.contains("|G[A-Z2-7]{55}") {
            return match self.rng.below(3) {
                0 => self.id_for("wallet_id"),
                1 => format!("{}", stellar_strkey::ed25519::PublicKey(self.rng.bytes32())),
                _ => format!(
                    "{}",
                    stellar_strkey::ed25519::MuxedAccount {
                        ed25519: self.rng.bytes32(),
                        id: self.rng.next(),
                    }
                ),
            };
        }
        if pattern.contains("[0-9]{1,12}") {
            let whole = self.rng.range(0, 1000);
            return match self.rng.below(3) {
                0 => whole.to_string(),
                1 => format!("{whole}.{}", self.rng.range(0, 9_999_999)),
                _ => format!("{whole}.{:07}", self.rng.range(0, 9_999_999)),
            };
        }
        if pattern == "^native$" {
            return "native".to_owned();
        }
        if name == "url" {
            let scheme = if self.rng.chance(50) { "https" } else { "http" };
            return format!("{scheme}://127.0.0.1:9/hook/{}", self.rng.alnum(6));
        }
        let len = match self.rng.below(4) {
            0 => min,
            1 => max,
            _ => self.rng.range(min as i64, max as i64) as usize,
        };
        self.rng.alnum(len)
    }

    /// An id for a path, query or body field: mostly one that exists, sometimes a fresh one.
    fn id_for(&mut self, name: &str) -> String {
        let pool = if name.contains("user") {
            &self.known.user_ids
        } else if name.contains("wallet") || name == "before" || name == "destination" {
            &self.known.wallet_ids
        } else if name.contains("webhook") {
            &self.known.webhook_ids
        } else if name.contains("payment") {
            &self.known.payment_ids
        } else {
            &Vec::new()
        };
        if !pool.is_empty() && self.rng.chance(70) {
            let pool = pool.clone();
            return self.rng.pick(&pool).clone();
        }
        self.rng.uuid()
    }

    fn bad_id(&mut self) -> String {
        let uuid = self.rng.uuid();
        match self.rng.below(7) {
            0 => "not-a-uuid".to_owned(),
            1 => uuid.to_uppercase(),
            2 => uuid.replace('-', ""),
            3 => format!("%7B{uuid}%7D"),
            4 => self.rng.alnum(300),
            5 => "%C3%A9".to_owned(),
            _ => "12345".to_owned(),
        }
    }

    /// One request for `op`: valid, or broken in one way.
    fn draft(&mut self, op: &Operation) -> Draft {
        let post = op.method == "post";
        let params = op.op["parameters"].as_array().cloned().unwrap_or_default();
        let has_path = params.iter().any(|p| p["in"] == "path");
        let has_query = params.iter().any(|p| p["in"] == "query");
        let body_schema = op.op["requestBody"]["content"]["application/json"]["schema"].clone();
        let has_body = !body_schema.is_null();
        let mut cases = vec![("valid", 40), ("auth", 10)];
        if has_path {
            cases.push(("bad_path", 10));
        }
        if has_query {
            cases.push(("bad_query", 12));
        }
        if post {
            cases.extend([("bad_key", 8), ("reused_key", 6), ("oversized", 4)]);
        }
        if has_body {
            cases.push(("bad_body", 20));
        }
        let total: u64 = cases.iter().map(|(_, w)| *w).sum();
        let mut roll = self.rng.below(total);
        let mut case = self.force_case.unwrap_or("valid");
        for (name, weight) in cases.iter().filter(|_| self.force_case.is_none()) {
            if roll < *weight {
                case = name;
                break;
            }
            roll -= weight;
        }

        let mut path = op.template.clone();
        for p in params.iter().filter(|p| p["in"] == "path") {
            let name = p["name"].as_str().unwrap_or_default();
            let value = if name == "delivery_id" {
                match (case == "bad_path", self.rng.below(3)) {
                    (true, 0) => "0".to_owned(),
                    (true, 1) => "abc".to_owned(),
                    (true, _) => "99999999999999999999".to_owned(),
                    (false, _) => self.rng.range(1, 50).to_string(),
                }
            } else if case == "bad_path" && self.rng.chance(70) {
                self.bad_id()
            } else {
                self.id_for(name)
            };
            path = path.replace(&format!("{{{name}}}"), &value);
        }

        let mut query = Vec::new();
        for p in params.iter().filter(|p| p["in"] == "query") {
            let name = p["name"].as_str().unwrap_or_default().to_owned();
            if self.rng.chance(50) {
                continue;
            }
            let schema = p["schema"].clone();
            let value = match self.valid(&name, &schema) {
                Value::String(s) => s,
                Value::Null => continue,
                other => other.to_string(),
            };
            query.push((name, value));
        }
        if case == "bad_query" {
            match self.rng.below(4) {
                0 => query.push(("zz_unknown".into(), "1".into())),
                1 => query.push((
                    "limit".into(),
                    self.rng
                        .pick(&["0", "501", "-1", "abc", "1.5", "99999999999"])
                        .to_string(),
                )),
                2 => query.push(("after".into(), self.bad_id())),
                _ => query.push(("before".into(), self.bad_id())),
            }
        }

        let key = if op.admin {
            self.admin_key.clone()
        } else if self.rng.chance(50) {
            self.service_key.clone()
        } else {
            self.admin_key.clone()
        };
        let mut headers = Vec::new();
        let authorization = if case == "auth" {
            match self.rng.below(5) {
                0 => None,
                1 => Some("Bearer gw_not_a_real_key".to_owned()),
                2 => Some(format!("Basic {key}")),
                3 => Some("Bearer".to_owned()),
                _ => Some(format!("Bearer {}", self.service_key)),
            }
        } else {
            Some(format!("Bearer {key}"))
        };
        if let Some(a) = authorization {
            headers.push(("authorization".to_owned(), a));
        }
        match self.rng.below(4) {
            0 => headers.push((
                "x-request-id".to_owned(),
                format!("fuzz-{}", self.rng.alnum(8)),
            )),
            1 => headers.push(("x-request-id".to_owned(), "bad id with spaces".to_owned())),
            _ => {}
        }

        let mut body = if has_body {
            let value = self.valid("body", &body_schema);
            Some(value)
        } else {
            None
        };
        let mut raw_body: Option<Vec<u8>> = None;
        if case == "bad_body" {
            let mut value = body.take().unwrap_or(json!({}));
            match self.rng.below(9) {
                0 => raw_body = Some(b"{not json".to_vec()),
                1 => raw_body = Some(Vec::new()),
                2 => value = json!([1, 2]),
                3 => {
                    value["zz_unknown"] = json!(1);
                }
                _ => self.break_field(&body_schema, &mut value),
            }
            body = Some(value);
        }
        if case == "oversized" {
            let extra = self.rng.below(4096) as usize;
            let pad = self.rng.alnum(self.max_body_bytes + 1 + extra);
            raw_body = Some(json!({ "padding": pad }).to_string().into_bytes());
        }
        let body = raw_body.or_else(|| body.map(|b| b.to_string().into_bytes()));
        if body.is_some() {
            let content_type = if case == "bad_body" && self.rng.chance(15) {
                "text/plain"
            } else {
                "application/json"
            };
            headers.push(("content-type".to_owned(), content_type.to_owned()));
        }

        if post {
            let fresh = format!("fuzz-{}", self.rng.alnum(16));
            let key = match case {
                "bad_key" => match self.rng.below(4) {
                    0 => None,
                    1 => Some(String::new()),
                    2 => Some("k".repeat(256)),
                    _ => Some("has space".to_owned()),
                },
                "reused_key" if !self.used_keys.is_empty() => {
                    let used = self.used_keys.clone();
                    Some(self.rng.pick(&used).0.clone())
                }
                _ => Some(if self.rng.chance(5) {
                    self.rng.alnum(255)
                } else {
                    fresh
                }),
            };
            if let Some(k) = key {
                if !k.is_empty() && k.len() <= 255 && !k.contains(' ') {
                    self.used_keys.push((k.clone(), path.clone()));
                }
                headers.push(("idempotency-key".to_owned(), k));
            }
        }
        Draft {
            path,
            query,
            headers,
            body,
            case,
        }
    }

    /// Breaks one field of an object body: removed, wrong type, over or under its limits.
    fn break_field(&mut self, schema: &Value, value: &mut Value) {
        let schema = self.resolve(schema).clone();
        let Some(properties) = schema["properties"].as_object().cloned() else {
            *value = json!("not an object");
            return;
        };
        let names: Vec<String> = properties.keys().cloned().collect();
        if names.is_empty() {
            return;
        }
        let name = self.rng.pick(&names).clone();
        let property = self.resolve(&properties[&name]).clone();
        let broken = match self.rng.below(7) {
            // A NUL byte: valid JSON and UTF-8, refused by Postgres in text columns.
            6 => json!(format!("nul\u{0}{}", self.rng.alnum(3))),
            0 => {
                if let Some(o) = value.as_object_mut() {
                    o.remove(&name);
                }
                return;
            }
            1 => json!(12345),
            2 => json!({ "nested": true }),
            3 => match property["maxLength"].as_u64() {
                Some(max) => json!(self.rng.alnum(max as usize + 1)),
                None => json!("é".repeat(40)),
            },
            4 => match (property["minimum"].as_i64(), property["maximum"].as_i64()) {
                (Some(min), _) if self.rng.chance(50) => json!(min - 1),
                (_, Some(max)) => json!(max + 1),
                _ => json!(" leading space"),
            },
            _ => json!(
                self.rng
                    .pick(&[
                        "",
                        "-1",
                        "1.12345678",
                        "0",
                        "\u{1}ctl",
                        "nul\u{0}",
                        "1e5",
                        "NaN"
                    ])
                    .to_string()
            ),
        };
        value[name.as_str()] = broken;
    }
}

fn documented_response(op: &Value, status: u16) -> Option<&Value> {
    let responses = &op["responses"];
    let exact = &responses[status.to_string().as_str()];
    if exact.is_object() {
        return Some(exact);
    }
    let range = format!("{}XX", status / 100);
    [range.as_str(), "default"]
        .into_iter()
        .map(|k| &responses[k])
        .find(|r| r.is_object())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_answer_to_schema_generated_requests_is_documented() {
    fuzz(DatabaseKind::Sqlite, 120).await;
}

/// Fewer requests on Postgres: what differs there is the database's own refusals (a NUL byte in
/// text, sizes), not the routing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_answer_to_schema_generated_requests_is_documented_on_postgres() {
    fuzz(DatabaseKind::Postgres, 30).await;
}

async fn fuzz(kind: DatabaseKind, default_per_operation: usize) {
    let seed = std::env::var("API_FUZZ_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_nanos() as u64)
                .unwrap_or(1)
        });
    eprintln!("api_fuzz seed {seed} (replay with API_FUZZ_SEED={seed})");
    let per_operation: usize = std::env::var("API_FUZZ_PER_OPERATION")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(default_per_operation);

    // A network (the simulator), so payments, balances and friendbot reach their handlers'
    // inner paths; webhook targets may be loopback so the deliveries the fuzzer causes go to a
    // closed local port, never to a generated address on the internet.
    let sim =
        must(HorizonSim::start(SimConfig::with_ledger_interval(Duration::from_millis(200))).await);
    let options = GatewayOptions {
        network_url: Some(sim.url()),
        extra_toml: "\n[payments]\npoll_interval_ms = 50\n\n[webhooks]\nallow_http = true\n\
            allow_private_targets = true\ntimeout_ms = 500\n"
            .to_owned(),
        ..GatewayOptions::default()
    };
    let max_body_bytes = options.max_body_bytes;
    let stack = Stack::start_with(kind, options).await;
    let served = stack.http.get("/openapi.json", None).await;
    assert_eq!(served.status, 200);
    let doc = served.json();

    // A few users with wallets, so valid ids reach the handlers' inner paths.
    let mut known = Known {
        user_ids: Vec::new(),
        wallet_ids: Vec::new(),
        webhook_ids: Vec::new(),
        payment_ids: Vec::new(),
    };
    for i in 0..3 {
        let user = stack.create_user(&format!("fuzz-user-{i}")).await;
        let wallet = stack
            .http
            .post(&format!("/v1/users/{user}/wallet"), &stack.service_key, "")
            .await;
        assert_eq!(wallet.status, 201, "{}", wallet.body);
        known
            .wallet_ids
            .push(wallet.json()["id"].as_str().unwrap_or_default().to_owned());
        known.user_ids.push(user);
    }

    // NUL bytes in every free-text field that reaches a text column (Postgres refuses them; the
    // gateway must answer 400, or store them, never 500).
    let nul_probes = [
        (
            "/v1/payments",
            json!({ "source_wallet_id": known.wallet_ids[0], "destination": known.wallet_ids[1],
                    "amount": "1", "memo": "a\u{0}b" }),
        ),
        ("/v1/users", json!({ "external_ref": "nul\u{0}ref" })),
        (
            "/v1/webhooks",
            json!({ "url": "http://127.0.0.1:9/a\u{0}b", "event_types": ["payment.created"] }),
        ),
    ];
    for (path, body) in nul_probes {
        let reply = stack
            .http
            .post(path, &stack.admin_key, &body.to_string())
            .await;
        assert!(
            reply.status < 500,
            "POST {path} {body}: {} {}",
            reply.status,
            reply.body
        );
    }

    for path in [
        "/v1/audit-events?subject_type=user&subject_id=a%00b",
        "/v1/audit-events?subject_type=a%00b&subject_id=x",
    ] {
        let reply = stack.http.get(path, Some(&stack.admin_key)).await;
        assert!(
            reply.status < 500,
            "GET {path}: {} {}",
            reply.status,
            reply.body
        );
    }

    let mut operations = Vec::new();
    for (template, item) in doc["paths"].as_object().into_iter().flatten() {
        for (method, op) in item.as_object().into_iter().flatten() {
            if !["get", "post", "delete", "put", "patch"].contains(&method.as_str()) {
                continue;
            }
            let admin = op["tags"]
                .as_array()
                .is_some_and(|t| t.iter().any(|t| t == "admin"));
            operations.push(Operation {
                method: method.clone(),
                template: template.clone(),
                op: op.clone(),
                admin,
            });
        }
    }
    assert!(operations.len() >= 25, "{} operations", operations.len());

    let mut fuzzer = Fuzzer {
        rng: Rng(seed),
        doc: &doc,
        known,
        admin_key: stack.admin_key.clone(),
        service_key: stack.service_key.clone(),
        max_body_bytes,
        used_keys: Vec::new(),
        force_case: None,
    };
    let mut tally = Tally::default();
    for _ in 0..per_operation {
        for op in &operations {
            exchange(&mut fuzzer, &stack.http, op, &mut tally).await;
        }
    }
    let main_requests = tally.sent;

    // The other direction: a method the document does not list on a documented path is one the
    // server does not serve (405), so no route is served undocumented.
    let mut paths: BTreeMap<&str, BTreeSet<&str>> = BTreeMap::new();
    for op in &operations {
        paths.entry(&op.template).or_default().insert(&op.method);
    }
    for (template, methods) in &paths {
        let path = template
            .split('/')
            .map(|segment| {
                if segment.starts_with('{') {
                    if segment == "{delivery_id}" {
                        "1".to_owned()
                    } else {
                        fuzzer.rng.uuid()
                    }
                } else {
                    segment.to_owned()
                }
            })
            .collect::<Vec<_>>()
            .join("/");
        for method in ["get", "post", "put", "patch", "delete"] {
            if methods.contains(method) {
                continue;
            }
            let auth = format!("Bearer {}", stack.admin_key);
            let key = format!("fuzz-{}", fuzzer.rng.alnum(12));
            let reply = stack
                .http
                .send(
                    &method.to_uppercase(),
                    &path,
                    &[
                        ("authorization", auth.as_str()),
                        ("idempotency-key", key.as_str()),
                        ("content-type", "application/json"),
                    ],
                    Some(b"{}".to_vec()),
                )
                .await;
            tally.sent += 1;
            if reply.status != 405 || reply.error_code() != "METHOD_NOT_ALLOWED" {
                tally.failures.push(format!(
                    "{method} {template} is not documented but answered {} {}",
                    reply.status, reply.body
                ));
            }
        }
    }

    // The rate limit: a gateway allowing one request per second per key answers 429 (with
    // Retry-After) on every /v1 route once a key's burst is spent.
    let limited = Stack::start_with(
        DatabaseKind::Sqlite,
        GatewayOptions {
            rate_limit: (1, 1),
            ..GatewayOptions::default()
        },
    )
    .await;
    fuzzer.admin_key = limited.admin_key.clone();
    fuzzer.service_key = limited.service_key.clone();
    fuzzer.force_case = Some("valid");
    let mut rate_limited = BTreeSet::new();
    for op in operations
        .iter()
        .filter(|op| op.template.starts_with("/v1/"))
    {
        for _ in 0..3 {
            if exchange(&mut fuzzer, &limited.http, op, &mut tally).await == 429 {
                rate_limited.insert((op.method.clone(), op.template.clone()));
            }
        }
    }
    let v1 = operations
        .iter()
        .filter(|op| op.template.starts_with("/v1/"))
        .count();

    eprintln!(
        "api_fuzz: {} requests over {} operations ({main_requests} fuzzed; the rest probe undocumented methods and the rate limit)",
        tally.sent,
        operations.len()
    );
    for ((method, route), statuses) in &tally.answered {
        eprintln!("  {method:6} {route}: {statuses:?}");
    }
    eprintln!("schema-valid requests refused with 400, by message:");
    for (message, count) in &tally.valid_but_refused {
        eprintln!("  {count:5} {message}");
    }
    let undocumented: Vec<String> = tally
        .undocumented
        .into_iter()
        .map(|((m, r, s), example)| {
            format!("{m} {r} answered {s}, not in the document; e.g. {example}")
        })
        .collect();
    let mut failures = tally.failures;
    failures.dedup();
    assert!(
        undocumented.is_empty() && failures.is_empty(),
        "seed {seed}: {} undocumented (route, status) pairs:\n{}\n{} other failures:\n{}",
        undocumented.len(),
        undocumented.join("\n"),
        failures.len(),
        failures
            .iter()
            .take(30)
            .cloned()
            .collect::<Vec<_>>()
            .join("\n")
    );
    assert_eq!(
        rate_limited.len(),
        v1,
        "every /v1 route is rate limited: {rate_limited:?}"
    );
}

/// What the answers showed.
#[derive(Default)]
struct Tally {
    sent: usize,
    /// (method, route, status) -> an example request and answer.
    undocumented: BTreeMap<(String, String, u16), String>,
    failures: Vec<String>,
    answered: BTreeMap<(String, String), BTreeSet<u16>>,
    /// Schema-valid requests refused as invalid, by error message (what only prose states).
    valid_but_refused: BTreeMap<String, usize>,
}

/// Sends one generated request for `op` and checks the answer against the document; returns
/// the status.
async fn exchange(fuzzer: &mut Fuzzer<'_>, http: &Http, op: &Operation, tally: &mut Tally) -> u16 {
    let draft = fuzzer.draft(op);
    let query: Vec<String> = draft
        .query
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect();
    let uri = if query.is_empty() {
        draft.path.clone()
    } else {
        format!("{}?{}", draft.path, query.join("&"))
    };
    let headers: Vec<(&str, &str)> = draft
        .headers
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    let method = op.method.to_uppercase();
    let reply = http.send(&method, &uri, &headers, draft.body.clone()).await;
    tally.sent += 1;
    if (200..300).contains(&reply.status) && op.method == "post" {
        let json: Value = serde_json::from_str(&reply.body).unwrap_or_default();
        let id = json["webhook"]["id"].as_str().or(json["id"].as_str());
        let pool = match op.template.as_str() {
            "/v1/webhooks" => Some(&mut fuzzer.known.webhook_ids),
            "/v1/payments" => Some(&mut fuzzer.known.payment_ids),
            _ => None,
        };
        if let (Some(pool), Some(id)) = (pool, id) {
            pool.push(id.to_owned());
        }
    }
    let shown_body = draft
        .body
        .as_ref()
        .map(|b| String::from_utf8_lossy(&b[..b.len().min(200)]).into_owned())
        .unwrap_or_default();
    let shown_reply: String = reply.body.chars().take(300).collect();
    let example = format!(
        "[{}] {method} {uri} body={shown_body:?} -> {} {shown_reply}",
        draft.case, reply.status
    );
    tally
        .answered
        .entry((op.method.clone(), op.template.clone()))
        .or_default()
        .insert(reply.status);
    if reply.status >= 500 {
        tally.failures.push(format!("5xx: {example}"));
    }
    if reply.status == 404 && reply.message() == "no such route" {
        tally
            .failures
            .push(format!("the server has no such route: {example}"));
    }
    if draft.case == "valid" && reply.status == 400 {
        let message: String = reply.message().chars().take(60).collect();
        *tally.valid_but_refused.entry(message).or_default() += 1;
    }
    let Some(documented) = documented_response(&op.op, reply.status) else {
        tally
            .undocumented
            .entry((op.method.clone(), op.template.clone(), reply.status))
            .or_insert(example);
        return reply.status;
    };
    let schema = &documented["content"]["application/json"]["schema"];
    if reply.status < 300 && schema.is_object() {
        match serde_json::from_str::<Value>(&reply.body) {
            Ok(body) => {
                if let Err(why) = conforms(fuzzer.doc, &body, schema, "$") {
                    tally.failures.push(format!(
                        "answer does not match its schema ({why}): {example}"
                    ));
                }
            }
            Err(e) => tally.failures.push(format!(
                "documented JSON answer is not JSON ({e}): {example}"
            )),
        }
    }
    if reply.status >= 400 {
        let json: Option<Value> = serde_json::from_str(&reply.body).ok();
        let shape_ok = json.as_ref().and_then(|j| j.as_object()).is_some_and(|o| {
            o.len() == 2
                && o.get("code").and_then(Value::as_str).is_some_and(|c| {
                    !c.is_empty() && c.bytes().all(|b| b.is_ascii_uppercase() || b == b'_')
                })
                && o.get("message")
                    .and_then(Value::as_str)
                    .is_some_and(|m| !m.is_empty())
        });
        if !shape_ok {
            tally
                .failures
                .push(format!("error body is not {{code, message}}: {example}"));
        }
        if documented["content"]["application/json"]["schema"]["$ref"]
            != "#/components/schemas/ErrorBody"
        {
            tally.failures.push(format!(
                "error answer documented without ErrorBody: {example}"
            ));
        }
    }
    for header in ["Retry-After", "Idempotent-Replayed", "x-request-id"] {
        if reply.header(header).is_some() && !documented["headers"][header].is_object() {
            tally
                .failures
                .push(format!("{header} sent but not declared: {example}"));
        }
    }
    reply.status
}

/// Whether `value` fits `schema` as far as the fuzzer checks: types, required properties, no
/// properties the schema does not name, enums, string patterns of UUIDs.
fn conforms(doc: &Value, value: &Value, schema: &Value, at: &str) -> Result<(), String> {
    let schema = match schema["$ref"].as_str() {
        Some(r) => &doc["components"]["schemas"][r.rsplit('/').next().unwrap_or_default()],
        None => schema,
    };
    for key in ["oneOf", "anyOf"] {
        if let Some(options) = schema[key].as_array() {
            return if options.iter().any(|o| conforms(doc, value, o, at).is_ok()) {
                Ok(())
            } else {
                Err(format!("{at}: {value} matches no {key} option"))
            };
        }
    }
    if let Some(all) = schema["allOf"].as_array() {
        // The parts of an allOf (a flattened struct) describe one object together.
        let mut merged = json!({ "type": "object", "properties": {}, "required": [] });
        for part in all {
            let part = match part["$ref"].as_str() {
                Some(r) => &doc["components"]["schemas"][r.rsplit('/').next().unwrap_or_default()],
                None => part,
            };
            for (name, property) in part["properties"].as_object().into_iter().flatten() {
                merged["properties"][name] = property.clone();
            }
            if let (Some(into), Some(from)) = (
                merged["required"].as_array_mut(),
                part["required"].as_array(),
            ) {
                into.extend(from.iter().cloned());
            }
        }
        return conforms(doc, value, &merged, at);
    }
    if let Some(values) = schema["enum"].as_array()
        && !values.contains(value)
    {
        return Err(format!("{at}: {value} not in {values:?}"));
    }
    let types: Vec<&str> = match &schema["type"] {
        Value::String(t) => vec![t.as_str()],
        Value::Array(ts) => ts.iter().filter_map(Value::as_str).collect(),
        _ => return Ok(()),
    };
    let actual = match value {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(n) if n.is_i64() || n.is_u64() => "integer",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    };
    let fits = types.contains(&actual) || (actual == "integer" && types.contains(&"number"));
    if !fits {
        return Err(format!("{at}: {actual} where the schema says {types:?}"));
    }
    match value {
        Value::String(text) if schema["pattern"] == UUID_PATTERN && text.len() != 36 => {
            return Err(format!("{at}: {text:?} is not a UUID"));
        }
        Value::Array(items) => {
            for (i, item) in items.iter().enumerate() {
                conforms(doc, item, &schema["items"], &format!("{at}[{i}]"))?;
            }
        }
        Value::Object(fields) => {
            let properties = schema["properties"].as_object();
            for required in schema["required"].as_array().into_iter().flatten() {
                let name = required.as_str().unwrap_or_default();
                if !fields.contains_key(name) {
                    return Err(format!("{at}: required {name} missing"));
                }
            }
            if let Some(properties) = properties {
                for (name, field) in fields {
                    match properties.get(name) {
                        Some(s) => conforms(doc, field, s, &format!("{at}.{name}"))?,
                        None if schema["additionalProperties"].is_null()
                            || schema["additionalProperties"] == false =>
                        {
                            return Err(format!("{at}: {name} is not in the schema"));
                        }
                        None => {}
                    }
                }
            }
        }
        _ => {}
    }
    Ok(())
}
