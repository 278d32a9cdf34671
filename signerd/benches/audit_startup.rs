//! Start-up time and memory against the length of the audit log.
//!
//! ```text
//! cargo bench -p signerd --bench audit_startup -- [--records 100000,1000000,10000000]
//! ```
//!
//! For each size: a release `signerd` starts on a fresh SoftHSM token and stops (audit key,
//! anchor, a sealed log); the bench appends that many chained `signed` SignTransaction records
//! (about 600 bytes each, like real ones, long expired so the guard stays small) in 64 MiB files.
//! Then it starts signerd twice and reports, per start, the time until it listens and its peak
//! memory (VmHWM):
//!
//! - *catch-up*: the records are after the anchored checkpoint, so this start reads them all
//!   (what every start cost before start-up began from the anchored checkpoint);
//! - *steady*: the previous stop anchored a final checkpoint with its guard snapshot, so this
//!   start reads nothing before it; the bench also waits for the background check of the
//!   history and reports how long it took and the peak memory after it.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use signer_testkit::{SignerdOptions, SignerdProcess};
use signerd::audit::chain;
use signerd::audit::reader;
use signerd::audit::writer::file_name;

const ROTATE_BYTES: u64 = 64 * 1024 * 1024;

fn parse_sizes() -> Vec<u64> {
    let mut sizes = vec![100_000, 1_000_000];
    let mut args = std::env::args().skip(1);
    while let Some(flag) = args.next() {
        if flag == "--records"
            && let Some(list) = args.next()
        {
            sizes = list
                .split(',')
                .filter_map(|n| n.trim().parse().ok())
                .collect();
        }
        // cargo bench passes --bench; anything else is ignored.
    }
    sizes
}

fn main() -> anyhow::Result<()> {
    let sizes = parse_sizes();
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()?
        .block_on(async {
            for records in sizes {
                run(records).await?;
            }
            Ok(())
        })
}

async fn run(records: u64) -> anyhow::Result<()> {
    let mut signerd = SignerdProcess::start(SignerdOptions {
        binary: Some(PathBuf::from(env!("CARGO_BIN_EXE_signerd"))),
        ready_timeout: Some(Duration::from_secs(3600)),
        ..Default::default()
    })
    .await?;
    signerd.terminate().await?;
    let dir = signerd.audit_dir();
    let written = Instant::now();
    let bytes = append_history(&dir, records)?;
    println!(
        "{records} records appended ({:.1} GB) in {:.1} s",
        bytes as f64 / 1e9,
        written.elapsed().as_secs_f64()
    );

    let (catch_up, catch_up_peak) = timed_launch(&mut signerd).await?;
    signerd.terminate().await?;
    let checks_before = history_lines(&signerd.log()).count();
    let (steady, steady_peak) = timed_launch(&mut signerd).await?;
    let history = wait_for_history_check(&signerd, checks_before).await?;
    let after_history_peak = peak_rss_mib(signerd.pid());
    signerd.terminate().await?;
    println!(
        "  catch-up start (reads all {records}): {:>7.3} s to listening, peak {catch_up_peak:.0} MiB",
        catch_up.as_secs_f64()
    );
    println!(
        "  steady start (from the anchored checkpoint): {:>7.3} s to listening, peak {steady_peak:.0} MiB",
        steady.as_secs_f64()
    );
    println!("  background history check: {history}, peak {after_history_peak:.0} MiB after it");
    Ok(())
}

