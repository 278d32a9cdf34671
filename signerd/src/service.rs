//! The `signer.v1.Signer` gRPC service: turns requests into typed values, asks the ACL, the
//! velocity caps, the policy and the sequence guard, writes the decision to the audit log, and
//! only then asks the backend for a signature. Every handler starts from the identity the TLS
//! layer established.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use signer_proto::v1 as pb;
use signer_proto::v1::signer_server::Signer;
use tonic::metadata::MetadataMap;
use tonic::{Code, Request, Response, Status};

use crate::audit::log::AuditLog;
use crate::audit::record::{self, Decision, DecisionRecord};
use crate::authz::{Action, CallerIdentity};
use crate::backend::Keyring;
use crate::error::Error;
use crate::guard::{GuardDecision, SequenceClaim, SequenceGuard};
use crate::keys::{KeyId, KeyInfo, PublicKey};
use crate::limits::{CapHit, DenialAdmission, VelocityCaps};
use crate::metrics::{BackendLabels, Metrics, RuleLabels};
use crate::policy::{Denial, PolicySet, Rule};
use crate::pool::Origin;
use crate::sep10::Challenge;
use crate::sep53::Message;
use crate::soroban::SorobanRecord;
use crate::soroban::auth::UnsignedAuthEntry;
use crate::soroban::invocation::{self, Call};
use crate::soroban::ledger::LedgerClocks;
use crate::soroban::nonce_guard::{NonceDecision, NonceSlot};
use crate::stellar::{NetworkPassphrase, ParsedTransaction, SignedPayload};
use crate::tls::PeerInfo;
use crate::trust::ReloadableTrust;

/// The gRPC metadata entry carrying the caller's request id.
pub const REQUEST_ID_HEADER: &str = "x-request-id";

/// The rule named by a record summing up denials refused over the denial budget.
pub const DENIAL_BUDGET_RULE: &str = "denial_budget";

/// How long after the first denial over budget its summary record is written.
const DENIAL_SUMMARY_WINDOW: Duration = Duration::from_secs(1);

/// The largest denial record (its JSON members), in bytes. A refusal costs the caller nothing,
/// so what it makes signerd write is bounded; operations beyond the cap are counted in
/// `operations_truncated`. `signed` records are not capped: they need every grant and policy
/// check, and `server.max_message_bytes` bounds the envelope.
pub const MAX_DENIAL_RECORD_BYTES: usize = 16 * 1024;

/// The longest `reason` kept in a denial record, in bytes.
const MAX_REASON_BYTES: usize = 1024;

const DEFAULT_PAGE_SIZE: usize = 100;
const MAX_PAGE_SIZE: usize = 1000;

/// Everything a handler consults.
pub struct SignerService {
    keyring: Arc<Keyring>,
    /// Holds the ACL; read once per request, since SIGHUP may replace it.
    trust: Arc<ReloadableTrust>,
    policies: PolicySet,
    guard: Arc<Mutex<SequenceGuard>>,
    audit: Arc<AuditLog>,
    caps: Arc<VelocityCaps>,
    metrics: Arc<Metrics>,
    /// The current ledger per network, for Soroban authorizations.
    ledgers: Arc<LedgerClocks>,
}

impl SignerService {
    /// Builds the service.
    pub fn new(
        keyring: Arc<Keyring>,
        trust: Arc<ReloadableTrust>,
        policies: PolicySet,
        guard: Arc<Mutex<SequenceGuard>>,
        audit: Arc<AuditLog>,
        caps: Arc<VelocityCaps>,
        metrics: Arc<Metrics>,
    ) -> Self {
        SignerService {
            keyring,
            trust,
            policies,
            guard,
            audit,
            caps,
            metrics,
            ledgers: Arc::new(LedgerClocks::empty()),
        }
    }

    /// Reads the current ledger from these clocks (none by default: every authorization entry
    /// is refused as `ledger`).
    pub fn with_ledger_clocks(mut self, ledgers: Arc<LedgerClocks>) -> Self {
        self.ledgers = ledgers;
        self
    }

