//! Webhooks: the delivery side of the event outbox.
//!
//! Every payment status change writes an `outbox_events` row and one `webhook_deliveries` row per
//! subscribed endpoint, from a database trigger in the statement that changes the payment
//! (migration 0006), so an event exists if and only if its change committed. The
//! [`dispatcher::Dispatcher`] claims due deliveries (a lease by the database's clock; `FOR
//! UPDATE SKIP LOCKED` on Postgres so replicas do not collide), POSTs them signed per Standard
//! Webhooks ([`signature`]) and records the outcome: delivered, retried later with exponential
//! backoff and jitter, or dead after the retry budget. A wallet's events reach an endpoint in
//! their order: a delivery waits while an earlier one of its wallet to that endpoint is pending.
//!
//! Delivery is at least once: a crash between the POST and the record of its outcome sends the
//! event again, with the same `webhook-id` (the event id), which receivers use to drop
//! duplicates.
//!
//! History does not grow forever: delivered deliveries, and events no pending or dead delivery
//! needs, are deleted by the dispatcher after `retention_days` (see [`dispatcher`]).
//!
//! This module holds the config, the target rules (which URLs an endpoint may name, checked at
//! registration and again on every connection, after DNS resolution) and the event vocabulary.

pub mod dispatcher;
pub mod signature;

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use axum::http::Uri;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::error::{Error, Result};

/// `[webhooks]`: target rules and the dispatcher's settings.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WebhooksConfig {
    /// Run the dispatcher inside `gateway serve` (`gateway worker` always runs it).
    #[serde(default = "default_true")]
    pub dispatcher: bool,
    /// Accept `http://` endpoint URLs (tests, a local receiver); `https://` only otherwise.
    #[serde(default)]
    pub allow_http: bool,
    /// Accept endpoints that resolve to loopback, private, link-local or other non-public
    /// addresses (the gateway's own network). Checked at registration and at every connection.
    #[serde(default)]
    pub allow_private_targets: bool,
    /// Deadline of one delivery attempt (connect, send, response head and the bounded body).
    #[serde(default = "default_timeout_ms")]
    pub timeout_ms: u64,
    /// Deadline of the TCP connect.
    #[serde(default = "default_connect_timeout_ms")]
    pub connect_timeout_ms: u64,
    /// Bytes of a response body read at most (the rest is dropped unread).
    #[serde(default = "default_max_response_bytes")]
    pub max_response_bytes: usize,
    /// Deliveries in flight to one endpoint at once, across replicas.
    #[serde(default = "default_max_in_flight_per_endpoint")]
    pub max_in_flight_per_endpoint: i64,
    /// Deliveries one dispatcher sends at once.
    #[serde(default = "default_concurrency")]
    pub concurrency: usize,
    /// How often the dispatcher looks for due deliveries.
    #[serde(default = "default_poll_interval_ms")]
    pub poll_interval_ms: u64,
    /// How long a claimed delivery stays the claimer's; must exceed `timeout_ms`.
    #[serde(default = "default_lease_ms")]
    pub lease_ms: u64,
    /// Wait before the first retry; doubled at each further one (with jitter).
    #[serde(default = "default_initial_backoff_ms")]
    pub initial_backoff_ms: u64,
    /// Longest wait between two attempts.
    #[serde(default = "default_max_backoff_ms")]
    pub max_backoff_ms: u64,
    /// How long after its event a delivery is retried before it is dead (24 h).
    #[serde(default = "default_retry_for_ms")]
    pub retry_for_ms: u64,
    /// Attempts at most before a delivery is dead (whichever budget runs out first).
    #[serde(default = "default_max_attempts")]
    pub max_attempts: i64,
    /// How long the secret replaced by a rotation still signs alongside the new one.
    #[serde(default = "default_rotation_overlap_ms")]
    pub rotation_overlap_ms: u64,
    /// Days a delivered delivery, and an event no delivery needs any more, are kept before the
    /// dispatcher deletes them. Pending and dead deliveries, and their events, are never deleted.
    #[serde(default = "default_retention_days")]
    pub retention_days: u32,
}

