//! The signerd client. Mutual TLS with the gateway's client certificate; every call has a
//! deadline (also sent to signerd as the gRPC deadline) and carries the request id as
//! `x-request-id` metadata, which signerd writes into its logs and audit record.
//!
//! Calls failing with `UNAVAILABLE` or a deadline are retried with exponential backoff; every
//! RPC the gateway makes is idempotent on signerd's side (`CreateKey` on the key id, reads, and
//! re-signing an identical transaction), so a retry can never do something twice. A circuit
//! breaker (failsafe) counts those outage errors: after `consecutive_failures` in a row, calls
//! fail at once with [`Error::SignerUnavailable`] until a trial call succeeds, so an outage costs
//! callers a fast 503 instead of a pile of waiting requests.

use std::future::Future;
use std::time::Duration;

use failsafe::futures::CircuitBreaker;
use secrecy::{ExposeSecret, SecretSlice};
use signer_proto::v1 as pb;
use signer_proto::v1::signer_client::SignerClient as GrpcSignerClient;
use tonic::metadata::MetadataValue;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint, Identity};
use tonic::{Code, Request, Status};
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;

use crate::config::{RetryConfig, SignerConfig};
use crate::error::{Error, Result};
use crate::metrics::Metrics;
use crate::model::{AccountId, RequestId, SignerKeyId};

/// The gRPC metadata entry carrying the request id.
pub const REQUEST_ID_METADATA: &str = "x-request-id";

type Breaker =
    failsafe::StateMachine<failsafe::failure_policy::ConsecutiveFailures<OpenDurations>, ()>;

/// How long the breaker stays open each consecutive time: `start`, doubling, capped at `max`.
/// (failsafe's own exponential backoff refuses anything under a second, which is too coarse for
/// a dependency that restarts in well under that.)
#[derive(Clone, Debug)]
struct OpenDurations {
    next: Duration,
    max: Duration,
}

impl Iterator for OpenDurations {
    type Item = Duration;

    fn next(&mut self) -> Option<Duration> {
        let current = self.next;
        self.next = (self.next * 2).min(self.max);
        Some(current)
    }
}

/// A key as signerd reports it: the id and the public half, both checked.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SignerKey {
    /// The key id signerd answered for.
    pub key_id: SignerKeyId,
    /// The public key.
    pub public_key: AccountId,
}

/// What signerd returns for a transaction.
#[derive(Clone, Debug)]
pub struct TransactionSignature {
    /// The 64-byte Ed25519 signature.
    pub signature: Vec<u8>,
    /// The 4-byte hint.
    pub hint: Vec<u8>,
    /// The 32-byte transaction hash signerd computed.
    pub tx_hash: Vec<u8>,
}

/// The client. Cheap to share behind an `Arc`; the channel multiplexes calls over HTTP/2.
pub struct Signer {
    keys: GrpcSignerClient<Channel>,
    health: HealthClient<Channel>,
    breaker: Breaker,
    retry: RetryConfig,
    call_timeout: Duration,
    metrics: Metrics,
}

