//! Reference for the ingestion benchmark: a plain Polars read-and-collect of a Parquet file,
//! every column, with the same Polars build mtrec uses.

use polars::prelude::*;

fn main() -> PolarsResult<()> {
    let path = std::env::args().nth(1).expect("usage: polars_read FILE.parquet");
    let df = LazyFrame::scan_parquet(PlRefPath::new(path.as_str()), ScanArgsParquet::default())?.collect()?;
    println!("{} rows, {} columns", df.height(), df.width());
    Ok(())
}