    /// Refuses a request: logs it, counts it, and returns the status naming the rule. Within the
    /// caller's denial budget the refusal is recorded in the audit log (capped in size); beyond
    /// it the caller gets `RESOURCE_EXHAUSTED` and the refusal is only counted, the count going
    /// into the log as one record (see [`crate::limits::DenialBudget`]).
    async fn deny(&self, ctx: &CallContext, mut record: DecisionRecord, denial: Denial) -> Status {
        self.metrics.request(ctx.rpc, "denied");
        self.metrics
            .denials
            .get_or_create(&RuleLabels {
                rule: denial.rule.name(),
            })
            .inc();
        let admission = self.caps.denials.admit(
            ctx.caller.as_str(),
            ctx.rpc,
            denial.rule.name(),
            &record.time,
        );
        match admission {
            DenialAdmission::Record(earlier) => {
                tracing::warn!(
                    request_id = %ctx.request_id,
                    identity = %ctx.caller,
                    rpc = ctx.rpc,
                    rule = denial.rule.name(),
                    reason = %denial.reason,
                    "denied"
                );
                record.decision = Some(Decision::Denied);
                record.rule = Some(denial.rule.name());
                record.reason = Some(denial.reason.clone());
                record.suppressed_denials = earlier.map(|e| e.count);
                cap_denial_record(&mut record);
                if let Err(e) = self.audit.writer.append(record::members(&record)).await {
                    tracing::error!(error = %e, request_id = %ctx.request_id, "could not record a denial");
                }
            }
            DenialAdmission::Suppress { first } => {
                // The process log is a disk too: one line per flood, not one per request.
                if first {
                    tracing::warn!(identity = %ctx.caller, rule = denial.rule.name(), "denial budget exhausted: further denials of this identity are counted, not recorded one by one");
                    self.summarize_suppressed_later(ctx.caller.to_string());
                } else {
                    tracing::debug!(request_id = %ctx.request_id, identity = %ctx.caller, rule = denial.rule.name(), "denied over the denial budget");
                }
                self.metrics.denials_suppressed.inc();
                return Status::resource_exhausted(format!(
                    "too many refused requests from {}; slow down ({denial})",
                    ctx.caller
                ));
            }
        }
        let code = match denial.rule {
            Rule::Velocity | Rule::GuardFull => Code::ResourceExhausted,
            // Not the caller's fault and not final: the same request may pass once the
            // current ledger is known again.
            Rule::Ledger => Code::Unavailable,
            _ => Code::PermissionDenied,
        };
        Status::new(code, denial.to_string())
    }

    /// Writes `identity`'s count of unrecorded denials as one record once its window has passed,
    /// unless a recorded denial has carried the count first.
    fn summarize_suppressed_later(&self, identity: String) {
        let (caps, audit) = (self.caps.clone(), self.audit.clone());
        tokio::spawn(async move {
            // Not synchronisation: the window over which a flood is summed up in one record.
            tokio::time::sleep(DENIAL_SUMMARY_WINDOW).await;
            let Some(suppressed) = caps.denials.take(&identity) else {
                return;
            };
            let summary = denial_summary(&identity, &suppressed);
            if let Err(e) = audit.writer.append(record::members(&summary)).await {
                tracing::error!(error = %e, %identity, count = suppressed.count, "could not record a denial summary");
            }
        });
    }

    /// The checks every key-using RPC shares: the reserved audit key, the ACL, velocity caps.
    async fn admit(
        &self,
        ctx: &CallContext,
        action: Action<'_>,
        key_id: &KeyId,
        record: impl Fn() -> DecisionRecord,
        counts_toward_velocity: bool,
    ) -> Result<(), Status> {
        if key_id == self.audit.key_id() {
            let denial = Denial::new(
                Rule::ReservedKey,
                format!("key {key_id} is reserved for the audit log"),
            );
            return Err(self.deny(ctx, record(), denial).await);
        }
        let acl = self.trust.current().acl.clone();
        if let Err(Error::PermissionDenied(reason)) = acl.authorize(&ctx.caller, action) {
            return Err(self
                .deny(ctx, record(), Denial::new(Rule::Acl, reason))
                .await);
        }
        if counts_toward_velocity
            && let Err(hit) = self.caps.check(ctx.caller.as_str(), key_id.as_str())
        {
            let reason = match hit {
                CapHit::Identity => format!("identity {} is over its signing rate", ctx.caller),
                CapHit::Key => format!("key {key_id} is over its signing rate"),
            };
            return Err(self
                .deny(ctx, record(), Denial::new(Rule::Velocity, reason))
                .await);
        }
        Ok(())
    }

    /// Makes the `signed` decision durable. Until this returns Ok, no signature may exist.
    async fn record_signed(
        &self,
        ctx: &CallContext,
        record: &mut DecisionRecord,
    ) -> Result<(), Status> {
        record.decision = Some(Decision::Signed);
        self.audit
            .writer
            .append(record::members(record))
            .await
            .map(|_| ())
            .map_err(|e| {
                self.metrics.request(ctx.rpc, "failed");
                Status::from(e)
            })
    }