impl Signer {
    /// Loads the TLS material and prepares a lazy channel: the gateway starts (and reports
    /// not-ready) while signerd is down, and connects when signerd comes up.
    pub fn connect(config: &SignerConfig, metrics: Metrics) -> Result<Self> {
        let read = |field: &str, path: &std::path::Path| {
            std::fs::read(path)
                .map_err(|e| Error::io(format!("signer.{field} {}", path.display()), e))
        };
        let ca = read("ca", &config.ca)?;
        let cert = read("cert", &config.cert)?;
        let key = SecretSlice::from(read("key", &config.key)?);
        let tls = ClientTlsConfig::new()
            .ca_certificate(Certificate::from_pem(ca))
            .identity(Identity::from_pem(cert, key.expose_secret()))
            .domain_name(config.server_name.clone());
        let channel = Endpoint::from_shared(config.endpoint.clone())
            .map_err(|e| Error::Config(format!("signer.endpoint: {e}")))?
            .tls_config(tls)
            .map_err(|e| Error::Config(format!("signer tls (ca/cert/key): {e}")))?
            .connect_timeout(config.connect_timeout())
            .timeout(config.call_timeout())
            .tcp_nodelay(true)
            .http2_keep_alive_interval(Duration::from_secs(30))
            .keep_alive_while_idle(true)
            .connect_lazy();
        let breaker_config = &config.circuit_breaker;
        let breaker = failsafe::Config::new()
            .failure_policy(failsafe::failure_policy::consecutive_failures(
                breaker_config.consecutive_failures,
                OpenDurations {
                    next: Duration::from_millis(breaker_config.open_ms),
                    max: Duration::from_millis(breaker_config.max_open_ms),
                },
            ))
            .build();
        Ok(Signer {
            keys: GrpcSignerClient::new(channel.clone()),
            health: HealthClient::new(channel),
            breaker,
            retry: config.retry.clone(),
            call_timeout: config.call_timeout(),
            metrics,
        })
    }

    /// Creates the key (or returns the existing key with that id: `CreateKey` is idempotent).
    pub async fn create_key(
        &self,
        key_id: &SignerKeyId,
        request_id: &RequestId,
    ) -> Result<SignerKey> {
        let response = self
            .call("CreateKey", || {
                let mut keys = self.keys.clone();
                let request = self.request(
                    pb::CreateKeyRequest {
                        key_id: key_id.as_str().to_owned(),
                        backend: String::new(),
                    },
                    request_id,
                );
                async move { keys.create_key(request).await }
            })
            .await?;
        checked_key("CreateKey", key_id, response.into_inner().key)
    }

    /// The key with this id.
    pub async fn get_key(&self, key_id: &SignerKeyId, request_id: &RequestId) -> Result<SignerKey> {
        let response = self
            .call("GetKey", || {
                let mut keys = self.keys.clone();
                let request = self.request(
                    pb::GetKeyRequest {
                        key_id: key_id.as_str().to_owned(),
                    },
                    request_id,
                );
                async move { keys.get_key(request).await }
            })
            .await?;
        checked_key("GetKey", key_id, response.into_inner().key)
    }

    /// Signs a transaction envelope (raw XDR) with the key. Re-signing the identical
    /// transaction is allowed by signerd's sequence guard, so retries are safe.
    pub async fn sign_transaction(
        &self,
        key_id: &SignerKeyId,
        envelope_xdr: &[u8],
        network_passphrase: &str,
        request_id: &RequestId,
    ) -> Result<TransactionSignature> {
        let response = self
            .call("SignTransaction", || {
                let mut keys = self.keys.clone();
                let request = self.request(
                    pb::SignTransactionRequest {
                        key_id: key_id.as_str().to_owned(),
                        envelope_xdr: envelope_xdr.to_vec(),
                        network_passphrase: network_passphrase.to_owned(),
                    },
                    request_id,
                );
                async move { keys.sign_transaction(request).await }
            })
            .await?
            .into_inner();
        if response.signature.len() != 64
            || response.hint.len() != 4
            || response.tx_hash.len() != 32
        {
            return Err(Error::Signer(
                "SignTransaction answered malformed signature, hint or hash".into(),
            ));
        }
        Ok(TransactionSignature {
            signature: response.signature,
            hint: response.hint,
            tx_hash: response.tx_hash,
        })
    }

    /// signerd's own health (`grpc.health.v1`): Ok only when it reports `SERVING`. Goes through
    /// the circuit breaker, so a successful probe is also the trial call that closes it.
    pub async fn check_health(&self, request_id: &RequestId) -> Result<()> {
        let response = self
            .call("Health", || {
                let mut health = self.health.clone();
                let request = self.request(
                    tonic_health::pb::HealthCheckRequest {
                        service: String::new(),
                    },
                    request_id,
                );
                async move { health.check(request).await }
            })
            .await?;
        match response.into_inner().status() {
            ServingStatus::Serving => Ok(()),
            other => Err(Error::SignerUnavailable(format!(
                "signerd reports {}",
                other.as_str_name()
            ))),
        }
    }

