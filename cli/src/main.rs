//! `flowstream`: produce to, tail and look inside flowstream streams, on PostgreSQL or in a
//! redb file, as `kafka-console-producer`, `kafka-console-consumer` and
//! `kafka-consumer-groups` do for Kafka.
//!
//! ```text
//! flowstream --store postgres://app@db/app produce orders < orders.jsonl
//! flowstream --store app.redb tail orders --from 15m --group audit
//! flowstream --store app.redb groups orders
//! ```
//!
//! Every command takes `--store` (or `FLOWSTREAM_STORE`); `--help` lists the rest. Exit
//! codes: 0 done, 1 the store failed, 2 bad usage or input, 3 not found.

mod args;
mod manage;
mod output;
mod place;
mod produce;
mod store;
mod tail;

use std::process::ExitCode;

use clap::Parser;
use flowstream_core::Admin;

use args::{Cli, Command};
use store::{Access, Failure};

fn main() -> ExitCode {
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("flowstream: cannot start: {error}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(cli)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(failure) => {
            eprintln!("flowstream: {failure}");
            failure.exit_code()
        }
    }
}

async fn run(cli: Cli) -> Result<(), Failure> {
    let access = match &cli.command {
        Command::Streams { .. } | Command::Groups { .. } => Access::Read,
        Command::Tail { group: None, .. } => Access::Read,
        Command::Retention {
            max_messages: None,
            max_age: None,
            keep_unconsumed: false,
            clear: false,
            apply: false,
            ..
        } => Access::Read,
        _ => Access::Write,
    };
    let driver = store::open(cli.store.as_deref(), &cli.schema, access).await?;
    let admin = Admin::new(driver.clone());
    match cli.command {
        Command::Produce {
            stream,
            json,
            batch,
            key,
            partition,
        } => {
            let routing = produce::Routing { key, partition };
            produce::run(driver, &stream, json, batch as usize, routing).await
        }
        Command::Tail {
            stream,
            from,
            group,
            exit_at_head,
            count,
            json,
        } => {
            let tail = tail::Tail {
                stream,
                from: from.0,
                exit_at_head,
                count,
                json,
            };
            match group {
                Some(group) => tail::in_group(driver, tail, &group).await,
                None => tail::alone(driver, tail).await,
            }
        }
        Command::Streams { json } => manage::streams(&admin, json).await,
        Command::Groups { stream, json } => manage::groups(&admin, &stream, json).await,
        Command::Reset {
            stream,
            group,
            to,
            partition,
        } => manage::reset(&admin, &stream, &group, to.0, partition).await,
        Command::Trim { stream, through } => manage::trim(&admin, &stream, through).await,
        Command::Delete { stream, yes } => manage::delete(&admin, &stream, yes).await,
        Command::Retention {
            stream,
            max_messages,
            max_age,
            keep_unconsumed,
            clear,
            apply,
            json,
        } => {
            let change = manage::RetentionChange {
                max_messages,
                max_age,
                keep_unconsumed,
                clear,
                apply,
                json,
            };
            manage::retention(&admin, &stream, change).await
        }
        Command::Replay { stream, group } => manage::replay(&admin, &stream, &group).await,
    }
}
