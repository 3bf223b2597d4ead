//! What the CLIs print on standard output, written as a Unix tool writes it: when the reader
//! has gone (`sportello operator queue | head -1`), the command ends at once and quietly, with
//! status 0, rather than panicking in `println!` (`failed printing to stdout: Broken pipe`,
//! status 101). Rust ignores SIGPIPE, and restoring its default would take `unsafe`, which the
//! workspace forbids; so the broken pipe is handled where the line is written.

use std::io::Write as _;

/// Writes one line to standard output (what `println!` does, without its panic).
pub fn line(args: std::fmt::Arguments<'_>) {
    let mut out = std::io::stdout().lock();
    let written = out.write_fmt(args).and_then(|()| out.write_all(b"\n"));
    if let Err(e) = written {
        if e.kind() == std::io::ErrorKind::BrokenPipe {
            std::process::exit(0);
        }
        let _ = writeln!(std::io::stderr(), "sportello: writing to standard output: {e}");
        std::process::exit(1);
    }
}

/// `println!` for the CLIs' output: see the module's documentation.
macro_rules! outln {
    () => {
        $crate::stdout::line(format_args!(""))
    };
    ($($arg:tt)*) => {
        $crate::stdout::line(format_args!($($arg)*))
    };
}
pub(crate) use outln;
