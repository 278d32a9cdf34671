//! Amounts: the ledger counts stroops (i64); Horizon shows lumens with exactly seven decimals.

/// Stroops in one lumen (XLM).
pub const STROOPS_PER_XLM: i64 = 10_000_000;

/// Every lumen there is, in stroops: the root account's balance at genesis (100 billion XLM).
pub const TOTAL_SUPPLY: i64 = 100_000_000_000 * STROOPS_PER_XLM;

/// Formats stroops the way Horizon does: `"100.0000000"`.
pub fn format_stroops(stroops: i64) -> String {
    let sign = if stroops < 0 { "-" } else { "" };
    let magnitude = stroops.unsigned_abs();
    let per = STROOPS_PER_XLM.unsigned_abs();
    format!("{sign}{}.{:07}", magnitude / per, magnitude % per)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seven_decimals_always() {
        assert_eq!(format_stroops(0), "0.0000000");
        assert_eq!(format_stroops(1), "0.0000001");
        assert_eq!(format_stroops(100 * STROOPS_PER_XLM), "100.0000000");
        assert_eq!(format_stroops(12_345_678_901), "1234.5678901");
        assert_eq!(format_stroops(-5), "-0.0000005");
        assert_eq!(format_stroops(i64::MIN), "-922337203685.4775808");
    }
}
