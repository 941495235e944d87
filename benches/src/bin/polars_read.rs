//! Reference for the ingestion benchmark: a plain Polars read-and-collect of a Parquet file,
//! every column, with the same Polars build mtrec uses.

use polars::prelude::*;

// The same allocator as the mtrec binary, so the comparison is of the work, not the allocator.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> PolarsResult<()> {
    let path = std::env::args().nth(1).expect("usage: polars_read FILE.parquet");
    let df = LazyFrame::scan_parquet(PlRefPath::new(path.as_str()), ScanArgsParquet::default())?.collect()?;
    println!("{} rows, {} columns", df.height(), df.width());
    Ok(())
}
