//! `exactly_once`: read a stream, update the application's own table, send derived messages to
//! another stream and commit the first, all in one transaction: each payment is counted once
//! and each receipt sent once, whatever crashes in between. On redb here (the same file holds
//! the application's table); on PostgreSQL the same loop uses `PgDriver::send_in` and
//! `PgDriver::commit_in` in a sqlx transaction (see the README).
//!
//! ```text
//! cargo run -p flowstream-examples --bin exactly_once
//! ```

use std::error::Error;
use std::sync::Arc;

use flowstream_core::{Consumer, Driver, NewMessage, Producer};
use flowstream_redb::RedbDriver;
use flowstream_redb::redb::{ReadableTable, TableDefinition};

/// The application's table: the total paid per customer.
const TOTALS: TableDefinition<'_, &str, u64> = TableDefinition::new("totals");

type BoxError = Box<dyn Error + Send + Sync>;

#[tokio::main]
async fn main() -> Result<(), BoxError> {
    let redb = RedbDriver::in_memory()?;
    let driver: Arc<dyn Driver> = Arc::new(redb.clone());
    let producer = Producer::new(driver.clone());
    for (customer, amount) in [("ada", 30), ("bob", 5), ("ada", 12)] {
        producer
            .send(NewMessage::new("payments", amount.to_string()).with_key(customer))
            .await?;
    }

    let mut consumer = Consumer::builder(driver.clone(), "payments", "accounting")
        .build()
        .await?;
    while let Some(payment) = consumer.next().await? {
        let customer = String::from_utf8(payment.key().unwrap_or_default().to_vec())?;
        let amount: u64 = payment.body_str().unwrap_or("0").parse()?;
        let receipt = producer
            .prepare([NewMessage::new(
                "receipts",
                format!("{customer} paid {amount}"),
            )])
            .await?;
        let commit = consumer.prepare_commit(&payment)?;
        // One redb write transaction: the total, the receipt and the commit past the payment.
        // If the process dies before it commits, none of them is stored and the payment is
        // delivered again; after it commits, all of them are, and it is not.
        let total = redb
            .write(move |tx| -> Result<u64, BoxError> {
                let mut totals = tx.open_table(TOTALS)?;
                let total = totals.get(customer.as_str())?.map_or(0, |t| t.value()) + amount;
                totals.insert(customer.as_str(), total)?;
                drop(totals);
                tx.send(receipt)?;
                tx.commit(&commit)?; // Err(Fenced) if another consumer took over: nothing kept
                Ok(total)
            })
            .await?;
        println!("payment {}: total now {total}", payment.offset());
    }

    for receipt in driver.read("receipts", 0, 10).await? {
        println!("receipt {}: {:?}", receipt.offset(), receipt.body_str());
    }
    consumer.shutdown().await?;
    Ok(())
}
