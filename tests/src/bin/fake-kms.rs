//! `fake-kms`: the fake Google Cloud KMS as a program, for the local stack and manual runs.
//!
//! ```text
//! fake-kms [--listen 127.0.0.1:8085] [--latency-ms 0]
//! ```
//!
//! Prints `fake-kms listening on ADDR` once ready; serves until SIGTERM or Ctrl-C. Faults are
//! set through the control API (`POST /control/fault` `{"fault": "unavailable", "count": 3}`,
//! `DELETE /control/fault`, `POST /control/latency` `{"ms": 20}`, `GET /control/calls`).
//! Point signerd at it with `endpoint = "http://ADDR"` and `credentials = "anonymous"`.

use std::net::SocketAddr;
use std::time::Duration;

use anyhow::{Context, bail};
use signer_testkit::fake_kms::FakeKms;

fn main() -> anyhow::Result<()> {
    let mut listen: SocketAddr = ([127, 0, 0, 1], 8085).into();
    let mut latency_ms = 0u64;
    let mut args = std::env::args().skip(1);
    while let Some(flag) = args.next() {
        let value = args
            .next()
            .with_context(|| format!("{flag} needs a value"))?;
        match flag.as_str() {
            "--listen" => listen = value.parse().context("--listen")?,
            "--latency-ms" => latency_ms = value.parse().context("--latency-ms")?,
            other => bail!("unknown flag {other} (known: --listen, --latency-ms)"),
        }
    }
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()?
        .block_on(async {
            let kms = FakeKms::start_on(listen).await?;
            kms.set_latency(Duration::from_millis(latency_ms));
            println!("fake-kms listening on {}", kms.addr());
            let mut terminate =
                tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
            tokio::select! {
                _ = terminate.recv() => {}
                _ = tokio::signal::ctrl_c() => {}
            }
            Ok(())
        })
}
