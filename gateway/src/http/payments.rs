//! Payments: `POST /v1/payments` accepts (202, `CREATED`) and the worker does the rest; reads of
//! one payment (with its status history) and of a wallet's payments; a wallet's balance from
//! Horizon; friendbot funding on test networks; admin daily-limit overrides.

use axum::Extension;
use axum::Json;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use super::AppState;
use super::extract::{ApiJson, ApiPath, ApiQuery};
use super::idempotency::{IDEMPOTENCY_KEY_HEADER, REPLAYED_HEADER, request_hash};
use super::users::page_size;
use crate::api_key::Caller;
use crate::error::{Error, ErrorBody, Result};
use crate::model::{IdempotencyKey, PaymentId, RequestId, WalletId};
use crate::network::{Network, ResultCodes};
use crate::payments::{DestinationAccount, MemoText, PaymentStatus, Stroops, format_amount};
use crate::store::{
    Accepted, DailyLimits, KeyedPayment, NewPayment, PaymentEvent, PaymentRecord, Resolution,
    WalletRecord,
};

/// A payment request.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreatePaymentRequest {
    /// The paying wallet's id.
    #[schema(
        format = "uuid",
        pattern = "^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$"
    )]
    pub source_wallet_id: String,
    /// A wallet id, a `G...` account or an `M...` muxed account.
    #[schema(
        pattern = "^([0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}|G[A-Z2-7]{55}|M[A-Z2-7]{68})$"
    )]
    pub destination: String,
    /// Lumens as a decimal string with at most 7 decimal places, greater than zero, e.g.
    /// `"12.5"`.
    #[schema(pattern = r"^[0-9]{1,12}(\.[0-9]{1,7})?$")]
    pub amount: String,
    /// Only `native` (the default) is supported.
    #[serde(default)]
    #[schema(pattern = "^native$")]
    pub asset: Option<String>,
    /// An optional text memo, at most 28 bytes of UTF-8 (`maxLength` bounds the characters;
    /// text outside ASCII reaches the byte limit sooner).
    #[serde(default)]
    #[schema(max_length = 28, pattern = "^[^\\u0000]*$")]
    pub memo: Option<String>,
}

/// The answer to an accepted payment.
#[derive(Debug, Serialize, ToSchema)]
pub struct PaymentAccepted {
    /// The payment id.
    #[schema(value_type = String)]
    pub id: PaymentId,
    /// Always `CREATED` on acceptance (a replay shows the current status).
    pub status: PaymentStatus,
}

/// A payment as the API shows it.
#[derive(Debug, Serialize, ToSchema)]
pub struct Payment {
    /// Id.
    #[schema(value_type = String)]
    pub id: PaymentId,
    /// Current status.
    pub status: PaymentStatus,
    /// The paying wallet.
    #[schema(value_type = String)]
    pub source_wallet_id: WalletId,
    /// The destination as given.
    pub destination: String,
    /// The destination account.
    pub destination_account: String,
    /// Amount in lumens (7 decimals).
    pub amount: String,
    /// Amount in stroops.
    pub amount_stroops: i64,
    /// Memo.
    pub memo: Option<String>,
    /// The hash of the current (or final) transaction.
    pub tx_hash: Option<String>,
    /// Its sequence number.
    pub sequence: Option<i64>,
    /// The ledger it was applied in.
    pub ledger: Option<i64>,
    /// Fee in stroops (charged, once applied).
    pub fee_stroops: Option<i64>,
    /// Horizon's result codes, on failure.
    #[schema(value_type = Option<Object>)]
    pub result_codes: Option<ResultCodes>,
    /// Why it failed.
    pub failure_reason: Option<String>,
    /// Submissions so far.
    pub attempts: i64,
    /// Accepted at.
    pub created_at: String,
    /// Last change.
    pub updated_at: String,
    /// Every status change, oldest first (only on `GET /v1/payments/{id}`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub history: Option<Vec<PaymentEvent>>,
}