    /// Signs `hash` once its `signed` record is durable; a backend failure is recorded as
    /// `failed`.
    async fn sign_recorded(
        &self,
        ctx: &CallContext,
        key: &KeyInfo,
        backend: &Arc<dyn crate::backend::KeyBackend>,
        hash: &[u8; 32],
        mut record: DecisionRecord,
    ) -> Result<[u8; 64], Status> {
        let started = Instant::now();
        match backend.sign(&key.id, hash).await {
            Ok(signature) => {
                self.metrics
                    .backend_sign_seconds
                    .get_or_create(&BackendLabels {
                        backend: key.backend,
                    })
                    .observe(started.elapsed().as_secs_f64());
                self.metrics.request(ctx.rpc, "signed");
                Ok(signature)
            }
            Err(e) => {
                record.decision = Some(Decision::Failed);
                record.time = record::now_rfc3339();
                record.reason = Some(e.to_string());
                if let Err(audit) = self.audit.writer.append(record::members(&record)).await {
                    tracing::error!(error = %audit, "could not record a signing failure");
                }
                self.metrics.request(ctx.rpc, "failed");
                Err(e.into())
            }
        }
    }

    /// Reserves in the sequence guard the sequence numbers `tx` can consume, when `key` is its
    /// source. Only the source's own key reserves: a key that is merely an operation source or
    /// the fee source of a fee bump must not be able to block another account's transactions.
    /// Returns the claim and whether this call reserved it (false: the identical transaction,
    /// signed before, already holds it), or the guard's refusal.
    fn reserve_sequences(
        &self,
        caller: &CallerIdentity,
        tx: &ParsedTransaction,
        key: &PublicKey,
        now: u64,
    ) -> Result<Option<(SequenceClaim, bool)>, Denial> {
        if tx.source != *key {
            return Ok(None);
        }
        let claim = tx.sequence_claim();
        let max_time = tx.time_bounds().map(|(_, max)| max);
        let decision = self
            .guard
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .check_and_reserve(claim, tx.sequence_hash(), max_time, caller.as_str(), now);
        match decision {
            GuardDecision::Reserved => Ok(Some((claim, true))),
            GuardDecision::SameTransaction => Ok(Some((claim, false))),
            GuardDecision::Conflict {
                signed,
                first,
                last,
            } => {
                let held = if (first, last) == (claim.first, claim.last) {
                    "was".to_owned()
                } else {
                    format!("overlaps {}", describe_range(first, last))
                };
                Err(Denial::new(
                    Rule::SequenceGuard,
                    format!(
                        "{} of {} {held} already signed for transaction {}",
                        describe_range(claim.first, claim.last),
                        claim.account.account_id(),
                        hex::encode(signed)
                    ),
                ))
            }
            GuardDecision::Full { limit } => Err(Denial::new(
                Rule::GuardFull,
                format!("the sequence guard holds its maximum of {limit} unexpired transactions"),
            )),
            GuardDecision::IdentityFull { limit } => Err(Denial::new(
                Rule::GuardFull,
                format!(
                    "identity {caller} holds its maximum of {limit} unexpired sequence-guard entries"
                ),
            )),
        }
    }
}

impl SignerService {
    /// Signs a recognised SEP-10 challenge: the network and home domain allowed for the key,
    /// the challenge's shape and time bounds checked. Outside the sequence guard: a
    /// transaction at sequence 0 can never be applied, so it reserves nothing.
    #[allow(
        clippy::too_many_arguments,
        reason = "one call site, every value distinct"
    )]
    async fn sign_web_auth(
        &self,
        ctx: &CallContext,
        key_id: &KeyId,
        tx: &ParsedTransaction,
        network: &NetworkPassphrase,
        challenge: Challenge,
        mut record: DecisionRecord,
        now: u64,
    ) -> Result<Response<pb::SignTransactionResponse>, Status> {
        let (key, backend) = self.keyring.find(key_id).await?;
        record.web_auth_domain = Some(challenge.home_domain.clone());
        let policy = self.policies.for_key(key_id);
        let checked = policy
            .check_network(network)
            .and_then(|()| {
                if policy.allows_web_auth_domain(&challenge.home_domain) {
                    Ok(())
                } else {
                    Err(crate::policy::Denial::new(
                        Rule::WebAuth,
                        format!(
                            "SEP-10 challenge for home domain {:?}, which is not allowed for this key",
                            challenge.home_domain
                        ),
                    ))
                }
            })
            .and_then(|()| challenge.check(tx, &key.public_key, now));
        if let Err(denial) = checked {
            return Err(self.deny(ctx, record, denial).await);
        }
        let (payload, signed_hash) = tx.payload_for(&key.public_key);
        record.signed_hash = Some(hex::encode(signed_hash));
        self.record_signed(ctx, &mut record).await?;
        let signature = self
            .sign_recorded(ctx, &key, backend, &signed_hash, record)
            .await?;
        Ok(Response::new(pb::SignTransactionResponse {
            signature: signature.to_vec(),
            hint: key.public_key.hint().to_vec(),
            signed_hash: signed_hash.to_vec(),
            tx_hash: tx.tx_hash.to_vec(),
            signed_payload: signed_payload_to_proto(payload).into(),
        }))
    }

    /// The checks of an authorization entry before its nonce is reserved: network, credentials
    /// (the key's own account; delegates only where allowed), every call of the tree, and the
    /// expiration against the current ledger, which it returns.
    async fn check_auth_entry(
        &self,
        key_id: &KeyId,
        key: &PublicKey,
        entry: &UnsignedAuthEntry,
        calls: Option<&[Call]>,
        network: &NetworkPassphrase,
        expiration: u32,
    ) -> Result<u32, Denial> {
        let policy = self.policies.for_key(key_id);
        policy.check_network(network)?;
        if entry.account() != Some(*key) {
            return Err(Denial::new(
                Rule::Credentials,
                format!(
                    "the credentials authorize {}, not this key's account {}",
                    invocation::address_string(&entry.address),
                    key.account_id()
                ),
            ));
        }
        let soroban = policy.soroban()?;
        if entry.kind == crate::soroban::auth::CredentialsKind::AddressWithDelegates
            && !soroban.allow_delegates
        {
            return Err(Denial::new(
                Rule::Credentials,
                "address_with_delegates credentials: this key's policy does not allow delegated signers",
            ));
        }
        let calls = calls.ok_or_else(|| {
            Denial::new(
                Rule::Contract,
                format!(
                    "the invocation tree has more than {} calls",
                    invocation::MAX_CALLS
                ),
            )
        })?;
        soroban.check_calls(calls, key)?;
        let current = self.ledgers.current(network).await?;
        if expiration <= current {
            return Err(Denial::new(
                Rule::Expiration,
                format!("expiration ledger {expiration} is not after the current ledger {current}"),
            ));
        }
        if expiration - current > soroban.max_expiration_ledgers {
            return Err(Denial::new(
                Rule::Expiration,
                format!(
                    "expiration ledger {expiration} is more than {} ledgers after the current ledger {current}",
                    soroban.max_expiration_ledgers
                ),
            ));
        }
        Ok(current)
    }
}