impl Default for WebhooksConfig {
    fn default() -> Self {
        WebhooksConfig {
            dispatcher: true,
            allow_http: false,
            allow_private_targets: false,
            timeout_ms: default_timeout_ms(),
            connect_timeout_ms: default_connect_timeout_ms(),
            max_response_bytes: default_max_response_bytes(),
            max_in_flight_per_endpoint: default_max_in_flight_per_endpoint(),
            concurrency: default_concurrency(),
            poll_interval_ms: default_poll_interval_ms(),
            lease_ms: default_lease_ms(),
            initial_backoff_ms: default_initial_backoff_ms(),
            max_backoff_ms: default_max_backoff_ms(),
            retry_for_ms: default_retry_for_ms(),
            max_attempts: default_max_attempts(),
            rotation_overlap_ms: default_rotation_overlap_ms(),
            retention_days: default_retention_days(),
        }
    }
}

fn default_true() -> bool {
    true
}
fn default_timeout_ms() -> u64 {
    10_000
}
fn default_connect_timeout_ms() -> u64 {
    3_000
}
fn default_max_response_bytes() -> usize {
    4096
}
fn default_max_in_flight_per_endpoint() -> i64 {
    8
}
fn default_concurrency() -> usize {
    64
}
fn default_poll_interval_ms() -> u64 {
    250
}
fn default_lease_ms() -> u64 {
    30_000
}
fn default_initial_backoff_ms() -> u64 {
    5_000
}
fn default_max_backoff_ms() -> u64 {
    3_600_000
}
fn default_retry_for_ms() -> u64 {
    24 * 3_600_000
}
fn default_max_attempts() -> i64 {
    50
}
fn default_rotation_overlap_ms() -> u64 {
    24 * 3_600_000
}
fn default_retention_days() -> u32 {
    30
}

impl WebhooksConfig {
    /// Cross-field rules, checked at load.
    pub fn check(&self) -> Result<()> {
        let field = |name: &str, why: &str| Err(Error::Config(format!("webhooks.{name}: {why}")));
        if self.timeout_ms == 0 || self.connect_timeout_ms == 0 {
            return field("timeout_ms", "timeouts must be positive");
        }
        if self.lease_ms <= self.timeout_ms {
            return field(
                "lease_ms",
                "must exceed timeout_ms (a live attempt must keep its claim)",
            );
        }
        if self.max_in_flight_per_endpoint < 1 || self.concurrency == 0 {
            return field("max_in_flight_per_endpoint", "caps must be at least 1");
        }
        if self.max_attempts < 1 {
            return field("max_attempts", "must be at least 1");
        }
        if self.max_backoff_ms < self.initial_backoff_ms {
            return field("max_backoff_ms", "must not be less than initial_backoff_ms");
        }
        if self.poll_interval_ms == 0 {
            return field("poll_interval_ms", "must be positive");
        }
        if self.retention_days == 0 {
            return field(
                "retention_days",
                "must be at least 1 (delivered history is kept that many days)",
            );
        }
        Ok(())
    }

    /// `retention_days` in milliseconds.
    pub fn retention_ms(&self) -> i64 {
        i64::from(self.retention_days) * 86_400_000
    }
}

/// The event types, as named in `type` and in an endpoint's subscription.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub enum EventType {
    /// A payment was accepted (or, after an operator's `REBUILD`, is to be paid anew).
    #[serde(rename = "payment.created")]
    PaymentCreated,
    /// Its transaction was signed (not yet sent).
    #[serde(rename = "payment.signed")]
    PaymentSigned,
    /// Its transaction was sent to the network.
    #[serde(rename = "payment.submitted")]
    PaymentSubmitted,
    /// It applied: final.
    #[serde(rename = "payment.succeeded")]
    PaymentSucceeded,
    /// It did not and will not apply: final.
    #[serde(rename = "payment.failed")]
    PaymentFailed,
    /// Its sequence number was spent and the history cannot say by which transaction: an
    /// operator decides.
    #[serde(rename = "payment.needs_attention")]
    PaymentNeedsAttention,
    /// An operation credited the wallet's account (a deposit; `data` is a `Deposit`).
    #[serde(rename = "deposit.received")]
    DepositReceived,
}