impl Payment {
    fn from_record(p: PaymentRecord, history: Option<Vec<PaymentEvent>>) -> Self {
        Payment {
            id: p.id,
            status: p.status,
            source_wallet_id: p.source_wallet_id,
            destination: p.destination,
            destination_account: p.destination_account,
            amount: format_amount(p.amount.get()),
            amount_stroops: p.amount.get(),
            memo: p.memo,
            tx_hash: p.tx_hash,
            sequence: p.sequence,
            ledger: p.ledger,
            fee_stroops: p.fee_stroops,
            result_codes: p.result_codes,
            failure_reason: p.failure_reason,
            attempts: p.attempts,
            created_at: p.created_at.as_str().to_owned(),
            updated_at: p.updated_at.as_str().to_owned(),
            history,
        }
    }
}

/// A page of payments, newest first.
#[derive(Debug, Serialize, ToSchema)]
pub struct PaymentPage {
    /// The payments.
    pub payments: Vec<Payment>,
    /// Pass as `before` for the next (older) page; absent on the last page.
    #[schema(value_type = Option<String>)]
    pub next_before: Option<PaymentId>,
}

/// Paging of a wallet's payments.
#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct ListPaymentsQuery {
    /// Payments older than this id.
    #[param(
        format = "uuid",
        pattern = "^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$"
    )]
    pub before: Option<String>,
    /// Page size (1..=500, default 100).
    #[param(minimum = 1, maximum = 500)]
    pub limit: Option<u32>,
}

/// A wallet's balance on the network.
#[derive(Debug, Serialize, ToSchema)]
pub struct Balance {
    /// The wallet.
    #[schema(value_type = String)]
    pub wallet_id: WalletId,
    /// Its account.
    pub account_id: String,
    /// Native balance in lumens (7 decimals); `0.0000000` when the account does not exist.
    pub balance: String,
    /// Native balance in stroops.
    pub balance_stroops: i64,
    /// Whether the account exists on the network.
    pub exists: bool,
    /// Its sequence number.
    pub sequence: Option<String>,
}

/// The result of a friendbot request.
#[derive(Debug, Serialize, ToSchema)]
pub struct Funded {
    /// The wallet.
    #[schema(value_type = String)]
    pub wallet_id: WalletId,
    /// Its account.
    pub account_id: String,
    /// False when the account already existed (friendbot funds once).
    pub funded: bool,
}

/// Admin override of a wallet's daily limits; `null` resets a field to the configured default.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SetLimitsRequest {
    /// Payments per UTC day.
    #[schema(minimum = 0)]
    pub daily_count: Option<i64>,
    /// Lumens per UTC day, as a decimal string with at most 7 decimal places.
    #[schema(pattern = r"^[0-9]{1,12}(\.[0-9]{1,7})?$")]
    pub daily_amount: Option<String>,
}

