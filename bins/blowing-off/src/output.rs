//! Printing: tables (tabled) or JSON (`--json`), to stdout; messages to stderr. Every
//! write goes through [`write_out`] or [`write_err`] (via `outln!`/`errln!`): a closed
//! pipe ends the process quietly with [`crate::exit::Exit::ClosedPipe`], never a panic.

use std::io::{self, Write};

use serde::Serialize;
use serde_json::Value;
use tabled::settings::Style;
use tabled::{Table, Tabled};

/// How results are printed.
#[derive(Clone, Copy, Debug)]
pub struct Out {
    /// JSON instead of tables.
    pub json: bool,
    /// No notes or progress on stderr.
    pub quiet: bool,
}

/// The width tables must fit: `COLUMNS` when set, else the terminal's; none when stdout
/// is not a terminal and `COLUMNS` is not set.
pub fn table_width() -> Option<usize> {
    use std::io::IsTerminal;
    if let Some(n) = std::env::var("COLUMNS")
        .ok()
        .and_then(|c| c.trim().parse::<usize>().ok())
        .filter(|n| *n > 0)
    {
        return Some(n);
    }
    if io::stdout().is_terminal() {
        terminal_size::terminal_size().map(|(w, _)| usize::from(w.0))
    } else {
        None
    }
}

/// The table style: box-drawing lines on a terminal, plain ASCII otherwise (a file, a
/// pipe, another program); wrapped to [`table_width`], the widest columns first.
fn styled(t: &mut Table) {
    use std::io::IsTerminal;
    use tabled::settings::{peaker::PriorityMax, Width};
    if io::stdout().is_terminal() {
        t.with(Style::sharp());
    } else {
        t.with(Style::psql());
    }
    if let Some(w) = table_width() {
        t.with(Width::wrap(w).priority(PriorityMax::right()));
    }
}

impl Out {
    /// A note for people on stderr (not with --quiet or --json).
    pub fn note(&self, args: std::fmt::Arguments<'_>) {
        if !self.quiet && !self.json {
            write_err(format_args!("{args}\n"));
        }
    }

    /// Prints a value as pretty JSON.
    pub fn json<T: Serialize + ?Sized>(&self, value: &T) -> anyhow::Result<()> {
        outln!("{}", serde_json::to_string_pretty(value)?);
        Ok(())
    }

    /// Prints rows as a table (or `empty` when there are none).
    pub fn table<R: Tabled>(&self, rows: Vec<R>, empty: &str) {
        if rows.is_empty() {
            outln!("{empty}");
        } else {
            let mut t = Table::new(rows);
            styled(&mut t);
            outln!("{t}");
        }
    }

    /// Prints key/value pairs as a two-column table.
    pub fn pairs(&self, pairs: Vec<(&str, String)>) {
        let rows: Vec<Pair> = pairs
            .into_iter()
            .map(|(k, v)| Pair {
                field: k.to_owned(),
                value: v,
            })
            .collect();
        let mut t = Table::new(rows);
        styled(&mut t);
        outln!("{t}");
    }
}

#[derive(Tabled)]
struct Pair {
    field: String,
    value: String,
}

/// A JSON object in one line, cut to `max` characters.
pub fn compact(v: &serde_json::Map<String, Value>, max: usize) -> String {
    let s = Value::Object(v.clone()).to_string();
    if s.chars().count() > max {
        let cut: String = s.chars().take(max.saturating_sub(1)).collect();
        format!("{cut}…")
    } else {
        s
    }
}

/// An optional value as text (`-` when absent).
pub fn opt<T: std::fmt::Display>(v: Option<T>) -> String {
    v.map_or_else(|| "-".to_owned(), |v| v.to_string())
}

/// Which standard stream a line goes to.
#[derive(Clone, Copy, Debug)]
enum Stream {
    Out,
    Err,
}

/// Writes formatted text to stdout (see [`write_to`]).
pub fn write_out(args: std::fmt::Arguments<'_>) {
    write_to(Stream::Out, args);
}

/// Writes formatted text to stderr (see [`write_to`]).
pub fn write_err(args: std::fmt::Arguments<'_>) {
    write_to(Stream::Err, args);
}

/// Writes and flushes. A closed pipe (the reader went away, as with `| head -1`) ends
/// the process at once with exit status 141, silently; any other failure to write
/// stdout ends it with an error on stderr (exit 1); stderr's other failures are ignored.
fn write_to(stream: Stream, args: std::fmt::Arguments<'_>) {
    let result = match stream {
        Stream::Out => {
            let mut w = io::stdout().lock();
            w.write_fmt(args).and_then(|()| w.flush())
        }
        Stream::Err => {
            let mut w = io::stderr().lock();
            w.write_fmt(args).and_then(|()| w.flush())
        }
    };
    match result {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::BrokenPipe => crate::exit::closed_pipe(),
        Err(e) => {
            if matches!(stream, Stream::Out) {
                write_err(format_args!("error: cannot write to stdout: {e}\n"));
                std::process::exit(crate::exit::Exit::Error as i32);
            }
        }
    }
}

/// Where log lines (tracing, `-v`) go: stderr, through [`LogWriter`].
#[derive(Clone, Copy, Debug, Default)]
pub struct LogOutput;

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for LogOutput {
    type Writer = LogWriter;

    fn make_writer(&'a self) -> Self::Writer {
        LogWriter
    }
}

/// Writes one log line to stderr from any thread (database workers log too): a closed
/// pipe ends the process with exit status 141 like any other write; other failures drop
/// the line. It never returns an error, so the log layer never reports (and panics on)
/// a failed write.
#[derive(Debug)]
pub struct LogWriter;

impl Write for LogWriter {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match io::stderr().lock().write_all(buf) {
            Err(e) if e.kind() == io::ErrorKind::BrokenPipe => crate::exit::closed_pipe(),
            _ => Ok(buf.len()),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        match io::stderr().lock().flush() {
            Err(e) if e.kind() == io::ErrorKind::BrokenPipe => crate::exit::closed_pipe(),
            _ => Ok(()),
        }
    }
}
