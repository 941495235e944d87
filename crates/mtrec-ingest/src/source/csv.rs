//! Reading a CSV file (plain or gzip) in chunks of whole records, each parsed by Polars with
//! every column as text: numbers are parsed by mtrec itself, so that a bad cell is reported
//! with its row and column, and exactly as serving parses JSON. Memory holds one chunk of text
//! and its frame, whatever the file's size.

use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};

use mtrec_schema::CsvOptions;
use polars::prelude::*;

use crate::error::IngestError;

/// The frames of a CSV file, chunk by chunk, in order; every column is text.
pub(crate) struct CsvChunks {
    path: PathBuf,
    reader: Box<dyn Read + Send>,
    gzip: bool,
    options: CsvOptions,
    /// Text read but not yet parsed: it starts at a record boundary.
    pending: Vec<u8>,
    /// Column names, known after the first chunk (from the header or `options.columns`).
    names: Option<Vec<String>>,
    at_end: bool,
    chunk_bytes: usize,
}

impl CsvChunks {
    /// Opens a CSV file whose chunks end at the first record boundary after `chunk_bytes`.
    pub(crate) fn open(path: &Path, options: &CsvOptions, chunk_bytes: usize) -> Result<Self, IngestError> {
        let file = std::fs::File::open(path).map_err(|e| IngestError::read(path, e))?;
        let mut buffered = BufReader::with_capacity(1 << 20, file);
        let gzip = buffered.fill_buf().map_err(|e| IngestError::read(path, e))?.starts_with(&[0x1f, 0x8b]);
        let reader: Box<dyn Read + Send> =
            if gzip { Box::new(flate2::read::MultiGzDecoder::new(buffered)) } else { Box::new(buffered) };
        Ok(Self {
            path: path.to_owned(),
            reader,
            gzip,
            options: options.clone(),
            pending: Vec::new(),
            names: None,
            at_end: false,
            chunk_bytes: chunk_bytes.max(1),
        })
    }

    /// Reads until `pending` holds at least one chunk's bytes and a record boundary after
    /// them, or the file ends; returns where the chunk ends (0 once everything is parsed).
    fn fill(&mut self) -> Result<usize, IngestError> {
        let mut scanned = 0;
        let mut in_quotes = false;
        loop {
            // Scan what is new for the first record end at or after `chunk_bytes`: a newline
            // outside quotes (a doubled quote inside a quoted field toggles twice, so parity
            // is enough).
            for (i, &b) in self.pending[scanned..].iter().enumerate() {
                match b {
                    b'"' => in_quotes = !in_quotes,
                    b'\n' if !in_quotes && scanned + i + 1 >= self.chunk_bytes => return Ok(scanned + i + 1),
                    _ => {}
                }
            }
            scanned = self.pending.len();
            if self.at_end {
                return Ok(self.pending.len());
            }
            let start = self.pending.len();
            self.pending.resize(start + (1 << 20), 0);
            let read = self.reader.read(&mut self.pending[start..]);
            let read = match read {
                Ok(n) => n,
                Err(e) => {
                    self.pending.truncate(start);
                    let reason = if self.gzip { format!("corrupt or truncated gzip data: {e}") } else { e.to_string() };
                    return Err(IngestError::read(&self.path, reason));
                }
            };
            self.pending.truncate(start + read);
            if read == 0 {
                self.at_end = true;
            }
        }
    }

    fn parse(&mut self, text: Vec<u8>) -> Result<DataFrame, IngestError> {
        let first = self.names.is_none();
        let separator = self.options.delimiter.as_bytes()[0];
        let mut read = CsvReadOptions::default()
            .with_has_header(first && self.options.has_header)
            .with_infer_schema_length(Some(0))
            .with_raise_if_empty(false)
            .with_parse_options(CsvParseOptions::default().with_separator(separator).with_missing_is_null(false));
        if let Some(names) = &self.names {
            let schema: Schema = names.iter().map(|n| Field::new(n.as_str().into(), DataType::String)).collect();
            read = read.with_schema(Some(Arc::new(schema)));
        }
        let mut df =
            read.into_reader_with_file_handle(std::io::Cursor::new(text)).finish().map_err(|e| self.error(e))?;
        match (&self.options.columns, &self.names) {
            (Some(names), _) if names.len() != df.width() => {
                return Err(self.error(format!(
                    "source.csv.columns names {} columns but the file has {}",
                    names.len(),
                    df.width()
                )));
            }
            (Some(names), None) => df.set_column_names(names.as_slice()).map_err(|e| self.error(e))?,
            _ => {}
        }
        if first {
            self.names = Some(df.get_column_names().iter().map(|n| n.to_string()).collect());
        }
        Ok(df)
    }