/// Accepts a payment. Returns at once with `CREATED`; the worker signs and submits it.
///
/// The `Idempotency-Key` is kept on the payment itself (unique per API key, with the request's
/// hash) instead of in the generic claim table: accepting is then one transaction. The same key
/// with the same request answers the same payment (with its current status and
/// `Idempotent-Replayed: true`), also when the request would now be refused (a frozen wallet, a
/// reached limit); with a different request, 422 `IDEMPOTENCY_CONFLICT`. Two requests racing on
/// one key are decided by the unique index: one inserts, the other replays.
#[utoipa::path(
    post, path = "/v1/payments", tag = "payments",
    params(("Idempotency-Key" = String, Header)),
    request_body = CreatePaymentRequest,
    responses(
        (status = 202, description = "Accepted", body = PaymentAccepted),
        (status = 400, description = "VALIDATION_FAILED", body = ErrorBody),
        (status = 404, description = "WALLET_NOT_FOUND", body = ErrorBody),
        (status = 409, description = "USER_BLOCKED, WALLET_FROZEN or NETWORK_NOT_CONFIGURED", body = ErrorBody),
        (status = 422, description = "LIMIT_EXCEEDED or IDEMPOTENCY_CONFLICT", body = ErrorBody),
    ),
    security(("bearer" = []))
)]
pub async fn create_payment(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    headers: HeaderMap,
    ApiJson(body): ApiJson<CreatePaymentRequest>,
) -> Result<Response> {
    if state.network.is_none() {
        return Err(Error::NetworkNotConfigured(
            "payments need a [network] section in the gateway config",
        ));
    }
    let idempotency_key = headers
        .get(IDEMPOTENCY_KEY_HEADER)
        .and_then(|v| v.to_str().ok())
        .ok_or_else(|| Error::Validation("the Idempotency-Key header is required".into()))
        .and_then(IdempotencyKey::parse)?;
    let request_hash = body.request_hash();
    let (payment, replayed) =
        match accept_payment(&state, &caller, &idempotency_key, &request_hash, &body).await {
            Ok(Accepted::Created(p)) => (p, false),
            Ok(Accepted::Existing(p)) => (p, true),
            // A refused request may be the replay of one accepted earlier (the wallet frozen,
            // the limit reached since): the earlier answer wins. Only refusals pay this read.
            Err(refused) => match state
                .store
                .payment_by_idempotency_key(caller.key_id, &idempotency_key, &request_hash)
                .await
            {
                Ok(Some(KeyedPayment::Replay(p))) => (*p, true),
                Ok(Some(KeyedPayment::Conflict)) => {
                    return Err(Error::IdempotencyConflict(
                        "this Idempotency-Key was already used with a different request".into(),
                    ));
                }
                Ok(None) | Err(_) => return Err(refused),
            },
        };
    let mut response = (
        StatusCode::ACCEPTED,
        Json(PaymentAccepted {
            id: payment.id,
            status: payment.status,
        }),
    )
        .into_response();
    if replayed {
        response
            .headers_mut()
            .insert(REPLAYED_HEADER, HeaderValue::from_static("true"));
    }
    Ok(response)
}

impl CreatePaymentRequest {
    /// What binds an Idempotency-Key to this request: the parsed fields, so that the same
    /// request spelled with other whitespace or key order is the same request.
    fn request_hash(&self) -> String {
        let canonical = serde_json::json!([
            self.source_wallet_id,
            self.destination,
            self.amount,
            self.asset,
            self.memo,
        ]);
        request_hash(
            &Method::POST,
            "/v1/payments",
            canonical.to_string().as_bytes(),
        )
    }
}

async fn accept_payment(
    state: &AppState,
    caller: &Caller,
    idempotency_key: &IdempotencyKey,
    request_hash: &str,
    body: &CreatePaymentRequest,
) -> Result<Accepted> {
    let source_wallet_id = WalletId::parse(&body.source_wallet_id)
        .map_err(|_| Error::Validation("source_wallet_id must be a wallet id (UUID)".into()))?;
    let amount = Stroops::parse(&body.amount)?;
    if let Some(asset) = &body.asset
        && asset != "native"
    {
        return Err(Error::Validation(
            "only the native asset (lumens) is supported".into(),
        ));
    }
    let memo = body.memo.as_deref().map(MemoText::parse).transpose()?;
    let (source, owner_blocked) = state
        .store
        .wallet_with_owner_blocked(source_wallet_id)
        .await?
        .filter(|(w, _)| w.public_key.is_some())
        .ok_or_else(|| Error::WalletNotFound(format!("wallet {source_wallet_id} not found")))?;
    if owner_blocked {
        return Err(Error::UserBlocked(source.user_id));
    }
    if source.is_frozen() {
        return Err(Error::WalletFrozen(source.id));
    }
    let destination = if body.destination.len() == 36 && body.destination.contains('-') {
        let id = WalletId::parse(&body.destination)?;
        let wallet = complete_wallet(state, id).await?;
        let key = wallet
            .public_key
            .ok_or_else(|| Error::WalletNotFound(format!("wallet {id} not found")))?;
        DestinationAccount::Account(key)
    } else {
        DestinationAccount::parse(&body.destination)?
    };
    if let (DestinationAccount::Account(to), Some(from)) = (&destination, &source.public_key)
        && to == from
    {
        return Err(Error::Validation(
            "destination is the source wallet itself".into(),
        ));
    }
    let id = PaymentId::generate();
    let accepted = state
        .store
        .accept_payment(
            &NewPayment {
                id,
                api_key_id: caller.key_id,
                idempotency_key,
                request_hash,
                source_wallet_id,
                destination: &body.destination,
                destination_account: destination.as_str(),
                amount,
                memo: memo.as_ref().map(MemoText::as_str),
            },
            state.payment_limits,
        )
        .await?;
    if let Accepted::Created(p) = &accepted {
        state.payment_wake.accepted(source_wallet_id);
        tracing::info!(payment_id = %p.id, wallet_id = %source_wallet_id, amount = p.amount.get(), "payment accepted");
    }
    Ok(accepted)
}