impl Drop for SignerService {
    /// Counts still waiting for their summary when the server stops are queued for the log,
    /// which drains its queue before it closes: no denial goes uncounted.
    fn drop(&mut self) {
        for (identity, suppressed) in self.caps.denials.take_all() {
            let summary = denial_summary(&identity, &suppressed);
            if let Err(e) = self.audit.writer.append_detached(record::members(&summary)) {
                tracing::error!(error = %e, %identity, count = suppressed.count, "could not record a denial summary at shutdown");
            }
        }
    }
}

/// The record summing up `identity`'s denials refused over its budget.
fn denial_summary(identity: &str, suppressed: &crate::limits::Suppressed) -> DecisionRecord {
    DecisionRecord {
        kind: "decision",
        time: record::now_rfc3339(),
        request_id: "denial-summary".to_owned(),
        identity: identity.to_owned(),
        rpc: suppressed.last_rpc,
        decision: Some(Decision::Denied),
        rule: Some(DENIAL_BUDGET_RULE),
        reason: Some(format!(
            "{} denied requests since {} were refused over the denial budget without a record of their own (last rule: {})",
            suppressed.count, suppressed.since, suppressed.last_rule
        )),
        suppressed_denials: Some(suppressed.count),
        ..DecisionRecord::default()
    }
}

/// Who is calling, with which request id, for which RPC.
struct CallContext {
    caller: CallerIdentity,
    request_id: String,
    rpc: &'static str,
}

impl CallContext {
    fn of<T>(request: &Request<T>, rpc: &'static str) -> Result<Self, Status> {
        // Every connection passes through the TLS acceptor, which attaches PeerInfo; a request
        // without it did not come through that path and is refused.
        let peer = request
            .extensions()
            .get::<PeerInfo>()
            .ok_or_else(|| Status::unauthenticated("no verified client certificate"))?;
        if let Err(why) = peer.check_still_trusted() {
            tracing::warn!(identity = %peer.identity, remote = ?peer.remote_addr, rpc, reason = %why, "request refused: the connection's certificate is no longer trusted");
            return Err(Status::unauthenticated(why));
        }
        Ok(CallContext {
            caller: peer.identity.clone(),
            request_id: request_id(request.metadata()),
            rpc,
        })
    }

    /// An audit record for this call with the common members filled in.
    fn record(&self, key_id: Option<&str>) -> DecisionRecord {
        DecisionRecord {
            kind: "decision",
            time: record::now_rfc3339(),
            request_id: self.request_id.clone(),
            identity: self.caller.to_string(),
            rpc: self.rpc,
            key_id: key_id.map(str::to_owned),
            ..DecisionRecord::default()
        }
    }
}

