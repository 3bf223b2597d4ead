//! A CSV file read as one RFC 4180 document however it arrives: fed chunk by chunk (the import
//! streams of gRPC), parsed by `csv-core`'s incremental reader, so a quoted cell holding a
//! newline or a quote reads the same wherever the chunks fall. Every physical line of the file
//! is accounted for: in a row (with the line it starts on), or among the unreadable lines of a
//! quote never closed.

use csv_core::{ReadRecordResult, Reader, ReaderBuilder, Terminator};

/// The longest row kept, in bytes: a longer one (or a quote left open to the end of the file)
/// is reported, not held in memory.
pub const MAX_ROW_BYTES: usize = 4 << 20;

/// What the reader found.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Item {
    /// A row starting on `line` (1-based) and spanning `lines` physical lines, at `bytes` of the
    /// file (its newline included); its cells, or why they cannot be read.
    Row {
        line: i64,
        lines: i64,
        bytes: std::ops::Range<u64>,
        cells: Result<Vec<String>, Unreadable>,
    },
    /// A quote opened on `line` and never closed: the `lines` lines from there to the end of
    /// the file are no row.
    UnclosedQuote { line: i64, lines: i64 },
}

/// Why a row's cells cannot be read.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Unreadable {
    NotUtf8,
    TooLong,
}

/// The incremental reader: [`CsvStream::feed`] each chunk, then [`CsvStream::finish`].
pub struct CsvStream {
    reader: Reader,
    output: Vec<u8>,
    ends: Vec<usize>,
    /// Bytes of the row so far in `output`, and field ends in `ends`.
    out_len: usize,
    ends_len: usize,
    /// Newlines inside the current row's cells (quoted newlines), and whether its data was
    /// dropped for length.
    row_newlines: i64,
    too_long: bool,
    /// Quote characters read since the current row began: odd at the end of the file means a
    /// quote never closed.
    quotes: usize,
    /// Newlines read so far, and whether the last byte read was one.
    newlines: i64,
    ends_in_newline: bool,
    /// Bytes read so far; where the last row ended, and on which line.
    consumed: u64,
    last_end: u64,
    last_line: i64,
    /// The file's first bytes while they may still be the start of a byte-order mark: csv-core
    /// drops a BOM only when its first read sees all three bytes, and a stream may cut anywhere.
    head: Vec<u8>,
}

/// The UTF-8 byte-order mark spreadsheets write at the start of a CSV file.
const BOM: &[u8] = b"\xef\xbb\xbf";

impl std::fmt::Debug for CsvStream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CsvStream").field("newlines", &self.newlines).finish_non_exhaustive()
    }
}

impl Default for CsvStream {
    fn default() -> Self {
        Self::new()
    }
}

impl CsvStream {
    pub fn new() -> Self {
        Self {
            // `\n` alone ends a row: a `\r` before it stays in the last cell, which is trimmed.
            reader: ReaderBuilder::new().terminator(Terminator::Any(b'\n')).build(),
            output: vec![0; 4096],
            ends: vec![0; 32],
            out_len: 0,
            ends_len: 0,
            row_newlines: 0,
            too_long: false,
            quotes: 0,
            newlines: 0,
            ends_in_newline: false,
            consumed: 0,
            last_end: 0,
            last_line: 0,
            head: Vec::new(),
        }
    }

    /// Reads `chunk`, pushing the rows it completes onto `out`.
    pub fn feed(&mut self, chunk: &[u8], out: &mut Vec<Item>) {
        if self.consumed == 0 && !chunk.is_empty() {
            let head = [self.head.as_slice(), chunk].concat();
            if head.len() < BOM.len() && BOM.starts_with(&head) {
                self.head = head;
                return;
            }
            self.head.clear();
            return self.read(&head, out);
        }
        self.read(chunk, out);
    }

    fn read(&mut self, chunk: &[u8], out: &mut Vec<Item>) {
        let mut input = chunk;
        while !input.is_empty() {
            let (result, nin) = self.step(input);
            let read = &input[..nin];
            self.quotes += read.iter().filter(|b| **b == b'"').count();
            self.newlines += count_newlines(read);
            self.ends_in_newline = read.last().map_or(self.ends_in_newline, |b| *b == b'\n');
            self.consumed += nin as u64;
            input = &input[nin..];
            if result == ReadRecordResult::Record {
                let terminated = read.last() == Some(&b'\n');
                out.push(self.row(terminated));
            }
        }
    }