    fn request<T>(&self, message: T, request_id: &RequestId) -> Request<T> {
        let mut request = Request::new(message);
        request.set_timeout(self.call_timeout);
        // A RequestId is always a valid metadata value (checked characters); if that ever
        // changed the call would simply go without it.
        if let Ok(value) = MetadataValue::try_from(request_id.as_str()) {
            request.metadata_mut().insert(REQUEST_ID_METADATA, value);
        }
        request
    }

    /// Runs one RPC with deadline, retries and the circuit breaker.
    async fn call<T, F, Fut>(&self, rpc: &'static str, mut attempt: F) -> Result<T>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = std::result::Result<T, Status>>,
    {
        let mut backoff = Duration::from_millis(self.retry.initial_backoff_ms);
        let max_backoff = Duration::from_millis(self.retry.max_backoff_ms);
        let mut attempts_left = self.retry.attempts;
        loop {
            attempts_left -= 1;
            let deadline = self.call_timeout;
            let call = attempt();
            let bounded = async move {
                tokio::time::timeout(deadline, call)
                    .await
                    .unwrap_or_else(|_| Err(Status::deadline_exceeded("signerd deadline exceeded")))
            };
            match self.breaker.call_with(is_outage, bounded).await {
                Ok(value) => {
                    self.metrics.signer_call(rpc, "ok");
                    return Ok(value);
                }
                Err(failsafe::Error::Rejected) => {
                    self.metrics.signer_call(rpc, "rejected_open");
                    return Err(Error::SignerUnavailable(
                        "circuit breaker open after repeated failures; retry later".into(),
                    ));
                }
                Err(failsafe::Error::Inner(status)) if is_outage(&status) && attempts_left > 0 => {
                    self.metrics.signer_call(rpc, "retried");
                    tracing::warn!(rpc, code = ?status.code(), message = status.message(), retry_in_ms = backoff.as_millis() as u64, "signerd call failed; retrying");
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(max_backoff);
                }
                Err(failsafe::Error::Inner(status)) => {
                    return Err(self.classify(rpc, status));
                }
            }
        }
    }

    fn classify(&self, rpc: &'static str, status: Status) -> Error {
        if is_outage(&status) {
            self.metrics.signer_call(rpc, "unavailable");
            tracing::warn!(rpc, code = ?status.code(), message = status.message(), "signerd unavailable");
            Error::SignerUnavailable(format!("{rpc}: {}", outage_summary(&status)))
        } else if status.code() == tonic::Code::PermissionDenied
            && status.message().starts_with("policy sequence_guard:")
        {
            self.metrics.signer_call(rpc, "sequence_in_use");
            tracing::warn!(
                rpc,
                message = status.message(),
                "signerd's sequence guard refused"
            );
            Error::SequenceInUse(status.message().to_owned())
        } else if is_stale_time_bounds(&status) {
            self.metrics.signer_call(rpc, "stale_time_bounds");
            tracing::warn!(
                rpc,
                message = status.message(),
                "signerd refused stale time bounds"
            );
            Error::StaleTimeBounds(status.message().to_owned())
        } else if is_considered_refusal(&status) {
            self.metrics.signer_call(rpc, "refused");
            tracing::error!(rpc, code = ?status.code(), message = status.message(), "signerd refused a call");
            Error::SignerRefused(format!("{rpc} refused with {:?}", status.code()))
        } else {
            self.metrics.signer_call(rpc, "error");
            tracing::error!(rpc, code = ?status.code(), message = status.message(), "signerd failed a call");
            Error::Signer(format!("{rpc} failed with {:?}", status.code()))
        }
    }
}

/// signerd's time-bounds rule refusing a `max_time` already past: the transaction went stale
/// between being built and reaching signerd. (A `max_time` too far ahead is a configuration
/// mismatch, a considered refusal like any other.)
fn is_stale_time_bounds(status: &Status) -> bool {
    status.code() == Code::PermissionDenied
        && status.message().starts_with("policy time_bounds:")
        && status.message().contains("already past")
}

/// signerd's answer on the merits: the same request would be refused again. Anything else
/// that is not an outage (an internal error, an unknown status) may pass.
fn is_considered_refusal(status: &Status) -> bool {
    matches!(
        status.code(),
        Code::PermissionDenied
            | Code::InvalidArgument
            | Code::NotFound
            | Code::Unauthenticated
            | Code::AlreadyExists
            | Code::OutOfRange
            | Code::Unimplemented
    )
}

/// Outage errors: signerd (or the way to it) is down or too slow. These are retried and count
/// toward opening the breaker; anything else is signerd's considered answer.
fn is_outage(status: &Status) -> bool {
    matches!(
        status.code(),
        Code::Unavailable | Code::DeadlineExceeded | Code::ResourceExhausted | Code::Cancelled
    )
}

fn outage_summary(status: &Status) -> &'static str {
    match status.code() {
        Code::DeadlineExceeded | Code::Cancelled => "deadline exceeded",
        Code::ResourceExhausted => "overloaded",
        _ => "cannot reach signerd",
    }
}