async fn complete_wallet(state: &AppState, id: WalletId) -> Result<WalletRecord> {
    state
        .store
        .wallet(id)
        .await?
        .filter(|w| w.public_key.is_some())
        .ok_or_else(|| Error::WalletNotFound(format!("wallet {id} not found")))
}

/// One payment with its status history.
#[utoipa::path(
    get, path = "/v1/payments/{payment_id}", tag = "payments",
    params(("payment_id" = String, Path, description = "A UUID")),
    responses(
        (status = 200, body = Payment),
        (status = 404, description = "PAYMENT_NOT_FOUND", body = ErrorBody),
    ),
    security(("bearer" = []))
)]
pub async fn get_payment(
    State(state): State<AppState>,
    ApiPath(id): ApiPath<PaymentId>,
) -> Result<Json<Payment>> {
    let payment = state
        .store
        .payment(id)
        .await?
        .ok_or(Error::PaymentNotFound(id))?;
    let history = state.store.payment_events(id).await?;
    Ok(Json(Payment::from_record(payment, Some(history))))
}

/// A wallet's payments, newest first.
#[utoipa::path(
    get, path = "/v1/wallets/{wallet_id}/payments", tag = "payments",
    params(("wallet_id" = String, Path, description = "A UUID"), ListPaymentsQuery),
    responses(
        (status = 200, body = PaymentPage),
        (status = 404, description = "WALLET_NOT_FOUND", body = ErrorBody),
    ),
    security(("bearer" = []))
)]
pub async fn list_wallet_payments(
    State(state): State<AppState>,
    ApiPath(wallet_id): ApiPath<WalletId>,
    ApiQuery(query): ApiQuery<ListPaymentsQuery>,
) -> Result<Json<PaymentPage>> {
    complete_wallet(&state, wallet_id).await?;
    let limit = page_size(query.limit)?;
    let before = query.before.as_deref().map(PaymentId::parse).transpose()?;
    let records = state
        .store
        .wallet_payments(wallet_id, before, i64::from(limit))
        .await?;
    let next_before = (records.len() == limit as usize)
        .then(|| records.last().map(|p| p.id))
        .flatten();
    Ok(Json(PaymentPage {
        payments: records
            .into_iter()
            .map(|p| Payment::from_record(p, None))
            .collect(),
        next_before,
    }))
}

fn network(state: &AppState) -> Result<&dyn Network> {
    state.network.as_deref().ok_or(Error::NetworkNotConfigured(
        "no [network] section in the gateway config",
    ))
}

