//! `GET /v1/wallets/{wallet_id}/history`: a wallet's money in both directions, its outgoing
//! payments and its deposits, in the one order the gateway recorded them (newest first; see
//! [`crate::store::history`] for why the cursor never skips nor repeats an entry).

use axum::Json;
use axum::extract::State;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use super::AppState;
use super::extract::{ApiPath, ApiQuery};
use super::users::{before_id, page_size};
use crate::error::{Error, ErrorBody, Result};
use crate::model::WalletId;
use crate::payments::PaymentStatus;
use crate::store::history::{Direction, HistoryEntry};

/// Paging of a wallet's history.
#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct ListHistoryQuery {
    /// Entries older than this one (a page's `next_before`).
    #[param(pattern = "^[0-9]{1,19}$")]
    pub before: Option<String>,
    /// Page size (1..=500, default 100).
    #[param(minimum = 1, maximum = 500)]
    pub limit: Option<u32>,
}

/// Which way the money went.
#[derive(Clone, Copy, Debug, Serialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum HistoryDirection {
    /// A deposit: the wallet was credited.
    In,
    /// A payment the wallet sent.
    Out,
}

/// One movement of a wallet's money.
#[derive(Debug, Serialize, ToSchema)]
pub struct HistoryItem {
    /// Its place in the wallet's history, decimal (pass as `before` to page on).
    #[schema(pattern = "^[0-9]{1,19}$")]
    pub id: String,
    /// `in` (a deposit) or `out` (a payment).
    pub direction: HistoryDirection,
    /// The payment (`GET /v1/payments/{id}`); null for a deposit.
    #[schema(pattern = "^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")]
    pub payment_id: Option<String>,
    /// The deposit's id (an operation id, decimal); null for a payment.
    #[schema(pattern = "^[0-9]{1,19}$")]
    pub deposit_id: Option<String>,
    /// A payment's current status; null for a deposit (applied, always).
    pub status: Option<PaymentStatus>,
    /// `payment` for a payment; a deposit's operation type (`payment`, `create_account`,
    /// `account_merge`, `path_payment_strict_receive`, `path_payment_strict_send`,
    /// `claim_claimable_balance`).
    pub kind: String,
    /// The other side: a payment's destination as given; who paid a deposit.
    pub counterparty: String,
    /// Amount in stroops of the asset.
    pub amount_stroops: i64,
    /// The same with 7 decimals.
    pub amount: String,
    /// Asset code; null for lumens.
    pub asset_code: Option<String>,
    /// Asset issuer; null for lumens.
    pub asset_issuer: Option<String>,
    /// The memo.
    pub memo: Option<String>,
    /// The muxed id a deposit was sent to (u64, decimal); null otherwise.
    #[schema(pattern = "^[0-9]{1,20}$")]
    pub muxed_id: Option<String>,
    /// The transaction hash, once there is one.
    pub tx_hash: Option<String>,
    /// The ledger, once applied.
    pub ledger: Option<i64>,
    /// When the gateway recorded it (accepted the payment, recorded the deposit).
    #[schema(format = DateTime)]
    pub created_at: String,
}

impl HistoryItem {
    fn from_entry(e: HistoryEntry) -> Result<Self> {
        Ok(HistoryItem {
            id: e.id.to_string(),
            direction: match e.direction {
                Direction::In => HistoryDirection::In,
                Direction::Out => HistoryDirection::Out,
            },
            payment_id: e.payment_id,
            deposit_id: e.deposit_id.map(|id| id.to_string()),
            status: e.status.as_deref().map(PaymentStatus::parse).transpose()?,
            kind: e.kind,
            counterparty: e.counterparty,
            amount: crate::payments::format_amount(e.amount_stroops),
            amount_stroops: e.amount_stroops,
            asset_code: e.asset_code,
            asset_issuer: e.asset_issuer,
            memo: e.memo,
            muxed_id: e.muxed_id,
            tx_hash: e.tx_hash,
            ledger: e.ledger,
            created_at: e.created_at,
        })
    }
}

/// A page of a wallet's history, newest first.
#[derive(Debug, Serialize, ToSchema)]
pub struct HistoryPage {
    /// The entries.
    pub entries: Vec<HistoryItem>,
    /// Pass as `before` for the next (older) page; absent on the last.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(pattern = "^[0-9]{1,19}$")]
    pub next_before: Option<String>,
}

/// A wallet's payments and deposits in one order, newest first.
#[utoipa::path(
    get, path = "/v1/wallets/{wallet_id}/history", tag = "payments",
    params(("wallet_id" = String, Path, description = "A UUID"), ListHistoryQuery),
    responses(
        (status = 200, body = HistoryPage),
        (status = 400, description = "VALIDATION_FAILED: a bad wallet id, `before` or `limit`", body = ErrorBody),
        (status = 404, description = "WALLET_NOT_FOUND", body = ErrorBody),
    ),
    security(("bearer" = []))
)]
pub async fn list_wallet_history(
    State(state): State<AppState>,
    ApiPath(wallet_id): ApiPath<WalletId>,
    ApiQuery(query): ApiQuery<ListHistoryQuery>,
) -> Result<Json<HistoryPage>> {
    state
        .store
        .wallet(wallet_id)
        .await?
        .ok_or_else(|| Error::WalletNotFound(format!("wallet {wallet_id} not found")))?;
    let limit = page_size(query.limit)?;
    let before = before_id(query.before.as_deref(), "a history entry id")?;
    let entries = state
        .store
        .wallet_history(&wallet_id.to_string(), before, i64::from(limit))
        .await?;
    let next_before = (entries.len() == limit as usize)
        .then(|| entries.last().map(|e| e.id.to_string()))
        .flatten();
    Ok(Json(HistoryPage {
        entries: entries
            .into_iter()
            .map(HistoryItem::from_entry)
            .collect::<Result<_>>()?,
        next_before,
    }))
}