/// Adds what signerd knows about a decoded transaction to an audit record.
fn describe_transaction(
    record: &mut DecisionRecord,
    network: &NetworkPassphrase,
    tx: &ParsedTransaction,
) {
    record.network = Some(network.as_str().to_owned());
    record.tx_hash = Some(hex::encode(tx.tx_hash));
    record.inner_tx_hash = tx.inner_tx_hash.map(hex::encode);
    record.source_account = Some(tx.source.account_id());
    record.sequence = Some(tx.sequence.to_string());
    record.fee_source = tx.fee_source.map(|k| k.account_id());
    record.max_time = tx.time_bounds().map(|(_, max)| max).filter(|m| *m > 0);
    record.operations = Some(tx.operation_summaries());
    let contract_calls: Vec<SorobanRecord> = tx
        .operations()
        .iter()
        .zip(tx.effective_operation_sources())
        .filter_map(|(op, source)| match &op.body {
            stellar_xdr::OperationBody::InvokeHostFunction(invoke) => {
                Some(host_function_record(invoke, &source))
            }
            _ => None,
        })
        .take(invocation::MAX_SUMMARISED_CALLS)
        .collect();
    if !contract_calls.is_empty() {
        record.soroban = Some(contract_calls);
    }
}

/// The calls an `invoke_host_function` makes with `source`'s authority: the host function, then
/// the trees of its source-account authorization entries.
fn host_function_record(
    invoke: &stellar_xdr::InvokeHostFunctionOp,
    source: &PublicKey,
) -> SorobanRecord {
    let mut calls = vec![match &invoke.host_function {
        stellar_xdr::HostFunction::InvokeContract(args) => invocation::contract_call(args, 0),
        _ => Call::CreateContract { depth: 0 },
    }];
    for entry in invoke.auth.iter() {
        if entry.credentials == stellar_xdr::SorobanCredentials::SourceAccount {
            calls.extend(invocation::flatten(&entry.root_invocation).unwrap_or_default());
        }
    }
    let (calls, calls_truncated) = invocation::summaries(&calls);
    SorobanRecord {
        credentials: "source_account".to_owned(),
        address: source.account_id(),
        calls,
        calls_truncated,
        ..SorobanRecord::default()
    }
}

/// What the audit record says about an authorization entry.
fn auth_entry_record(entry: &UnsignedAuthEntry, calls: &[Call], expiration: u32) -> SorobanRecord {
    let (calls, calls_truncated) = invocation::summaries(calls);
    SorobanRecord {
        credentials: entry.kind.name().to_owned(),
        address: invocation::address_string(&entry.address),
        nonce: Some(entry.nonce.to_string()),
        expiration_ledger: Some(expiration),
        current_ledger: None,
        invocation_hash: Some(hex::encode(entry.invocation_hash)),
        calls,
        calls_truncated,
    }
}

/// "sequence S" or "sequences F..=L", for refusals.
fn describe_range(first: i64, last: i64) -> String {
    if first == last {
        format!("sequence {first}")
    } else {
        format!("sequences {first}..={last}")
    }
}

/// Bounds a denial record to [`MAX_DENIAL_RECORD_BYTES`]: a long reason is cut, and operations
/// are left out from the end (and counted) until it fits.
fn cap_denial_record(record: &mut DecisionRecord) {
    if let Some(reason) = record.reason.as_mut()
        && reason.len() > MAX_REASON_BYTES
    {
        let mut cut = MAX_REASON_BYTES;
        while !reason.is_char_boundary(cut) {
            cut -= 1;
        }
        reason.truncate(cut);
        reason.push_str("...");
    }
    let size = record::members(record).len();
    let Some(operations) = record.operations.as_mut() else {
        return;
    };
    if size <= MAX_DENIAL_RECORD_BYTES {
        return;
    }
    // Room for the `operations_truncated` member itself.
    let mut excess = size - MAX_DENIAL_RECORD_BYTES + 32;
    let total = operations.len();
    while excess > 0
        && let Some(dropped) = operations.pop()
    {
        let dropped = serde_json::to_string(&dropped).map_or(0, |json| json.len() + 1);
        excess = excess.saturating_sub(dropped);
    }
    record.operations_truncated = Some(total - operations.len());
}

/// The caller's request id when it sent a sane one, else a fresh one.
fn request_id(metadata: &MetadataMap) -> String {
    static NEXT: AtomicU64 = AtomicU64::new(1);
    let sane = |id: &&str| {
        !id.is_empty()
            && id.len() <= 128
            && id
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b':'))
    };
    match metadata
        .get(REQUEST_ID_HEADER)
        .and_then(|v| v.to_str().ok())
        .filter(sane)
    {
        Some(id) => id.to_owned(),
        None => format!(
            "signerd-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        ),
    }
}

fn key_to_proto(key: &KeyInfo) -> pb::Key {
    pb::Key {
        key_id: key.id.to_string(),
        public_key: key.public_key.account_id(),
        public_key_bytes: key.public_key.0.to_vec(),
        backend: key.backend.to_owned(),
    }
}

fn signed_payload_to_proto(payload: SignedPayload) -> pb::SignedPayload {
    match payload {
        SignedPayload::Transaction => pb::SignedPayload::Transaction,
        SignedPayload::FeeBump => pb::SignedPayload::FeeBump,
        SignedPayload::InnerTransaction => pb::SignedPayload::InnerTransaction,
    }
}