    fn error(&self, reason: impl Into<crate::error::BoxedError>) -> IngestError {
        IngestError::read(&self.path, reason)
    }
}

/// The column names on the header line of a CSV file (plain or gzip), without reading on.
pub(crate) fn header(path: &Path, options: &CsvOptions) -> Result<Vec<String>, IngestError> {
    let mut chunks = CsvChunks::open(path, options, 1)?;
    let end = chunks.fill()?;
    let line = String::from_utf8_lossy(&chunks.pending[..end]);
    if line.trim().is_empty() {
        return Err(IngestError::EmptyFile { path: path.to_owned() });
    }
    Ok(line
        .trim_end_matches(['\n', '\r'])
        .split(options.delimiter.as_str())
        .map(|c| c.trim().trim_matches('"').to_owned())
        .collect())
}

impl Iterator for CsvChunks {
    type Item = Result<DataFrame, IngestError>;

    /// The next chunk with rows; `None` at the end of the file (a file without data rows
    /// yields none: the caller says it is empty).
    fn next(&mut self) -> Option<Self::Item> {
        loop {
            let end = match self.fill() {
                Ok(end) => end,
                Err(e) => return Some(Err(e)),
            };
            if end == 0 {
                return None;
            }
            let rest = self.pending.split_off(end);
            let text = std::mem::replace(&mut self.pending, rest);
            if text.iter().all(u8::is_ascii_whitespace) {
                continue;
            }
            match self.parse(text) {
                // The header alone.
                Ok(df) if df.height() == 0 => continue,
                other => return Some(other),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chunks(text: &str, chunk_bytes: usize) -> Vec<DataFrame> {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a.csv");
        std::fs::write(&path, text).unwrap();
        let options = CsvOptions::default();
        CsvChunks::open(&path, &options, chunk_bytes).unwrap().map(Result::unwrap).collect()
    }

    fn column(frames: &[DataFrame], name: &str) -> Vec<Option<String>> {
        frames
            .iter()
            .flat_map(|df| {
                df.column(name).unwrap().str().unwrap().iter().map(|v| v.map(str::to_owned)).collect::<Vec<_>>()
            })
            .collect()
    }

    #[test]
    fn chunks_end_on_record_boundaries_even_inside_quoted_newlines() {
        let text = "a,b\n1,\"x\ny\"\n2,\"q \"\"z\"\"\"\n3,w\n4,v";
        for chunk_bytes in [1, 5, 9, 1 << 20] {
            let frames = chunks(text, chunk_bytes);
            assert_eq!(column(&frames, "a"), ["1", "2", "3", "4"].map(|s| Some(s.to_owned())), "{chunk_bytes}");
            assert_eq!(column(&frames, "b")[0].as_deref(), Some("x\ny"));
            assert_eq!(column(&frames, "b")[1].as_deref(), Some("q \"z\""));
            if chunk_bytes == 1 {
                assert_eq!(frames.len(), 4, "one record per chunk");
            }
        }
    }

    #[test]
    fn gzip_is_read_as_it_streams() {
        use std::io::Write;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a.csv.gz");
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        gz.write_all(b"a\n1\n2\n3\n").unwrap();
        std::fs::write(&path, gz.finish().unwrap()).unwrap();
        let frames: Vec<DataFrame> =
            CsvChunks::open(&path, &CsvOptions::default(), 2).unwrap().map(Result::unwrap).collect();
        assert_eq!(column(&frames, "a").len(), 3);
    }

    #[test]
    fn a_file_without_data_rows_yields_nothing() {
        assert!(chunks(" \n\n", 1 << 20).is_empty());
        assert!(chunks("a,b\n", 1).is_empty());
    }
}