/// A wallet's native balance, read from the network (Horizon or RPC).
#[utoipa::path(
    get, path = "/v1/wallets/{wallet_id}/balance", tag = "payments",
    params(("wallet_id" = String, Path, description = "A UUID")),
    responses(
        (status = 200, body = Balance),
        (status = 404, description = "WALLET_NOT_FOUND", body = ErrorBody),
        (status = 409, description = "NETWORK_NOT_CONFIGURED", body = ErrorBody),
        (status = 503, description = "NETWORK_UNAVAILABLE", body = ErrorBody),
    ),
    security(("bearer" = []))
)]
pub async fn get_balance(
    State(state): State<AppState>,
    ApiPath(wallet_id): ApiPath<WalletId>,
) -> Result<Json<Balance>> {
    let wallet = complete_wallet(&state, wallet_id).await?;
    let account_id = wallet.public_key.map(|k| k.to_string()).unwrap_or_default();
    let account = network(&state)?
        .account(&account_id)
        .await
        .map_err(|e| Error::NetworkUnavailable(e.to_string()))?;
    let stroops = account.as_ref().map_or(0, |a| a.native_balance_stroops);
    Ok(Json(Balance {
        wallet_id,
        account_id,
        balance: format_amount(stroops),
        balance_stroops: stroops,
        exists: account.is_some(),
        sequence: account.map(|a| a.sequence.to_string()),
    }))
}

/// Funds the wallet's account through friendbot (test networks only).
#[utoipa::path(
    post, path = "/v1/wallets/{wallet_id}/fund", tag = "payments",
    params(("wallet_id" = String, Path, description = "A UUID"), ("Idempotency-Key" = String, Header)),
    responses(
        (status = 200, body = Funded),
        (status = 404, description = "WALLET_NOT_FOUND", body = ErrorBody),
        (status = 409, description = "NETWORK_NOT_CONFIGURED (or not a test network)", body = ErrorBody),
        (status = 503, description = "NETWORK_UNAVAILABLE", body = ErrorBody),
    ),
    security(("bearer" = []))
)]
pub async fn fund_wallet(
    State(state): State<AppState>,
    ApiPath(wallet_id): ApiPath<WalletId>,
) -> Result<Json<Funded>> {
    let network = network(&state)?;
    if !state.test_network {
        return Err(Error::NetworkNotConfigured(
            "friendbot exists only on test networks",
        ));
    }
    let wallet = complete_wallet(&state, wallet_id).await?;
    let account_id = wallet.public_key.map(|k| k.to_string()).unwrap_or_default();
    let funded = network
        .friendbot(&account_id)
        .await
        .map_err(|e| Error::NetworkUnavailable(e.to_string()))?;
    Ok(Json(Funded {
        wallet_id,
        account_id,
        funded,
    }))
}

/// The daily limits that apply to a wallet (admin).
#[utoipa::path(
    get, path = "/v1/wallets/{wallet_id}/limits", tag = "admin",
    params(("wallet_id" = String, Path, description = "A UUID")),
    responses((status = 200, body = DailyLimits), (status = 404, description = "WALLET_NOT_FOUND", body = ErrorBody)),
    security(("bearer" = []))
)]
pub async fn get_limits(
    State(state): State<AppState>,
    ApiPath(wallet_id): ApiPath<WalletId>,
) -> Result<Json<DailyLimits>> {
    complete_wallet(&state, wallet_id).await?;
    Ok(Json(
        state
            .store
            .wallet_limits(wallet_id, state.payment_limits)
            .await?,
    ))
}