#[tonic::async_trait]
impl Signer for SignerService {
    async fn create_key(
        &self,
        request: Request<pb::CreateKeyRequest>,
    ) -> Result<Response<pb::CreateKeyResponse>, Status> {
        let ctx = CallContext::of(&request, "CreateKey")?;
        let req = request.into_inner();
        let key_id = KeyId::parse(&req.key_id)?;
        let record = || ctx.record(Some(key_id.as_str()));
        self.admit(&ctx, Action::CreateKey(&key_id), &key_id, record, false)
            .await?;
        let backend = Some(req.backend.clone()).filter(|b| !b.is_empty());
        let (keyring, audit, metrics) = (
            self.keyring.clone(),
            self.audit.clone(),
            self.metrics.clone(),
        );
        let (id, mut created_record) = (key_id.clone(), record());
        // In a task of its own: a caller that goes away (its deadline, a dropped connection)
        // cancels this handler, and must not cut a creation between the binding and its
        // record. The id's creation lock is held until the record is durable and the binding
        // confirmed, so a retry is answered the key only after that.
        let (key, origin) = tokio::spawn(async move {
            let creation = keyring.create_key_pooled(&id, backend.as_deref()).await?;
            if creation.origin != Origin::Existing {
                created_record.public_key = Some(creation.key.public_key.account_id());
                created_record.decision = Some(Decision::Created);
                audit.writer.append(record::members(&created_record)).await?;
                metrics
                    .pool
                    .count_creation(creation.key.backend, creation.origin);
                if let Err(e) = keyring.confirm_binding(&creation.key).await {
                    // The key exists and is recorded; the marker left in the token only means
                    // the next start writes the same `created` record again (see crate::pool).
                    tracing::warn!(error = %e, key_id = %id, "could not mark a key's creation as recorded");
                }
            }
            Ok::<_, Error>((creation.key.clone(), creation.origin))
        })
        .await
        .map_err(|e| Status::internal(format!("key creation task failed: {e}")))??;
        let created = origin != Origin::Existing;
        self.metrics.request(ctx.rpc, "ok");
        tracing::info!(request_id = %ctx.request_id, identity = %ctx.caller, key_id = %key_id, created, origin = origin.label(), "CreateKey");
        Ok(Response::new(pb::CreateKeyResponse {
            key: Some(key_to_proto(&key)),
            created,
        }))
    }

    async fn get_key(
        &self,
        request: Request<pb::GetKeyRequest>,
    ) -> Result<Response<pb::GetKeyResponse>, Status> {
        let ctx = CallContext::of(&request, "GetKey")?;
        let key_id = KeyId::parse(&request.get_ref().key_id)?;
        let record = || ctx.record(Some(key_id.as_str()));
        self.admit(&ctx, Action::UseKey(&key_id), &key_id, record, false)
            .await?;
        let (key, _) = self.keyring.find(&key_id).await?;
        self.metrics.request(ctx.rpc, "ok");
        Ok(Response::new(pb::GetKeyResponse {
            key: Some(key_to_proto(&key)),
        }))
    }

    async fn list_keys(
        &self,
        request: Request<pb::ListKeysRequest>,
    ) -> Result<Response<pb::ListKeysResponse>, Status> {
        let ctx = CallContext::of(&request, "ListKeys")?;
        // One ACL for the whole listing, even if SIGHUP swaps it meanwhile.
        let acl = self.trust.current().acl.clone();
        if let Err(Error::PermissionDenied(reason)) = acl.authorize_listing(&ctx.caller) {
            return Err(self
                .deny(&ctx, ctx.record(None), Denial::new(Rule::Acl, reason))
                .await);
        }
        let req = request.into_inner();
        let page_size = match req.page_size as usize {
            0 => DEFAULT_PAGE_SIZE,
            n => n.min(MAX_PAGE_SIZE),
        };
        let after = if req.page_token.is_empty() {
            None
        } else {
            Some(KeyId::parse(&req.page_token).map_err(|_| {
                Status::invalid_argument("page_token is not one this server issued")
            })?)
        };
        let audit_key = self.audit.key_id();
        let visible = self
            .keyring
            .list_keys()
            .await?
            .into_iter()
            .filter(|key| after.as_ref().is_none_or(|after| key.id > *after))
            .filter(|key| key.id != *audit_key && acl.may_use(&ctx.caller, &key.id));
        let mut keys: Vec<KeyInfo> = visible.take(page_size + 1).collect();
        let next_page_token = if keys.len() > page_size {
            keys.truncate(page_size);
            keys.last().map(|k| k.id.to_string()).unwrap_or_default()
        } else {
            String::new()
        };
        self.metrics.request(ctx.rpc, "ok");
        Ok(Response::new(pb::ListKeysResponse {
            keys: keys.iter().map(key_to_proto).collect(),
            next_page_token,
        }))
    }

