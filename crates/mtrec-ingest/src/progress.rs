//! A progress bar of rows for the stages that stream data (ingestion, prediction, evaluation):
//! rows done, rows per second and, when the total is known, the time left. Drawn on stderr, and
//! only on a terminal.

/// A progress bar on stderr, or nothing.
#[derive(Debug)]
pub struct Progress(Option<indicatif::ProgressBar>);

impl Progress {
    pub fn new(show: bool, what: &str, total: Option<u64>) -> Self {
        Progress(show.then(|| {
            let (bar, template) = match total {
                Some(n) => (
                    indicatif::ProgressBar::new(n),
                    "{prefix} [{bar:30}] {human_pos}/{human_len} rows, {per_sec}, {eta} left",
                ),
                None => (indicatif::ProgressBar::no_length(), "{prefix} {human_pos} rows, {per_sec}, {elapsed}"),
            };
            bar.set_style(
                indicatif::ProgressStyle::with_template(template).expect("a valid template").progress_chars("=> "),
            );
            bar.set_prefix(what.to_owned());
            bar
        }))
    }

    pub fn advance(&self, rows: usize) {
        if let Some(bar) = &self.0 {
            bar.inc(rows as u64);
        }
    }

    pub fn finish(&self) {
        if let Some(bar) = &self.0 {
            bar.finish_and_clear();
        }
    }
}