impl EventType {
    /// Every type, in lifecycle order.
    pub const ALL: [EventType; 7] = [
        EventType::PaymentCreated,
        EventType::PaymentSigned,
        EventType::PaymentSubmitted,
        EventType::PaymentSucceeded,
        EventType::PaymentFailed,
        EventType::PaymentNeedsAttention,
        EventType::DepositReceived,
    ];

    /// The name, e.g. `payment.succeeded` (what the migration's trigger writes).
    pub fn as_str(self) -> &'static str {
        match self {
            EventType::PaymentCreated => "payment.created",
            EventType::PaymentSigned => "payment.signed",
            EventType::PaymentSubmitted => "payment.submitted",
            EventType::PaymentSucceeded => "payment.succeeded",
            EventType::PaymentFailed => "payment.failed",
            EventType::PaymentNeedsAttention => "payment.needs_attention",
            EventType::DepositReceived => "deposit.received",
        }
    }

    /// Parses a name.
    pub fn parse(raw: &str) -> Option<EventType> {
        EventType::ALL.into_iter().find(|t| t.as_str() == raw)
    }
}

/// A webhook target URL that passed the scheme and address rules (parse, don't validate).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TargetUrl(String);

/// Longest accepted URL.
const MAX_URL_LEN: usize = 2048;

impl TargetUrl {
    /// Checks the text form: absolute `https://` URL (or `http://` when allowed) with a host,
    /// no user info; an IP-literal host must be public unless private targets are allowed.
    /// Host names are resolved and checked by [`TargetUrl::check_resolved`].
    pub fn parse(raw: &str, config: &WebhooksConfig) -> Result<TargetUrl> {
        let invalid = |why: &str| Error::Validation(format!("url: {why}"));
        if raw.is_empty() || raw.len() > MAX_URL_LEN {
            return Err(invalid("must be 1 to 2048 characters"));
        }
        let uri: Uri = raw.parse().map_err(|_| invalid("not a URL"))?;
        match uri.scheme_str() {
            Some("https") => {}
            Some("http") if config.allow_http => {}
            Some("http") => return Err(invalid("must be https:// (http:// is not allowed here)")),
            _ => return Err(invalid("must be an https:// URL")),
        }
        let authority = uri.authority().ok_or_else(|| invalid("has no host"))?;
        if authority.as_str().contains('@') {
            return Err(invalid("must not carry user info"));
        }
        let host = authority.host();
        if host.is_empty() {
            return Err(invalid("has no host"));
        }
        if let Some(ip) = ip_literal(host)
            && !config.allow_private_targets
            && !is_public(ip)
        {
            return Err(invalid(
                "points at a private, loopback or link-local address",
            ));
        }
        Ok(TargetUrl(raw.to_owned()))
    }

    /// Resolves the host and refuses it when any address is not public (unless allowed).
    pub async fn check_resolved(&self, config: &WebhooksConfig) -> Result<()> {
        if config.allow_private_targets {
            return Ok(());
        }
        let uri: Uri = self
            .0
            .parse()
            .map_err(|_| Error::Validation("url: not a URL".into()))?;
        let host = uri.host().unwrap_or_default().to_owned();
        let port = uri.port_u16().unwrap_or(443);
        let addresses = tokio::net::lookup_host((host.trim_matches(['[', ']']), port))
            .await
            .map_err(|e| Error::Validation(format!("url: host does not resolve: {e}")))?;
        for address in addresses {
            if !is_public(address.ip()) {
                return Err(Error::Validation(
                    "url: resolves to a private, loopback or link-local address".into(),
                ));
            }
        }
        Ok(())
    }

