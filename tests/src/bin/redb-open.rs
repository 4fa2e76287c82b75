//! Test helper: opens a redb store in its own process.
//!
//! `redb-open PATH` opens the store, prints `opened` and keeps it open until its standard
//! input closes; on failure it prints `error: …` and exits with status 3.

// Test code: a failed expectation is how a test fails.
#![allow(clippy::expect_used)]

use std::io::Read;

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let Some(path) = std::env::args().nth(1) else {
        eprintln!("usage: redb-open PATH");
        std::process::exit(2);
    };
    match flowstream_redb::RedbDriver::open(&path).await {
        Ok(driver) => {
            println!("opened");
            let mut rest = Vec::new();
            let _ = std::io::stdin().read_to_end(&mut rest);
            drop(driver);
        }
        Err(error) => {
            println!("error: {error}");
            std::process::exit(3);
        }
    }
}