    /// The end of the file: pushes the last row, if it had no newline after it, onto `out`.
    pub fn finish(&mut self, out: &mut Vec<Item>) {
        let head = std::mem::take(&mut self.head);
        self.read(&head, out);
        loop {
            match self.step(&[]).0 {
                ReadRecordResult::Record => {
                    if self.quotes % 2 == 1 {
                        let inside =
                            self.row_newlines + count_newlines(&self.output[..self.out_len]);
                        let line = self.newlines - inside + 1;
                        let last =
                            if self.ends_in_newline { self.newlines } else { self.newlines + 1 };
                        out.push(Item::UnclosedQuote { line, lines: last - line + 1 });
                        self.clear();
                    } else {
                        out.push(self.row(false));
                    }
                }
                ReadRecordResult::End => return,
                // Growing buffers at the end: read again.
                _ => {}
            }
        }
    }

    /// One call of the reader, growing the buffers it fills (up to [`MAX_ROW_BYTES`], past
    /// which the row's data is dropped and the row reported too long).
    fn step(&mut self, input: &[u8]) -> (ReadRecordResult, usize) {
        let (result, nin, nout, nend) = self.reader.read_record(
            input,
            &mut self.output[self.out_len..],
            &mut self.ends[self.ends_len..],
        );
        self.out_len += nout;
        self.ends_len += nend;
        match result {
            ReadRecordResult::OutputFull => {
                if self.output.len() >= MAX_ROW_BYTES {
                    self.row_newlines += count_newlines(&self.output[..self.out_len]);
                    // Field ends point into the dropped data: keep counting from zero.
                    self.too_long = true;
                    self.out_len = 0;
                    self.ends_len = 0;
                } else {
                    let doubled = self.output.len() * 2;
                    self.output.resize(doubled, 0);
                }
            }
            ReadRecordResult::OutputEndsFull => {
                let doubled = self.ends.len() * 2;
                self.ends.resize(doubled, 0);
            }
            _ => {}
        }
        (result, nin)
    }

    /// The row just completed; `terminated` when its newline was read.
    fn row(&mut self, terminated: bool) -> Item {
        let data = &self.output[..self.out_len];
        let lines = self.row_newlines + count_newlines(data) + 1;
        let last = if terminated { self.newlines } else { self.newlines + 1 };
        let cells = if self.too_long {
            Err(Unreadable::TooLong)
        } else {
            let mut start = 0;
            self.ends[..self.ends_len]
                .iter()
                .map(|&end| {
                    let cell = std::str::from_utf8(&data[start..end]).map(str::to_owned);
                    start = end;
                    cell.map_err(|_| Unreadable::NotUtf8)
                })
                .collect()
        };
        self.clear();
        let line = last + 1 - lines;
        // Between two rows only blank lines, one `\n` each.
        let start = self.last_end + (line - self.last_line - 1) as u64;
        self.last_end = self.consumed;
        self.last_line = last;
        Item::Row { line, lines, bytes: start..self.consumed, cells }
    }

    fn clear(&mut self) {
        self.out_len = 0;
        self.ends_len = 0;
        self.row_newlines = 0;
        self.too_long = false;
        self.quotes = 0;
    }
}