    /// The text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

fn ip_literal(host: &str) -> Option<IpAddr> {
    host.trim_matches(['[', ']']).parse().ok()
}

/// Whether an address is reachable on the public internet (not the gateway's own networks):
/// not loopback, private (RFC 1918, fc00::/7), link-local, shared (100.64/10), unspecified,
/// broadcast, multicast, documentation or benchmarking ranges; IPv4-mapped IPv6 by its IPv4.
pub fn is_public(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => is_public_v4(v4),
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => is_public_v4(v4),
            None => is_public_v6(v6),
        },
    }
}

fn is_public_v4(ip: Ipv4Addr) -> bool {
    let [a, b, _, _] = ip.octets();
    !(ip.is_loopback()
        || ip.is_private()
        || ip.is_link_local()
        || ip.is_unspecified()
        || ip.is_broadcast()
        || ip.is_multicast()
        || ip.is_documentation()
        || a == 0
        || (a == 100 && (64..128).contains(&b))
        || (a == 198 && (b == 18 || b == 19))
        || a >= 240)
}

fn is_public_v6(ip: Ipv6Addr) -> bool {
    let first = ip.segments()[0];
    !(ip.is_loopback()
        || ip.is_unspecified()
        || ip.is_multicast()
        || (first & 0xfe00) == 0xfc00
        || (first & 0xffc0) == 0xfe80
        || first == 0x2001 && ip.segments()[1] == 0x0db8
        || ip.to_ipv4().is_some_and(|v4| !is_public_v4(v4)) && ip.segments()[..6] == [0; 6])
}

#[cfg(test)]
mod tests {
    use super::*;

    fn strict() -> WebhooksConfig {
        WebhooksConfig::default()
    }

    #[test]
    fn private_and_plain_http_targets_are_refused_by_default() {
        for url in [
            "http://example.com/hook",
            "https://127.0.0.1/hook",
            "https://10.1.2.3/hook",
            "https://192.168.0.10:8443/hook",
            "https://169.254.169.254/latest/meta-data",
            "https://[::1]/hook",
            "https://[fe80::1]/hook",
            "https://[fd00::1]/hook",
            "https://[::ffff:127.0.0.1]/hook",
            "https://100.64.0.1/hook",
            "https://0.0.0.0/hook",
            "https://user:pw@example.com/hook",
            "ftp://example.com/",
            "/relative",
            "",
        ] {
            assert!(TargetUrl::parse(url, &strict()).is_err(), "{url} accepted");
        }
        assert!(TargetUrl::parse("https://example.com/hook", &strict()).is_ok());
        assert!(TargetUrl::parse("https://8.8.8.8/hook", &strict()).is_ok());
    }

    #[test]
    fn config_can_allow_http_and_private_targets() {
        let open = WebhooksConfig {
            allow_http: true,
            allow_private_targets: true,
            ..WebhooksConfig::default()
        };
        assert!(TargetUrl::parse("http://127.0.0.1:9000/hook", &open).is_ok());
    }

    #[tokio::test]
    async fn names_that_resolve_to_loopback_are_refused() {
        let url =
            TargetUrl::parse("https://localhost/hook", &strict()).unwrap_or_else(|e| panic!("{e}"));
        assert!(url.check_resolved(&strict()).await.is_err());
    }

    #[test]
    fn retention_is_thirty_days_by_default_and_at_least_one() {
        assert_eq!(strict().retention_days, 30);
        assert_eq!(strict().retention_ms(), 30 * 86_400_000);
        let none = WebhooksConfig {
            retention_days: 0,
            ..WebhooksConfig::default()
        };
        let refused = none
            .check()
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(refused.contains("webhooks.retention_days"), "{refused}");
        let parsed: WebhooksConfig =
            toml::from_str("retention_days = 7").unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(parsed.retention_days, 7);
        assert!(parsed.check().is_ok());
    }

    #[test]
    fn event_type_names_round_trip() {
        for t in EventType::ALL {
            assert_eq!(EventType::parse(t.as_str()), Some(t));
            assert_eq!(
                serde_json::to_value(t).ok(),
                Some(serde_json::Value::String(t.as_str().into()))
            );
        }
    }
}
