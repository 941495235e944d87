//! Reference for the ingestion benchmark: a plain Polars scan-and-collect of a Parquet file on
//! the streaming engine, every column, with the same Polars build mtrec uses.

use polars::prelude::*;

// The same allocator as the mtrec binary, so the comparison is of the work, not the allocator.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> PolarsResult<()> {
    let path = std::env::args().nth(1).expect("usage: polars_read FILE.parquet");
    let df = LazyFrame::scan_parquet(PlRefPath::new(path.as_str()), ScanArgsParquet::default())?
        .collect_with_engine(Engine::Streaming)?
        .unwrap_single();
    println!("{} rows, {} columns", df.height(), df.width());
    Ok(())
}
