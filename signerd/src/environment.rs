//! Taking a secret out of the process environment once it has been read.
//!
//! `std::env::remove_var` is not enough, and not available here (`unsafe` in Rust 2024, and the
//! workspace forbids `unsafe`): it only unlinks the `environ` pointer, while the original
//! `NAME=VALUE` bytes stay in the block the kernel set up at `execve`. That block is what
//! `/proc/PID/environ` shows to anyone who may read the process's memory, and it stays in a core
//! dump. So the entry's bytes are overwritten with zeros in place, through `/proc/self/mem`: the
//! variable disappears from `/proc/PID/environ`, from `getenv`, and from memory.
//!
//! Called while signerd starts, before any other thread reads the environment.

use std::fs::OpenOptions;
use std::io::{Seek, SeekFrom, Write};

/// Overwrites every `name=...` entry of the initial environment with zeros. `Ok(false)` when
/// there was none (the variable was not inherited, so nothing of it is in that block).
pub fn erase_variable(name: &str) -> std::io::Result<bool> {
    let stat = std::fs::read_to_string("/proc/self/stat")?;
    let (start, end) = environment_bounds(&stat)
        .ok_or_else(|| std::io::Error::other("no env_start/env_end in /proc/self/stat"))?;
    let block = std::fs::read("/proc/self/environ")?;
    if block.len() as u64 != end.saturating_sub(start) {
        return Err(std::io::Error::other(
            "/proc/self/environ does not span env_start..env_end",
        ));
    }
    let prefix = format!("{name}=");
    let mut memory = OpenOptions::new().write(true).open("/proc/self/mem")?;
    let mut offset = 0u64;
    let mut erased = false;
    for entry in block.split(|b| *b == 0) {
        if entry.starts_with(prefix.as_bytes()) {
            memory.seek(SeekFrom::Start(start + offset))?;
            memory.write_all(&vec![0u8; entry.len()])?;
            erased = true;
        }
        offset += entry.len() as u64 + 1;
    }
    Ok(erased)
}

/// `env_start` and `env_end` from `/proc/self/stat` (fields 50 and 51, Linux 3.5 and later).
fn environment_bounds(stat: &str) -> Option<(u64, u64)> {
    // The command name (field 2) may contain spaces; fields are counted after its ')'.
    let (_, after_name) = stat.rsplit_once(')')?;
    let fields: Vec<&str> = after_name.split_whitespace().collect();
    // Field 3 (state) is fields[0], so field N is fields[N - 3].
    let start = fields.get(47)?.parse().ok()?;
    let end = fields.get(48)?.parse().ok()?;
    Some((start, end))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bounds_are_read_after_a_command_name_with_spaces() {
        let mut stat = String::from("42 (a b) S");
        for field in 4..=52 {
            stat.push_str(&format!(" {field}"));
        }
        assert_eq!(environment_bounds(&stat), Some((50, 51)));
        assert_eq!(environment_bounds("42 (x) S 1 2"), None);
    }

    #[test]
    fn a_variable_not_in_the_environment_is_reported_absent() {
        let erased =
            erase_variable("SIGNERD_TEST_CERTAINLY_NOT_SET_9F3A").unwrap_or_else(|e| panic!("{e}"));
        assert!(!erased);
    }
}
