//! CSV text, both ways: the quoting `predict` writes and the splitting the
//! importers and `retrain`'s corrections read. A field may be wrapped in double quotes (then
//! it may hold commas), and `""` inside quotes is one quote.

/// `s` as one CSV field: quoted when it holds a comma, a quote or a line break.
pub fn quote(s: &str) -> String {
    if s.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", s.replace('"', "\"\""))
    } else {
        s.to_string()
    }
}

/// Splits one line into trimmed fields.
pub fn split(line: &str) -> Result<Vec<String>, String> {
    match records(line).next() {
        Some((_, fields)) => fields,
        None => Ok(vec![String::new()]),
    }
}

/// The records of a whole CSV text with the 1-based line each starts on, blank lines skipped.
/// A quoted field may span lines (a path with a line break, as [`quote`] writes it); a leading
/// byte-order mark is ignored. An unterminated quote is an error on the record it opens, and
/// ends the text.
pub fn records(text: &str) -> impl Iterator<Item = (usize, Result<Vec<String>, String>)> + '_ {
    let mut rest = text.strip_prefix('\u{feff}').unwrap_or(text);
    let mut line = 1;
    std::iter::from_fn(move || loop {
        if rest.is_empty() {
            return None;
        }
        let start = line;
        let (fields, used, breaks, blank) = next_record(rest);
        rest = &rest[used..];
        line += breaks;
        if fields.is_err() {
            rest = "";
        }
        if !blank {
            return Some((start, fields));
        }
    })
}

/// Parses one record at the start of `text`: (fields, bytes used, line breaks used, blank).
fn next_record(text: &str) -> (Result<Vec<String>, String>, usize, usize, bool) {
    let mut fields = Vec::new();
    let mut cur = String::new();
    let mut quoted = false;
    let mut breaks = 0;
    let mut chars = text.char_indices().peekable();
    while let Some((i, ch)) = chars.next() {
        match (ch, quoted) {
            ('"', true) if chars.peek().map(|&(_, c)| c) == Some('"') => {
                cur.push('"');
                chars.next();
            }
            ('"', true) => quoted = false,
            ('"', false) if cur.trim().is_empty() => {
                cur.clear();
                quoted = true;
            }
            ('\n', false) => {
                let blank = fields.is_empty() && cur.trim().is_empty();
                fields.push(cur.trim().to_string());
                return (Ok(fields), i + 1, breaks + 1, blank);
            }
            ('\n', true) => {
                breaks += 1;
                cur.push('\n');
            }
            ('\r', false) if chars.peek().map(|&(_, c)| c) == Some('\n') => {}
            (',', false) => fields.push(std::mem::take(&mut cur).trim().to_string()),
            (c, _) => cur.push(c),
        }
    }
    if quoted {
        return (Err("unterminated quoted field".into()), text.len(), breaks, false);
    }
    let blank = fields.is_empty() && cur.trim().is_empty();
    fields.push(cur.trim().to_string());
    (Ok(fields), text.len(), breaks, blank)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn split_handles_quotes_and_reads_what_quote_writes() {
        assert_eq!(split("a, b ,c").unwrap(), vec!["a", "b", "c"]);
        assert_eq!(split("\"x,1.jpg\",red").unwrap(), vec!["x,1.jpg", "red"]);
        assert_eq!(split("\"say \"\"hi\"\"\",1").unwrap(), vec!["say \"hi\"", "1"]);
        assert!(split("\"open,1").is_err());
        let odd = ["plain.jpg", "a,b.jpg", "say \"hi\".png", ""];
        let line = odd.iter().map(|f| quote(f)).collect::<Vec<_>>().join(",");
        assert_eq!(split(&line).unwrap(), odd);
        assert_eq!(quote("plain.jpg"), "plain.jpg");
    }

    #[test]
    fn records_span_quoted_line_breaks_and_name_their_first_line() {
        let text = format!("\u{feff}path,labels\r\n\n{},dog\r\nb.jpg,\n\n\"open,1\nx,y\n", quote("two\nlines.jpg"));
        let got: Vec<_> = records(&text).collect();
        assert_eq!(got[0], (1, Ok(vec!["path".to_string(), "labels".into()])));
        assert_eq!(got[1], (3, Ok(vec!["two\nlines.jpg".to_string(), "dog".into()])));
        assert_eq!(got[2], (5, Ok(vec!["b.jpg".to_string(), "".into()])));
        assert_eq!(got[3], (7, Err("unterminated quoted field".to_string())));
        assert_eq!(got.len(), 4);
        assert_eq!(records("").count(), 0);
        assert_eq!(records("\n \n").count(), 0);
    }
}