fn count_newlines(bytes: &[u8]) -> i64 {
    bytes.iter().filter(|b| **b == b'\n').count() as i64
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read_all(chunks: &[&[u8]]) -> Vec<Item> {
        let mut stream = CsvStream::new();
        let mut out = Vec::new();
        for chunk in chunks {
            stream.feed(chunk, &mut out);
        }
        stream.finish(&mut out);
        out
    }

    /// The rows' lines and cells, byte ranges aside.
    fn read(chunks: &[&[u8]]) -> Vec<Item> {
        read_all(chunks)
            .into_iter()
            .map(|item| match item {
                Item::Row { line, lines, cells, .. } => {
                    Item::Row { line, lines, bytes: 0..0, cells }
                }
                other => other,
            })
            .collect()
    }

    fn row(line: i64, lines: i64, cells: &[&str]) -> Item {
        let cells = Ok(cells.iter().map(|c| (*c).to_owned()).collect());
        Item::Row { line, lines, bytes: 0..0, cells }
    }

    #[test]
    fn a_byte_order_mark_cut_by_the_stream_is_dropped_as_when_it_arrives_whole() {
        // Found by the registry CSV proptest: csv-core drops a BOM only when its first read
        // holds all of it, so a file cut after one or two bytes began with a stray U+FEFF.
        let whole = read(&[b"\xef\xbb\xbffiscal_code\nRSSMRA85T10A562S\n"]);
        assert_eq!(whole, [row(1, 1, &["fiscal_code"]), row(2, 1, &["RSSMRA85T10A562S"])]);
        for cut in [
            &[&b"\xef"[..], b"\xbb\xbffiscal_code\n", b"RSSMRA85T10A562S\n"][..],
            &[b"\xef\xbb", b"", b"\xbf", b"fiscal_code\nRSSMRA85T10A562S\n"],
        ] {
            assert_eq!(read(cut), whole);
        }
        assert_eq!(read(&[b"\xef", b"\xbb"]), read(&[b"\xef\xbb"]), "a file of half a BOM");
        assert_eq!(read(&[b"\xef", b"\xbb\xbf"]), [], "a file of a BOM alone is empty");
    }

    const FILE: &[u8] = b"a,b\n1,\"x\ny\"\n\n2,\"q\"\"uote\"\r\n3,z";

    #[test]
    fn rows_keep_their_first_line_across_quoted_newlines_blank_lines_and_crlf() {
        assert_eq!(
            read(&[FILE]),
            [
                row(1, 1, &["a", "b"]),
                row(2, 2, &["1", "x\ny"]),
                row(5, 1, &["2", "q\"uote\r"]),
                row(6, 1, &["3", "z"]),
            ]
        );
    }

    #[test]
    fn each_row_knows_its_bytes_so_that_a_file_can_be_cut_between_rows() {
        let ranges: Vec<_> = read_all(&[FILE])
            .into_iter()
            .map(|item| match item {
                Item::Row { bytes, .. } => &FILE[bytes.start as usize..bytes.end as usize],
                other => panic!("{other:?}"),
            })
            .collect();
        assert_eq!(ranges, [&b"a,b\n"[..], b"1,\"x\ny\"\n", b"2,\"q\"\"uote\"\r\n", b"3,z"]);
    }

    #[test]
    fn a_quoted_newline_reads_the_same_at_every_chunk_offset() {
        let whole = read_all(&[FILE]);
        for cut in 0..=FILE.len() {
            assert_eq!(read_all(&[&FILE[..cut], &FILE[cut..]]), whole, "cut at {cut}");
        }
        let bytes: Vec<&[u8]> = FILE.chunks(1).collect();
        assert_eq!(read_all(&bytes), whole, "one byte at a time");
    }

    #[test]
    fn a_quote_never_closed_makes_the_rest_of_the_file_unreadable_lines() {
        let file = b"h\n1\n2\n\"3\n4\n5\n";
        assert_eq!(
            read(&[file]),
            [
                row(1, 1, &["h"]),
                row(2, 1, &["1"]),
                row(3, 1, &["2"]),
                Item::UnclosedQuote { line: 4, lines: 3 }
            ]
        );
        let no_final_newline = b"h\n1\n\"2\n3";
        assert_eq!(
            read(&[no_final_newline]),
            [row(1, 1, &["h"]), row(2, 1, &["1"]), Item::UnclosedQuote { line: 3, lines: 2 }]
        );
    }

    #[test]
    fn a_row_that_is_not_utf8_or_too_long_is_reported_by_its_line() {
        let mut file = b"h\n\xff,1\n".to_vec();
        file.extend_from_slice(&vec![b'x'; MAX_ROW_BYTES + 10]);
        file.extend_from_slice(b"\n2\n");
        assert_eq!(
            read(&[&file]),
            [
                row(1, 1, &["h"]),
                Item::Row { line: 2, lines: 1, bytes: 0..0, cells: Err(Unreadable::NotUtf8) },
                Item::Row { line: 3, lines: 1, bytes: 0..0, cells: Err(Unreadable::TooLong) },
                row(4, 1, &["2"]),
            ]
        );
    }
}