/// Overrides a wallet's daily limits (admin); recorded as the audit event `wallet.limits_set`
/// with the overrides before and after.
#[utoipa::path(
    post, path = "/v1/wallets/{wallet_id}/limits", tag = "admin",
    params(("wallet_id" = String, Path, description = "A UUID"), ("Idempotency-Key" = String, Header)),
    request_body = SetLimitsRequest,
    responses((status = 200, body = DailyLimits), (status = 404, description = "WALLET_NOT_FOUND", body = ErrorBody)),
    security(("bearer" = []))
)]
pub async fn set_limits(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    Extension(request_id): Extension<RequestId>,
    ApiPath(wallet_id): ApiPath<WalletId>,
    ApiJson(body): ApiJson<SetLimitsRequest>,
) -> Result<Json<DailyLimits>> {
    complete_wallet(&state, wallet_id).await?;
    if body.daily_count.is_some_and(|c| c < 0) {
        return Err(Error::Validation("daily_count must not be negative".into()));
    }
    let amount = match body.daily_amount.as_deref() {
        Some(raw) => Some(
            crate::payments::parse_amount(raw)
                .ok_or_else(|| Error::Validation("daily_amount must be a decimal string".into()))?,
        ),
        None => None,
    };
    state
        .store
        .set_wallet_limits(
            wallet_id,
            body.daily_count,
            amount,
            &super::audit_context(&caller, &request_id),
        )
        .await?;
    tracing::info!(%wallet_id, daily_count = ?body.daily_count, daily_amount = ?amount, "wallet limits set");
    Ok(Json(
        state
            .store
            .wallet_limits(wallet_id, state.payment_limits)
            .await?,
    ))
}

/// An operator's decision on a `NEEDS_ATTENTION` payment.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ResolvePaymentRequest {
    /// `SUCCESS`: one of its transactions applied (found by other means); `FAILED`: none did;
    /// `REBUILD`: none did and it is to be paid still, on a new sequence number.
    pub resolution: Resolution,
    /// Why, for the payment's history (1 to 500 characters).
    #[schema(min_length = 1, max_length = 500, pattern = r"^\S(.*\S)?$")]
    pub reason: String,
}

/// Settles a payment parked as `NEEDS_ATTENTION` (admin). Its sequence number was spent and
/// Horizon could not show by which transaction; the operator, having looked (an archive, a
/// full-history Horizon, the other signer), decides.
#[utoipa::path(
    post, path = "/v1/payments/{payment_id}/resolve", tag = "admin",
    params(("payment_id" = String, Path, description = "A UUID"), ("Idempotency-Key" = String, Header)),
    request_body = ResolvePaymentRequest,
    responses(
        (status = 200, description = "The payment, now SUCCESS, FAILED or CREATED (REBUILD)", body = Payment),
        (status = 400, description = "VALIDATION_FAILED", body = ErrorBody),
        (status = 401, description = "UNAUTHORIZED", body = ErrorBody),
        (status = 403, description = "FORBIDDEN (not an admin key)", body = ErrorBody),
        (status = 404, description = "PAYMENT_NOT_FOUND", body = ErrorBody),
        (status = 409, description = "PAYMENT_NOT_NEEDING_ATTENTION", body = ErrorBody),
    ),
    security(("bearer" = []))
)]
pub async fn resolve_payment(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    Extension(request_id): Extension<RequestId>,
    ApiPath(id): ApiPath<PaymentId>,
    ApiJson(body): ApiJson<ResolvePaymentRequest>,
) -> Result<Json<Payment>> {
    let reason = crate::model::Reason::parse(&body.reason)?;
    let payment = state
        .store
        .payment(id)
        .await?
        .ok_or(Error::PaymentNotFound(id))?;
    if !state
        .store
        .resolve_payment(
            id,
            body.resolution,
            reason.as_str(),
            &super::audit_context(&caller, &request_id),
        )
        .await?
    {
        return Err(Error::PaymentNotNeedingAttention(id));
    }
    tracing::warn!(payment_id = %id, resolution = ?body.resolution, reason = reason.as_str(), "payment resolved by an operator");
    if body.resolution == Resolution::Rebuild {
        state.payment_wake.accepted(payment.source_wallet_id);
    }
    let payment = state
        .store
        .payment(id)
        .await?
        .ok_or(Error::PaymentNotFound(id))?;
    let history = state.store.payment_events(id).await?;
    Ok(Json(Payment::from_record(payment, Some(history))))
}

/// The configured defaults as [`DailyLimits`].
pub fn default_limits(config: &crate::config::PaymentsConfig) -> DailyLimits {
    DailyLimits {
        daily_count: config.daily_count,
        daily_amount_stroops: config.daily_amount_stroops,
    }
}
