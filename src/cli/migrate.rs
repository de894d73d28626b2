//! `herald migrate`: moves an install from its SQLite file to a PostgreSQL
//! database, then proves the copy by counting every table on both sides.

use anyhow::bail;

use crate::store::masked_url;
use crate::store::migrate::{copy_sqlite_to_postgres, MigrateReport};

#[derive(Debug, clap::Args)]
#[command(after_help = "\
Only SQLite to PostgreSQL is supported (not the reverse). Stop Herald before \
migrating: the copy is a snapshot, and rows written afterwards are not in it \
(the counts would then differ). The SQLite file is only read and stays as it \
was. Exit 0 when every table has the same row count on both sides, 1 otherwise.")]
pub struct MigrateArgs {
    /// The SQLite store to copy, e.g. sqlite://herald.db.
    #[arg(long, value_name = "SQLITE_URL")]
    from: String,
    /// The PostgreSQL database to copy into, e.g.
    /// postgres://herald@db.internal:5432/herald (its schema is created
    /// or upgraded first).
    #[arg(long, value_name = "POSTGRES_URL")]
    to: String,
    /// Delete the Herald data the target already holds, in the copy's own
    /// transaction (a failed copy deletes nothing). Without it a target
    /// with any Herald rows is refused.
    #[arg(long)]
    force: bool,
}

pub async fn run(args: MigrateArgs) -> anyhow::Result<()> {
    if !args.from.starts_with("sqlite:") {
        bail!(
            "--from `{}`: give the SQLite store to copy (sqlite://PATH); only SQLite to PostgreSQL is supported",
            masked_url(&args.from)
        );
    }
    if !(args.to.starts_with("postgres://") || args.to.starts_with("postgresql://")) {
        bail!(
            "--to `{}`: give the PostgreSQL database to copy into (postgres://USER@HOST:PORT/DATABASE)",
            masked_url(&args.to)
        );
    }
    let report = copy_sqlite_to_postgres(&args.from, &args.to, args.force).await?;
    print!("{}", count_table(&report));
    let differ: Vec<&str> = report.mismatches().iter().map(|c| c.table).collect();
    if !differ.is_empty() {
        bail!(
            "row counts differ in {} (was Herald still writing to the SQLite store?)",
            differ.join(", ")
        );
    }
    println!("copied to {}: every count matches", masked_url(&args.to));
    Ok(())
}

/// The counts, one table a line, aligned.
fn count_table(report: &MigrateReport) -> String {
    let mut text = format!("{:<24}{:>12}{:>12}\n", "table", "sqlite", "postgres");
    for count in &report.counts {
        let mark = if count.source == count.target {
            ""
        } else {
            "  DIFFERS"
        };
        text += &format!(
            "{:<24}{:>12}{:>12}{mark}\n",
            count.table, count.source, count.target
        );
    }
    text
}
