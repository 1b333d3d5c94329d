//! The binary tensor data extension's framing: a body is a JSON header of
//! `Inference-Header-Content-Length` bytes followed by the raw tensors in order; raw tensors
//! are little-endian and row-major, each BYTES element a 4-byte little-endian length then its
//! bytes (the same layout gRPC's `raw_input_contents` / `raw_output_contents` carry).

/// The header giving the JSON part's length.
pub const HEADER: &str = "inference-header-content-length";

/// Splits a body into its JSON header and the raw bytes after it (`header`: the value of
/// [`HEADER`], if sent; without it the whole body is JSON).
pub fn split<'a>(body: &'a [u8], header: Option<&str>) -> Result<(&'a [u8], &'a [u8]), String> {
    let Some(value) = header else { return Ok((body, &[])) };
    let n: usize = value.trim().parse().map_err(|_| format!("{HEADER}: {value:?} is not a byte count"))?;
    if n > body.len() {
        return Err(format!("{HEADER}: {n} is past the end of the {}-byte body", body.len()));
    }
    Ok(body.split_at(n))
}

/// The elements of a raw BYTES tensor; `count` elements must fill `raw` exactly.
pub fn bytes_elements(raw: &[u8], count: usize) -> Result<Vec<Vec<u8>>, String> {
    let mut rest = raw;
    let mut elements = Vec::with_capacity(count.min(raw.len() / 4));
    while !rest.is_empty() {
        if elements.len() == count {
            return Err(format!("more elements in the raw data than its shape's {count}"));
        }
        let Some((len, tail)) = rest.split_first_chunk::<4>() else {
            return Err(format!("element {}: {} bytes left, too few for its 4-byte length", elements.len(), rest.len()));
        };
        let len = u32::from_le_bytes(*len) as usize;
        if len > tail.len() {
            return Err(format!("element {}: length {len} overruns the {} bytes left", elements.len(), tail.len()));
        }
        let (element, tail) = tail.split_at(len);
        elements.push(element.to_vec());
        rest = tail;
    }
    if elements.len() != count {
        return Err(format!("{} elements in the raw data, its shape says {count}", elements.len()));
    }
    Ok(elements)
}

/// A BYTES tensor's raw form.
pub fn bytes_raw(elements: &[Vec<u8>]) -> Vec<u8> {
    let mut raw = Vec::with_capacity(elements.iter().map(|e| e.len() + 4).sum());
    for e in elements {
        raw.extend_from_slice(&(e.len() as u32).to_le_bytes());
        raw.extend_from_slice(e);
    }
    raw
}

/// An FP32 tensor's raw form.
pub fn fp32_raw(values: &[f32]) -> Vec<u8> {
    values.iter().flat_map(|v| v.to_le_bytes()).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bytes_round_trip() {
        let elements = vec![b"jpeg".to_vec(), vec![], vec![0xff; 300]];
        let raw = bytes_raw(&elements);
        assert_eq!(raw.len(), 4 + 4 + 4 + 300 + 4);
        assert_eq!(&raw[..8], &[4, 0, 0, 0, b'j', b'p', b'e', b'g']);
        assert_eq!(bytes_elements(&raw, 3).unwrap(), elements);
    }

    #[test]
    fn lying_lengths_are_refused() {
        let raw = bytes_raw(&[b"abc".to_vec()]);
        assert!(bytes_elements(&raw, 2).unwrap_err().contains("shape says 2"));
        assert!(bytes_elements(&bytes_raw(&[vec![], vec![], vec![]]), 1)
            .unwrap_err()
            .contains("more elements in the raw data than its shape's 1"));
        assert!(bytes_elements(&raw[..5], 1).unwrap_err().contains("length 3 overruns the 1 bytes left"));
        assert!(bytes_elements(&raw[..2], 1).unwrap_err().contains("too few for its 4-byte length"));
        assert!(bytes_elements(&[0xff, 0xff, 0xff, 0xff], 1).unwrap_err().contains("overruns"));
    }

    #[test]
    fn header_splits_json_from_raw() {
        let body = b"{\"a\":1}RAW";
        assert_eq!(split(body, Some("7")).unwrap(), (&b"{\"a\":1}"[..], &b"RAW"[..]));
        assert_eq!(split(body, None).unwrap(), (&body[..], &b""[..]));
        assert!(split(body, Some("11")).unwrap_err().contains("past the end of the 10-byte body"));
        assert!(split(body, Some("-1")).unwrap_err().contains("not a byte count"));
    }

    #[test]
    fn fp32_is_little_endian() {
        assert_eq!(fp32_raw(&[1.0, -2.5]), [0, 0, 0x80, 0x3f, 0, 0, 0x20, 0xc0]);
    }
}
