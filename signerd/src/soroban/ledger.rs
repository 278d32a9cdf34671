//! The current ledger, which bounds how far ahead an authorization may expire.
//!
//! signerd has no ledger of its own: it asks a configured Stellar RPC endpoint per network
//! (`[[stellar_rpc]]`, JSON-RPC `getLatestLedger`) and trusts the answer only while it is fresh:
//! the ledger's `closeTime` (or, from an RPC that does not send it, the time of the answer)
//! must be at most `max_staleness_secs` old by signerd's clock. A reading is cached for
//! `refresh_ms`; the sequence never goes backwards (a lower answer is ignored). With no endpoint
//! for the network, or no fresh reading, authorization entries are refused (`ledger`).
//!
//! What this trusts: the endpoint (and the TLS to it). An endpoint reporting a ledger far in
//! the future lets an entry expire up to that many ledgers later than policy intends; one
//! reporting an old ledger is refused by staleness, and one lagging a little only makes the
//! bound stricter.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use serde::Deserialize;

use crate::policy::{Denial, Rule};
use crate::stellar::NetworkPassphrase;

/// `[[stellar_rpc]]`: where the current ledger of one network is read.
#[derive(Debug, Deserialize, Clone)]
#[serde(deny_unknown_fields)]
pub struct StellarRpcConfig {
    /// The network passphrase this endpoint serves.
    pub network: String,
    /// The JSON-RPC endpoint (`https://...`, or `http://` for a local node).
    pub url: String,
    /// A reading older than this (by its ledger's close time) is not trusted.
    #[serde(default = "default_max_staleness_secs")]
    pub max_staleness_secs: u64,
    /// A reading is reused for this long before the endpoint is asked again.
    #[serde(default = "default_refresh_ms")]
    pub refresh_ms: u64,
    /// How long one `getLatestLedger` may take.
    #[serde(default = "default_timeout_ms")]
    pub timeout_ms: u64,
}

fn default_max_staleness_secs() -> u64 {
    30
}
fn default_refresh_ms() -> u64 {
    1_000
}
fn default_timeout_ms() -> u64 {
    3_000
}

impl StellarRpcConfig {
    /// Checks one entry; errors name the field under `prefix`.
    pub fn check(&self, prefix: &str) -> Result<(), String> {
        NetworkPassphrase::parse(&self.network).map_err(|e| format!("{prefix}network: {e}"))?;
        if !(self.url.starts_with("https://") || self.url.starts_with("http://")) {
            return Err(format!("{prefix}url: must be an http:// or https:// URL"));
        }
        self.url
            .parse::<hyper::Uri>()
            .map_err(|e| format!("{prefix}url: {e}"))?;
        if self.max_staleness_secs == 0 || self.timeout_ms == 0 {
            return Err(format!(
                "{prefix}max_staleness_secs and timeout_ms: must be positive"
            ));
        }
        Ok(())
    }
}

type HttpsClient = Client<hyper_rustls::HttpsConnector<HttpConnector>, Full<Bytes>>;

/// One network's clock.
struct LedgerClock {
    config: StellarRpcConfig,
    reading: tokio::sync::Mutex<Option<Reading>>,
}

#[derive(Clone, Copy, Debug)]
struct Reading {
    sequence: u32,
    /// The ledger's close time (Unix seconds) when the endpoint sent it.
    close_time: Option<u64>,
    /// When signerd got the answer.
    fetched: Instant,
}

/// The current ledger of every configured network.
pub struct LedgerClocks {
    client: Option<HttpsClient>,
    clocks: HashMap<String, LedgerClock>,
}

impl LedgerClocks {
    /// No endpoint: no ledger is ever known.
    pub fn empty() -> Self {
        LedgerClocks {
            client: None,
            clocks: HashMap::new(),
        }
    }

    /// Clocks for `configs` (already checked). Without any, no ledger is ever known.
    pub fn new(configs: &[StellarRpcConfig]) -> crate::error::Result<Self> {
        let client = if configs.is_empty() {
            None
        } else {
            let mut http = HttpConnector::new();
            http.enforce_http(false);
            http.set_nodelay(true);
            let builder = match hyper_rustls::HttpsConnectorBuilder::new()
                .with_provider_and_native_roots(rustls::crypto::ring::default_provider())
            {
                Ok(builder) => builder,
                Err(_) if configs.iter().all(|c| c.url.starts_with("http://")) => {
                    let tls = rustls::ClientConfig::builder_with_provider(std::sync::Arc::new(
                        rustls::crypto::ring::default_provider(),
                    ))
                    .with_safe_default_protocol_versions()
                    .map_err(|e| crate::error::Error::Config(format!("stellar_rpc: tls: {e}")))?
                    .with_root_certificates(rustls::RootCertStore::empty())
                    .with_no_client_auth();
                    hyper_rustls::HttpsConnectorBuilder::new().with_tls_config(tls)
                }
                Err(e) => {
                    return Err(crate::error::Error::io(
                        "stellar_rpc: loading the system's root certificates",
                        e,
                    ));
                }
            };
            let connector = builder.https_or_http().enable_http1().wrap_connector(http);
            Some(Client::builder(TokioExecutor::new()).build(connector))
        };
        let clocks = configs
            .iter()
            .map(|c| {
                (
                    c.network.clone(),
                    LedgerClock {
                        config: c.clone(),
                        reading: tokio::sync::Mutex::new(None),
                    },
                )
            })
            .collect();
        Ok(LedgerClocks { client, clocks })
    }

