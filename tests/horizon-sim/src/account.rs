//! Accounts: the key that names one ([`AccountKey`], parsed once from a `G...` address or an XDR
//! muxed account) and what the ledger keeps for it ([`AccountEntry`]).

use std::fmt;
use std::str::FromStr;

use stellar_xdr::{MuxedAccount, Uint256};

use crate::error::{Error, Result};

/// An account's Ed25519 public key, the identity the ledger files balances under.
///
/// Muxed (`M...`) accounts are views of a `G...` account: they resolve to the same key.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct AccountKey(pub [u8; 32]);

impl AccountKey {
    /// Parses a `G...` address (a muxed `M...` address is refused: Horizon's account endpoints
    /// take only account ids).
    pub fn parse(address: &str) -> Result<Self> {
        stellar_strkey::ed25519::PublicKey::from_string(address)
            .map(|key| AccountKey(key.0))
            .map_err(|_| Error::InvalidAccountId(address.chars().take(80).collect()))
    }

    /// The `G...` address.
    pub fn address(&self) -> String {
        stellar_strkey::ed25519::PublicKey(self.0)
            .to_string()
            .as_str()
            .to_owned()
    }

    /// The key as an unmultiplexed XDR account.
    pub fn to_muxed(self) -> MuxedAccount {
        MuxedAccount::Ed25519(Uint256(self.0))
    }

    /// The account a muxed XDR account belongs to.
    pub fn of_muxed(account: &MuxedAccount) -> Self {
        match account {
            MuxedAccount::Ed25519(key) => AccountKey(key.0),
            MuxedAccount::MuxedEd25519(muxed) => AccountKey(muxed.ed25519.0),
        }
    }

    /// The last four bytes of the key: the hint a signature made with it carries.
    pub fn signature_hint(&self) -> [u8; 4] {
        [self.0[28], self.0[29], self.0[30], self.0[31]]
    }
}

impl From<[u8; 32]> for AccountKey {
    fn from(key: [u8; 32]) -> Self {
        AccountKey(key)
    }
}

impl FromStr for AccountKey {
    type Err = Error;

    fn from_str(address: &str) -> Result<Self> {
        AccountKey::parse(address)
    }
}

impl fmt::Display for AccountKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.address())
    }
}

impl serde::Serialize for AccountKey {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.address())
    }
}

impl fmt::Debug for AccountKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "AccountKey({})", self.address())
    }
}

/// The `M...` address of a muxed XDR account, `None` for a plain one.
pub fn muxed_address(account: &MuxedAccount) -> Option<(String, u64)> {
    match account {
        MuxedAccount::Ed25519(_) => None,
        MuxedAccount::MuxedEd25519(muxed) => {
            let address = stellar_strkey::ed25519::MuxedAccount {
                ed25519: muxed.ed25519.0,
                id: muxed.id,
            }
            .to_string()
            .as_str()
            .to_owned();
            Some((address, muxed.id))
        }
    }
}

/// What the ledger holds for one account. Only the native balance exists here: no trustlines,
/// offers, data entries or extra signers, so the subentry count stays 0 and the master key
/// (weight 1, all thresholds 0) is the only signer. The claimable balances an account created
/// are sponsored by it: each claimant raises its reserve until the balance is claimed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AccountEntry {
    /// Native balance in stroops.
    pub balance: i64,
    /// The last sequence number used; the next transaction must carry this + 1.
    pub sequence: i64,
    /// Trustlines, offers, signers and data entries (always 0 here); each raises the reserve.
    pub subentry_count: u32,
    /// Entries this account sponsors (one per claimant of each claimable balance it created);
    /// each raises the reserve.
    pub num_sponsoring: u32,
    /// The ledger that last changed this entry.
    pub last_modified_ledger: u32,
    /// That ledger's close time (Unix seconds).
    pub last_modified_time: u64,
    /// The ledger and close time of the last sequence number bump, once there has been one
    /// (Stellar's `AccountEntryExtensionV3`; Horizon shows them as `sequence_ledger`/`_time`).
    pub sequence_bumped: Option<(u32, u64)>,
}

impl AccountEntry {
    /// A new account created in `ledger` (closed at `close_time`): Stellar starts its sequence at
    /// `ledger << 32` so that old transactions can never be replayed against it.
    pub fn created(balance: i64, ledger: u32, close_time: u64) -> Self {
        AccountEntry {
            balance,
            sequence: i64::from(ledger) << 32,
            subentry_count: 0,
            num_sponsoring: 0,
            last_modified_ledger: ledger,
            last_modified_time: close_time,
            sequence_bumped: None,
        }
    }

    /// The balance the account must keep: `(2 + subentries + sponsoring) × base reserve`.
    pub fn minimum_balance(&self, base_reserve: i64) -> i64 {
        (2 + i64::from(self.subentry_count) + i64::from(self.num_sponsoring))
            .saturating_mul(base_reserve)
    }

    /// What the account can spend without going under its minimum balance.
    pub fn available_balance(&self, base_reserve: i64) -> i64 {
        self.balance - self.minimum_balance(base_reserve)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_round_trip_and_muxed_resolve_to_their_account() {
        let key = AccountKey([9; 32]);
        let address = key.address();
        assert!(address.starts_with('G'));
        assert_eq!(
            AccountKey::parse(&address).unwrap_or_else(|e| panic!("{e}")),
            key
        );

        let muxed = MuxedAccount::MuxedEd25519(stellar_xdr::MuxedAccountMed25519 {
            id: 42,
            ed25519: Uint256([9; 32]),
        });
        assert_eq!(AccountKey::of_muxed(&muxed), key);
        let (m_address, id) = muxed_address(&muxed).unwrap_or_else(|| panic!("muxed"));
        assert!(m_address.starts_with('M'));
        assert_eq!(id, 42);
        assert!(
            AccountKey::parse(&m_address).is_err(),
            "M... is not an account id"
        );
        assert!(AccountKey::parse("GABC").is_err());
    }

    #[test]
    fn new_accounts_start_their_sequence_at_the_ledger_shifted_32_bits() {
        let entry = AccountEntry::created(10, 7, 1_700_000_000);
        assert_eq!(entry.sequence, 7 << 32);
        assert_eq!(entry.minimum_balance(5_000_000), 10_000_000);
        assert_eq!(entry.available_balance(5_000_000), 10 - 10_000_000);
    }
}
