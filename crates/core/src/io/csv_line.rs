//! One line of CSV text, both ways: the quoting `predict` writes and the splitting the
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
    let mut fields = Vec::new();
    let mut cur = String::new();
    let mut chars = line.chars().peekable();
    let mut quoted = false;
    while let Some(ch) = chars.next() {
        match (ch, quoted) {
            ('"', true) if chars.peek() == Some(&'"') => {
                cur.push('"');
                chars.next();
            }
            ('"', true) => quoted = false,
            ('"', false) if cur.trim().is_empty() => {
                cur.clear();
                quoted = true;
            }
            (',', false) => fields.push(std::mem::take(&mut cur).trim().to_string()),
            (c, _) => cur.push(c),
        }
    }
    if quoted {
        return Err("unterminated quoted field".into());
    }
    fields.push(cur.trim().to_string());
    Ok(fields)
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
}