/// Appends `records` chained decision records after the log's head; returns bytes written.
fn append_history(dir: &Path, records: u64) -> anyhow::Result<u64> {
    let files = reader::log_files(dir)?;
    let summary = reader::walk(&files, &Default::default(), |_, _| {})?;
    let mut index = files.len() as u64;
    let (mut seq, mut prev) = (summary.head_seq, summary.head_hash);
    let mut file = std::fs::OpenOptions::new()
        .append(true)
        .open(dir.join(file_name(index)))?;
    let mut size = file.metadata()?.len();
    let mut total = 0u64;
    let mut buffer = String::with_capacity(8 << 20);
    for n in 0..records {
        seq += 1;
        let members = format!(
            concat!(
                r#""kind":"decision","time":"2026-11-21T09:08:24.707Z","request_id":"payment-{n}","#,
                r#""identity":"gateway","rpc":"SignTransaction","key_id":"wallet-{w}","#,
                r#""public_key":"GAAZI4TCR3TY5OJHCTJC2A4QSY6CJWJH5IAJTGKIN2ER7LBNVKOCCWN7","#,
                r#""network":"Test SDF Network ; September 2015","tx_hash":"{h:064x}","#,
                r#""signed_hash":"{h:064x}","source_account":"GAAZI4TCR3TY5OJHCTJC2A4QSY6CJWJH5IAJTGKIN2ER7LBNVKOCCWN7","#,
                r#""sequence":"{n}","max_time":1700000000,"operations":[{{"type":"payment","#,
                r#""destination":"GA7QYNF7SOWQ3GLR2BGMZEHXAVIRZA4KVWLTJJFC7MGXUA74P7UJVSGZ","#,
                r#""asset":"native","amount":"12.5000000"}}],"decision":"signed""#
            ),
            n = n,
            w = n % 1000,
            h = u128::from(n.wrapping_mul(0x9e37_79b9_7f4a_7c15))
        );
        let (line, hash) = chain::seal(seq, &prev, &members);
        prev = hash;
        if size + (buffer.len() + line.len()) as u64 > ROTATE_BYTES {
            file.write_all(buffer.as_bytes())?;
            total += buffer.len() as u64;
            buffer.clear();
            file.sync_all()?;
            index += 1;
            file = std::fs::OpenOptions::new()
                .append(true)
                .create_new(true)
                .open(dir.join(file_name(index)))?;
            size = 0;
        }
        size += line.len() as u64;
        buffer.push_str(&line);
        if buffer.len() >= 4 << 20 {
            file.write_all(buffer.as_bytes())?;
            total += buffer.len() as u64;
            buffer.clear();
        }
    }
    file.write_all(buffer.as_bytes())?;
    total += buffer.len() as u64;
    file.sync_all()?;
    Ok(total)
}

async fn timed_launch(signerd: &mut SignerdProcess) -> anyhow::Result<(Duration, f64)> {
    let started = Instant::now();
    signerd.launch().await?;
    Ok((started.elapsed(), peak_rss_mib(signerd.pid())))
}

fn history_lines(log: &str) -> impl Iterator<Item = &str> {
    log.lines().filter(|l| l.contains("audit history"))
}

/// Waits for the log line of this start's background history check (the log already held
/// `before` such lines from earlier starts); returns it, shortened.
async fn wait_for_history_check(signerd: &SignerdProcess, before: usize) -> anyhow::Result<String> {
    let started = Instant::now();
    loop {
        let log = signerd.log();
        if let Some(line) = history_lines(&log).nth(before) {
            // The text log colours `seconds=`: drop escape sequences, then take the value.
            let mut plain = String::new();
            let mut in_escape = false;
            for c in line.chars() {
                match (in_escape, c) {
                    (false, '\u{1b}') => in_escape = true,
                    (true, 'm') => in_escape = false,
                    (false, c) => plain.push(c),
                    (true, _) => {}
                }
            }
            let seconds: String = plain
                .split("seconds=")
                .nth(1)
                .unwrap_or_default()
                .chars()
                .take_while(|c| c.is_ascii_digit() || *c == '.')
                .collect();
            let ok = line.contains("verified");
            return Ok(format!(
                "{} in {seconds} s",
                if ok { "verified" } else { "FAILED" }
            ));
        }
        if started.elapsed() > Duration::from_secs(3600) {
            anyhow::bail!("no history check result after an hour");
        }
        // Polls a file another process writes; no event to wait on.
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// VmHWM (peak resident memory) of `pid`, MiB.
fn peak_rss_mib(pid: Option<u32>) -> f64 {
    let Some(pid) = pid else {
        return f64::NAN;
    };
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|status| {
            status.lines().find_map(|l| {
                l.strip_prefix("VmHWM:")?
                    .trim()
                    .strip_suffix("kB")?
                    .trim()
                    .parse::<f64>()
                    .ok()
            })
        })
        .map_or(f64::NAN, |kb| kb / 1024.0)
}