    async fn sign_transaction(
        &self,
        request: Request<pb::SignTransactionRequest>,
    ) -> Result<Response<pb::SignTransactionResponse>, Status> {
        let ctx = CallContext::of(&request, "SignTransaction")?;
        let req = request.into_inner();
        let key_id = KeyId::parse(&req.key_id)?;
        let network = NetworkPassphrase::parse(&req.network_passphrase)?;
        let tx = ParsedTransaction::decode(&req.envelope_xdr, &network)?;
        let describe = || {
            let mut record = ctx.record(Some(key_id.as_str()));
            describe_transaction(&mut record, &network, &tx);
            record
        };
        self.admit(&ctx, Action::UseKey(&key_id), &key_id, describe, true)
            .await?;
        let (key, backend) = self.keyring.find(&key_id).await?;
        let mut record = describe();
        record.public_key = Some(key.public_key.account_id());

        let now = record::now_unix();
        if let Some(challenge) = Challenge::recognise(&tx, &key.public_key) {
            return self
                .sign_web_auth(&ctx, &key_id, &tx, &network, challenge, record, now)
                .await;
        }
        if let Err(denial) =
            self.policies
                .for_key(&key_id)
                .check(&tx, &key.public_key, &network, now)
        {
            return Err(self.deny(&ctx, record, denial).await);
        }
        let (payload, signed_hash) = tx.payload_for(&key.public_key);
        record.signed_hash = Some(hex::encode(signed_hash));

        let reservation = match self.reserve_sequences(&ctx.caller, &tx, &key.public_key, now) {
            Ok(reservation) => reservation,
            Err(denial) => return Err(self.deny(&ctx, record, denial).await),
        };
        record.reserved_sequences = reservation.map(|(claim, _)| record::SequenceRange {
            first: claim.first.to_string(),
            last: claim.last.to_string(),
        });
        if let Err(status) = self.record_signed(&ctx, &mut record).await {
            // Nothing was recorded as signed, so nothing may hold the slot.
            if let Some((claim, true)) = reservation {
                self.guard
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .release(claim, tx.sequence_hash());
            }
            return Err(status);
        }
        let signature = self
            .sign_recorded(&ctx, &key, backend, &signed_hash, record)
            .await?;
        tracing::debug!(
            request_id = %ctx.request_id,
            identity = %ctx.caller,
            key_id = %key_id,
            tx_hash = %hex::encode(tx.tx_hash),
            "SignTransaction signed"
        );
        Ok(Response::new(pb::SignTransactionResponse {
            signature: signature.to_vec(),
            hint: key.public_key.hint().to_vec(),
            signed_hash: signed_hash.to_vec(),
            tx_hash: tx.tx_hash.to_vec(),
            signed_payload: signed_payload_to_proto(payload).into(),
        }))
    }

    async fn sign_auth_entry(
        &self,
        request: Request<pb::SignAuthEntryRequest>,
    ) -> Result<Response<pb::SignAuthEntryResponse>, Status> {
        let ctx = CallContext::of(&request, "SignAuthEntry")?;
        let req = request.into_inner();
        let key_id = KeyId::parse(&req.key_id)?;
        let network = NetworkPassphrase::parse(&req.network_passphrase)?;
        let entry = UnsignedAuthEntry::decode(&req.entry_xdr)?;
        let expiration = req.signature_expiration_ledger;
        let calls = invocation::flatten(&entry.entry.root_invocation);
        let describe = || {
            let mut record = ctx.record(Some(key_id.as_str()));
            record.network = Some(network.as_str().to_owned());
            record.soroban = Some(vec![auth_entry_record(
                &entry,
                calls.as_deref().unwrap_or_default(),
                expiration,
            )]);
            record
        };
        self.admit(&ctx, Action::UseKey(&key_id), &key_id, describe, true)
            .await?;
        let (key, backend) = self.keyring.find(&key_id).await?;
        let mut record = describe();
        record.public_key = Some(key.public_key.account_id());
        let current = match self
            .check_auth_entry(
                &key_id,
                &key.public_key,
                &entry,
                calls.as_deref(),
                &network,
                expiration,
            )
            .await
        {
            Ok(current) => current,
            Err(denial) => return Err(self.deny(&ctx, record, denial).await),
        };
        if let Some(soroban) = record.soroban.as_mut().and_then(|s| s.first_mut()) {
            soroban.current_ledger = Some(current);
        }
        let payload = entry.payload(&network, expiration)?;
        record.signed_hash = Some(hex::encode(payload.hash));

        let slot = NonceSlot {
            network: network.network_id(),
            address: key.public_key.account_id(),
            nonce: entry.nonce,
        };
        let decision = self
            .guard
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .nonces
            .check_and_reserve(
                slot.clone(),
                entry.invocation_hash,
                expiration,
                current,
                ctx.caller.as_str(),
            );
        let reserved = match decision {
            NonceDecision::Reserved => true,
            NonceDecision::SameEntry => false,
            NonceDecision::Conflict { signed } => {
                let denial = Denial::new(
                    Rule::NonceGuard,
                    format!(
                        "nonce {} of {} was already signed for another invocation ({})",
                        entry.nonce,
                        key.public_key.account_id(),
                        hex::encode(signed)
                    ),
                );
                return Err(self.deny(&ctx, record, denial).await);
            }
            NonceDecision::Full { limit } => {
                let denial = Denial::new(
                    Rule::GuardFull,
                    format!("the nonce guard holds its maximum of {limit} unexpired entries"),
                );
                return Err(self.deny(&ctx, record, denial).await);
            }
            NonceDecision::IdentityFull { limit } => {
                let denial = Denial::new(
                    Rule::GuardFull,
                    format!(
                        "identity {} holds its maximum of {limit} unexpired nonce-guard entries",
                        ctx.caller
                    ),
                );
                return Err(self.deny(&ctx, record, denial).await);
            }
        };
        if let Err(status) = self.record_signed(&ctx, &mut record).await {
            if reserved {
                self.guard
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .nonces
                    .release(&slot, entry.invocation_hash);
            }
            return Err(status);
        }
        let signature = self
            .sign_recorded(&ctx, &key, backend, &payload.hash, record)
            .await?;
        let signed = entry.signed(expiration, &key.public_key, &signature)?;
        Ok(Response::new(pb::SignAuthEntryResponse {
            signature: signature.to_vec(),
            signed_entry_xdr: crate::soroban::auth::to_xdr(&signed)?,
            preimage_xdr: payload.xdr,
            payload_hash: payload.hash.to_vec(),
        }))
    }