/// Parses signerd's answer: the key must be present, carry the id asked for, and its public key
/// must be a valid account id whose raw bytes match the strkey.
fn checked_key(rpc: &str, asked: &SignerKeyId, key: Option<pb::Key>) -> Result<SignerKey> {
    let key = key.ok_or_else(|| Error::Signer(format!("{rpc} answered without a key")))?;
    if key.key_id != asked.as_str() {
        return Err(Error::Signer(format!("{rpc} answered for another key id")));
    }
    let public_key = AccountId::parse(&key.public_key)
        .map_err(|_| Error::Signer(format!("{rpc} answered an invalid public key")))?;
    if public_key.public_key_bytes().as_slice() != key.public_key_bytes.as_slice() {
        return Err(Error::Signer(format!(
            "{rpc} answered inconsistent public key forms"
        )));
    }
    Ok(SignerKey {
        key_id: asked.clone(),
        public_key,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(id: &str, bytes: [u8; 32]) -> pb::Key {
        pb::Key {
            key_id: id.to_owned(),
            public_key: format!("{}", stellar_strkey::ed25519::PublicKey(bytes)),
            public_key_bytes: bytes.to_vec(),
            backend: "pkcs11".into(),
        }
    }

    #[test]
    fn signer_answers_are_checked() {
        let asked = SignerKeyId::parse("wallet-1").unwrap_or_else(|e| panic!("{e}"));
        assert!(checked_key("CreateKey", &asked, Some(key("wallet-1", [3; 32]))).is_ok());
        assert!(checked_key("CreateKey", &asked, None).is_err());
        assert!(checked_key("CreateKey", &asked, Some(key("wallet-2", [3; 32]))).is_err());
        let mut mismatched = key("wallet-1", [3; 32]);
        mismatched.public_key_bytes = vec![4; 32];
        assert!(checked_key("CreateKey", &asked, Some(mismatched)).is_err());
    }

    #[test]
    fn breaker_open_time_doubles_up_to_the_cap() {
        let durations: Vec<u128> = OpenDurations {
            next: Duration::from_millis(200),
            max: Duration::from_millis(1000),
        }
        .take(5)
        .map(|d| d.as_millis())
        .collect();
        assert_eq!(durations, [200, 400, 800, 1000, 1000]);
    }

    #[test]
    fn only_outages_are_retried() {
        assert!(is_outage(&Status::unavailable("down")));
        assert!(is_outage(&Status::deadline_exceeded("slow")));
        assert!(!is_outage(&Status::permission_denied("acl")));
        assert!(!is_outage(&Status::invalid_argument("bad id")));
    }
}
