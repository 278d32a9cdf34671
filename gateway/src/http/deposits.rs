//! `GET /v1/wallets/{wallet_id}/deposits`: the operations that credited a wallet, as the
//! deposit ingester recorded them (see [`crate::deposits`]).

use axum::Json;
use axum::extract::State;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use super::AppState;
use super::extract::{ApiPath, ApiQuery};
use super::users::{before_id, page_size};
use crate::error::{Error, ErrorBody, Result};
use crate::model::WalletId;
use crate::store::deposits::DepositRecord;

/// Paging of a wallet's deposits.
#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct ListDepositsQuery {
    /// Deposits older than this operation id (a page's `next_before`).
    #[param(pattern = "^[0-9]{1,19}$")]
    pub before: Option<String>,
    /// Page size (1..=500, default 100).
    #[param(minimum = 1, maximum = 500)]
    pub limit: Option<u32>,
}

/// One operation that credited a wallet.
#[derive(Debug, Serialize, ToSchema)]
pub struct Deposit {
    /// The operation id (Horizon's: ledger, transaction and operation index), decimal.
    #[schema(pattern = "^[0-9]{1,19}$")]
    pub id: String,
    /// The credited wallet.
    pub wallet_id: String,
    /// Its account.
    pub account: String,
    /// The id of the wallet's muxed (`M...`) address the operation paid, a u64 in decimal
    /// (a string: it overflows signed 64-bit integers); null when it paid the `G...` account.
    #[schema(pattern = "^[0-9]{1,20}$")]
    pub muxed_id: Option<String>,
    /// `payment`, `create_account`, `account_merge`, `path_payment_strict_receive`,
    /// `path_payment_strict_send` or `claim_claimable_balance`.
    pub kind: String,
    /// Who paid: the operation's source account; for a claimable balance claim, the account
    /// that created (sponsored) the balance.
    pub source_account: String,
    /// Amount received in stroops of the asset.
    pub amount_stroops: i64,
    /// The same with 7 decimals.
    pub amount: String,
    /// Asset code; absent for lumens.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub asset_code: Option<String>,
    /// Asset issuer; absent for lumens.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub asset_issuer: Option<String>,
    /// The transaction's memo (an id in decimal, a hash in hex).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub memo: Option<String>,
    /// `text`, `id`, `hash` or `return`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub memo_type: Option<String>,
    /// The ledger it applied in.
    pub ledger: i64,
    /// The transaction hash.
    pub tx_hash: String,
    /// When the gateway recorded it.
    #[schema(format = DateTime)]
    pub created_at: String,
}

impl From<DepositRecord> for Deposit {
    fn from(r: DepositRecord) -> Self {
        Deposit {
            id: r.operation_id.to_string(),
            wallet_id: r.wallet_id,
            account: r.account,
            muxed_id: r.muxed_id,
            kind: r.kind,
            source_account: r.source_account,
            amount: crate::payments::format_amount(r.amount_stroops),
            amount_stroops: r.amount_stroops,
            asset_code: r.asset_code,
            asset_issuer: r.asset_issuer,
            memo: r.memo,
            memo_type: r.memo_type,
            ledger: r.ledger,
            tx_hash: r.tx_hash,
            created_at: r.created_at,
        }
    }
}

/// A deposit in a `deposit.received` event (`amount` added in lumens by the dispatcher).
#[derive(Debug, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct DepositEventData {
    /// The operation id, decimal.
    pub id: String,
    /// The credited wallet.
    pub wallet_id: String,
    /// Its account.
    pub account: String,
    /// The muxed id paid (u64, decimal); null for the `G...` account.
    #[schema(pattern = "^[0-9]{1,20}$")]
    pub muxed_id: Option<String>,
    /// The operation type.
    pub kind: String,
    /// The operation's source account.
    pub source_account: String,
    /// Amount in stroops of the asset.
    pub amount_stroops: i64,
    /// The same with 7 decimals.
    pub amount: String,
    /// Asset code; null for lumens.
    pub asset_code: Option<String>,
    /// Asset issuer; null for lumens.
    pub asset_issuer: Option<String>,
    /// The transaction's memo.
    pub memo: Option<String>,
    /// The memo's type.
    pub memo_type: Option<String>,
    /// The ledger.
    pub ledger: i64,
    /// The transaction hash.
    pub tx_hash: String,
    /// When the gateway recorded it.
    pub created_at: String,
}

/// A page of deposits, newest first.
#[derive(Debug, Serialize, ToSchema)]
pub struct DepositPage {
    /// The deposits.
    pub deposits: Vec<Deposit>,
    /// Pass as `before` for the next page; absent on the last.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub next_before: Option<String>,
}

/// A wallet's deposits, newest first.
#[utoipa::path(
    get, path = "/v1/wallets/{wallet_id}/deposits", tag = "payments",
    params(("wallet_id" = String, Path, description = "A UUID"), ListDepositsQuery),
    responses(
        (status = 200, body = DepositPage),
        (status = 404, description = "WALLET_NOT_FOUND", body = ErrorBody),
    ),
    security(("bearer" = []))
)]
pub async fn list_wallet_deposits(
    State(state): State<AppState>,
    ApiPath(wallet_id): ApiPath<WalletId>,
    ApiQuery(query): ApiQuery<ListDepositsQuery>,
) -> Result<Json<DepositPage>> {
    state
        .store
        .wallet(wallet_id)
        .await?
        .ok_or_else(|| Error::WalletNotFound(format!("wallet {wallet_id} not found")))?;
    let limit = page_size(query.limit)?;
    let before = before_id(query.before.as_deref(), "an operation id")?;
    let records = state
        .store
        .deposits(&wallet_id.to_string(), before, i64::from(limit))
        .await?;
    let next_before = (records.len() == limit as usize)
        .then(|| records.last().map(|d| d.operation_id.to_string()))
        .flatten();
    Ok(Json(DepositPage {
        deposits: records.into_iter().map(Deposit::from).collect(),
        next_before,
    }))
}