    async fn sign_message(
        &self,
        request: Request<pb::SignMessageRequest>,
    ) -> Result<Response<pb::SignMessageResponse>, Status> {
        let ctx = CallContext::of(&request, "SignMessage")?;
        let req = request.into_inner();
        let key_id = KeyId::parse(&req.key_id)?;
        let describe = || {
            let mut record = ctx.record(Some(key_id.as_str()));
            record.message_bytes = Some(req.message.len());
            record
        };
        self.admit(&ctx, Action::UseKey(&key_id), &key_id, describe, true)
            .await?;
        let (key, backend) = self.keyring.find(&key_id).await?;
        let mut record = describe();
        record.public_key = Some(key.public_key.account_id());
        let message = if self.policies.for_key(&key_id).signs_messages() {
            Message::parse(&req.message)
        } else {
            Err(Denial::new(
                Rule::Message,
                "this key does not sign SEP-53 messages",
            ))
        };
        let message = match message {
            Ok(message) => message,
            Err(denial) => return Err(self.deny(&ctx, record, denial).await),
        };
        let payload = message.payload();
        record.signed_hash = Some(hex::encode(payload));
        self.record_signed(&ctx, &mut record).await?;
        let signature = self
            .sign_recorded(&ctx, &key, backend, &payload, record)
            .await?;
        Ok(Response::new(pb::SignMessageResponse {
            signature: signature.to_vec(),
            hint: key.public_key.hint().to_vec(),
            payload_hash: payload.to_vec(),
        }))
    }

    async fn sign_hash(
        &self,
        request: Request<pb::SignHashRequest>,
    ) -> Result<Response<pb::SignHashResponse>, Status> {
        let ctx = CallContext::of(&request, "SignHash")?;
        let req = request.into_inner();
        let key_id = KeyId::parse(&req.key_id)?;
        let hash: [u8; 32] = req.hash.as_slice().try_into().map_err(|_| {
            Status::from(Error::InvalidArgument(format!(
                "hash must be 32 bytes, got {}",
                req.hash.len()
            )))
        })?;
        let record = || {
            let mut record = ctx.record(Some(key_id.as_str()));
            record.signed_hash = Some(hex::encode(hash));
            record
        };
        self.admit(&ctx, Action::BlindSign(&key_id), &key_id, record, true)
            .await?;
        let (key, backend) = self.keyring.find(&key_id).await?;
        let mut signed = record();
        signed.public_key = Some(key.public_key.account_id());
        self.record_signed(&ctx, &mut signed).await?;
        let signature = self
            .sign_recorded(&ctx, &key, backend, &hash, signed)
            .await?;
        tracing::warn!(request_id = %ctx.request_id, identity = %ctx.caller, key_id = %key_id, hash = %hex::encode(hash), "SignHash: blind signature issued");
        Ok(Response::new(pb::SignHashResponse {
            signature: signature.to_vec(),
            hint: key.public_key.hint().to_vec(),
        }))
    }
}