    /// The current ledger of `network`, or the refusal saying why it is not known.
    pub async fn current(&self, network: &NetworkPassphrase) -> Result<u32, Denial> {
        let unknown = |why: String| {
            Denial::new(
                Rule::Ledger,
                format!(
                    "the current ledger of {:?} is not known: {why}",
                    network.as_str()
                ),
            )
        };
        let (Some(clock), Some(client)) = (self.clocks.get(network.as_str()), &self.client) else {
            return Err(unknown(
                "no stellar_rpc endpoint is configured for it".into(),
            ));
        };
        let config = &clock.config;
        // One request at a time per network: concurrent callers share its answer.
        let mut reading = clock.reading.lock().await;
        let due =
            reading.is_none_or(|r| r.fetched.elapsed() >= Duration::from_millis(config.refresh_ms));
        let mut error = None;
        if due {
            match fetch(client, config).await {
                Ok(fresh) => {
                    // The ledger never goes backwards: a lagging node's answer is ignored.
                    if reading.is_none_or(|old| fresh.sequence >= old.sequence) {
                        *reading = Some(fresh);
                    }
                }
                Err(why) => {
                    tracing::warn!(network = network.as_str(), url = %config.url, error = %why, "getLatestLedger failed");
                    error = Some(why);
                }
            }
        }
        let Some(current) = *reading else {
            return Err(unknown(error.unwrap_or_else(|| "no reading yet".into())));
        };
        let age = match current.close_time {
            Some(closed) => crate::audit::record::now_unix().saturating_sub(closed),
            None => current.fetched.elapsed().as_secs(),
        };
        if age > config.max_staleness_secs {
            return Err(unknown(format!(
                "the last reading (ledger {}) is {age} s old, more than max_staleness_secs {}{}",
                current.sequence,
                config.max_staleness_secs,
                error
                    .map(|e| format!("; the endpoint: {e}"))
                    .unwrap_or_default()
            )));
        }
        Ok(current.sequence)
    }
}

/// The `result` of a `getLatestLedger` answer (other members ignored).
#[derive(Deserialize)]
struct LatestLedger {
    sequence: u32,
    /// Unix seconds as a decimal string (RPC 23+); absent from older nodes.
    #[serde(rename = "closeTime")]
    close_time: Option<String>,
}

#[derive(Deserialize)]
struct JsonRpcReply {
    result: Option<LatestLedger>,
    error: Option<serde_json::Value>,
}

async fn fetch(client: &HttpsClient, config: &StellarRpcConfig) -> Result<Reading, String> {
    let body = r#"{"jsonrpc":"2.0","id":1,"method":"getLatestLedger"}"#;
    let request = hyper::Request::post(&config.url)
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from_static(body.as_bytes())))
        .map_err(|e| e.to_string())?;
    let answer = async {
        let response = client.request(request).await.map_err(|e| e.to_string())?;
        let status = response.status();
        // getLatestLedger answers are a few hundred bytes; anything huge is not one.
        let body = http_body_util::Limited::new(response.into_body(), 64 * 1024)
            .collect()
            .await
            .map_err(|e| e.to_string())?
            .to_bytes();
        if !status.is_success() {
            return Err(format!("HTTP {status}"));
        }
        Ok(body)
    };
    let body = tokio::time::timeout(Duration::from_millis(config.timeout_ms), answer)
        .await
        .map_err(|_| format!("no answer within {} ms", config.timeout_ms))??;
    let reply: JsonRpcReply =
        serde_json::from_slice(&body).map_err(|e| format!("not a getLatestLedger answer: {e}"))?;
    if let Some(error) = reply.error {
        return Err(format!("json-rpc error {error}"));
    }
    let result = reply.result.ok_or("json-rpc answer without a result")?;
    let close_time = match result.close_time {
        Some(text) => Some(
            text.parse::<u64>()
                .map_err(|_| format!("closeTime {text:?} is not Unix seconds"))?,
        ),
        None => None,
    };
    Ok(Reading {
        sequence: result.sequence,
        close_time,
        fetched: Instant::now(),
    })
}
