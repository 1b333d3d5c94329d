//! NumPy `.npy` files: a streaming writer (rows appended, header fixed up at the end) and a
//! row reader. Little-endian `uint8` and `float32`, C order, format 1.0 and 2.0.

use anyhow::{bail, Context, Result};
use std::fs::File;
use std::io::{BufWriter, Seek, SeekFrom, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

const MAGIC: &[u8] = b"\x93NUMPY";

/// Element types this tool reads and writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DType {
    U8,
    F32,
}

impl DType {
    /// NumPy's `descr` string.
    pub fn descr(self) -> &'static str {
        match self {
            DType::U8 => "|u1",
            DType::F32 => "<f4",
        }
    }
    /// Bytes per element.
    pub fn size(self) -> usize {
        match self {
            DType::U8 => 1,
            DType::F32 => 4,
        }
    }
    /// The name NumPy prints (`uint8`, `float32`).
    pub fn name(self) -> &'static str {
        match self {
            DType::U8 => "uint8",
            DType::F32 => "float32",
        }
    }
    fn from_descr(d: &str) -> Option<DType> {
        match d {
            "|u1" | "<u1" | "u1" => Some(DType::U8),
            "<f4" => Some(DType::F32),
            _ => None,
        }
    }
}

fn header_text(dtype: DType, shape: &[usize], total_len: usize) -> Vec<u8> {
    let dims: Vec<String> = shape.iter().map(|d| d.to_string()).collect();
    let shape_txt = match dims.len() {
        1 => format!("({},)", dims[0]),
        _ => format!("({})", dims.join(", ")),
    };
    let dict = format!("{{'descr': '{}', 'fortran_order': False, 'shape': {}, }}", dtype.descr(), shape_txt);
    let mut h = Vec::with_capacity(total_len);
    h.extend_from_slice(MAGIC);
    h.extend_from_slice(&[1, 0]);
    let body_len = total_len - 10;
    h.extend_from_slice(&(body_len as u16).to_le_bytes());
    h.extend_from_slice(dict.as_bytes());
    while h.len() < total_len - 1 {
        h.push(b' ');
    }
    h.push(b'\n');
    h
}

/// Header length (a multiple of 64) that fits `shape` with any row count up to u64::MAX.
fn reserved_header_len(dtype: DType, tail: &[usize]) -> usize {
    let mut worst = vec![u64::MAX as usize];
    worst.extend_from_slice(tail);
    let probe = header_text(dtype, &worst, 4096);
    let used = probe.iter().rposition(|&b| b == b'}').unwrap() + 2;
    used.div_ceil(64) * 64
}

/// Streams rows of shape `tail_shape` into a `.npy` file; the row count is written by
/// [`NpyWriter::finish`]. A writer dropped without `finish` leaves an invalid file behind,
/// which is why callers write into a temporary directory.
pub struct NpyWriter {
    out: BufWriter<File>,
    path: PathBuf,
    dtype: DType,
    tail: Vec<usize>,
    row_elems: usize,
    rows: usize,
    header_len: usize,
}

impl NpyWriter {
    pub fn create(path: &Path, dtype: DType, tail_shape: &[usize]) -> Result<Self> {
        let file = File::create(path).with_context(|| format!("cannot create {}", path.display()))?;
        let header_len = reserved_header_len(dtype, tail_shape);
        let mut out = BufWriter::with_capacity(1 << 20, file);
        let mut shape = vec![0];
        shape.extend_from_slice(tail_shape);
        out.write_all(&header_text(dtype, &shape, header_len)).with_context(|| format!("cannot write {}", path.display()))?;
        Ok(NpyWriter {
            out,
            path: path.to_path_buf(),
            dtype,
            tail: tail_shape.to_vec(),
            row_elems: tail_shape.iter().product(),
            rows: 0,
            header_len,
        })
    }

    /// Appends rows given as bytes 0..=255; for a float32 file they are scaled to [0, 1].
    pub fn write_u8_rows(&mut self, data: &[u8]) -> Result<()> {
        self.check_len(data.len())?;
        let written = match self.dtype {
            DType::U8 => self.out.write_all(data),
            DType::F32 => {
                let mut buf = Vec::with_capacity(data.len() * 4);
                for &b in data {
                    buf.extend_from_slice(&(b as f32 / 255.0).to_le_bytes());
                }
                self.out.write_all(&buf)
            }
        };
        written.with_context(|| format!("cannot write {}", self.path.display()))
    }

    /// Appends rows as raw little-endian bytes of the file's dtype (rows copied from an
    /// [`NpyArray`] of the same dtype).
    pub fn write_raw_rows(&mut self, bytes: &[u8]) -> Result<()> {
        if !bytes.len().is_multiple_of(self.dtype.size()) {
            bail!("{}: {} bytes is not a whole number of {} values", self.path.display(), bytes.len(), self.dtype.name());
        }
        self.check_len(bytes.len() / self.dtype.size())?;
        self.out.write_all(bytes).with_context(|| format!("cannot write {}", self.path.display()))
    }

    /// Appends float32 rows (the file must be float32).
    pub fn write_f32_rows(&mut self, data: &[f32]) -> Result<()> {
        if self.dtype != DType::F32 {
            bail!("{}: cannot write float32 rows into a {} array", self.path.display(), self.dtype.name());
        }
        self.check_len(data.len())?;
        let mut buf = Vec::with_capacity(data.len() * 4);
        for &v in data {
            buf.extend_from_slice(&v.to_le_bytes());
        }
        self.out.write_all(&buf).with_context(|| format!("cannot write {}", self.path.display()))
    }

    fn check_len(&mut self, n: usize) -> Result<()> {
        if self.row_elems == 0 || n % self.row_elems != 0 {
            bail!("{}: {n} values is not a whole number of rows of shape {:?}", self.path.display(), self.tail);
        }
        self.rows += n / self.row_elems;
        Ok(())
    }

    /// Writes the final header and flushes to disk; returns the number of rows.
    pub fn finish(mut self) -> Result<usize> {
        let mut shape = vec![self.rows];
        shape.extend_from_slice(&self.tail);
        let path = self.path.clone();
        let header = header_text(self.dtype, &shape, self.header_len);
        let rows = self.rows;
        let finish = move || -> std::io::Result<()> {
            self.out.flush()?;
            let mut file = self.out.into_inner().map_err(|e| e.into_error())?;
            file.seek(SeekFrom::Start(0))?;
            file.write_all(&header)?;
            file.flush()
        };
        finish().with_context(|| format!("cannot write {}", path.display()))?;
        Ok(rows)
    }
}

/// Writes a whole float32 array.
pub fn write_f32(path: &Path, shape: &[usize], data: &[f32]) -> Result<()> {
    let mut w = NpyWriter::create(path, DType::F32, &shape[1..])?;
    w.write_f32_rows(data)?;
    let rows = w.finish()?;
    if rows != shape[0] {
        bail!("{}: wrote {rows} rows, expected {}", path.display(), shape[0]);
    }
    Ok(())
}

/// A `.npy` array on disk, read a few rows at a time with positioned reads. The file is
/// neither loaded whole nor mapped: the pages read stay in the kernel's file cache and do not
/// add to this process's resident memory, which stays flat however large the array is.
pub struct NpyArray {
    file: File,
    path: PathBuf,
    dtype: DType,
    shape: Vec<usize>,
    offset: u64,
}

impl NpyArray {
    /// Opens and validates a `.npy` file (header, dtype, order, and that the data length
    /// matches the shape).
    pub fn open(path: &Path) -> Result<Self> {
        let file = File::open(path).with_context(|| format!("cannot open {}", path.display()))?;
        let len = file.metadata().with_context(|| format!("cannot read {}", path.display()))?.len();
        let header = read_header(&file, len).with_context(|| format!("cannot read {}", path.display()))?;
        let (dtype, shape, offset) = parse_header(&header).with_context(|| format!("{}: not a valid .npy file", path.display()))?;
        let data_len = len - offset as u64;
        let expected = data_bytes(dtype, &shape).with_context(|| format!("{}: shape {shape:?} is too large", path.display()))?;
        if data_len != expected as u64 {
            bail!(
                "{}: data is {data_len} bytes but shape {:?} of {} needs {expected} (truncated file?)",
                path.display(),
                shape,
                dtype.name()
            );
        }
        Ok(NpyArray { file, path: path.to_path_buf(), dtype, shape, offset: offset as u64 })
    }

    pub fn dtype(&self) -> DType {
        self.dtype
    }
    pub fn shape(&self) -> &[usize] {
        &self.shape
    }
    pub fn path(&self) -> &Path {
        &self.path
    }
    /// Number of rows (the first dimension).
    pub fn rows(&self) -> usize {
        self.shape.first().copied().unwrap_or(0)
    }
    /// Bytes in one row.
    pub fn row_len(&self) -> usize {
        self.shape.iter().skip(1).product::<usize>() * self.dtype.size()
    }
    /// Appends the raw bytes of rows `start..end` to `out`.
    pub fn read_rows(&self, start: usize, end: usize, out: &mut Vec<u8>) -> Result<()> {
        if start > end || end > self.rows() {
            bail!("{}: rows {start}..{end} out of range (the array has {})", self.path.display(), self.rows());
        }
        let row = self.row_len();
        let at = out.len();
        out.resize(at + (end - start) * row, 0);
        self.file
            .read_exact_at(&mut out[at..], self.offset + (start * row) as u64)
            .with_context(|| format!("{}: cannot read rows {start}..{end}", self.path.display()))
    }
    /// The raw bytes of rows `idx`, in that order; runs of consecutive rows are read at once.
    pub fn gather_rows(&self, idx: &[usize]) -> Result<Vec<u8>> {
        let mut raw = Vec::with_capacity(idx.len() * self.row_len());
        let mut i = 0;
        while i < idx.len() {
            let mut j = i + 1;
            while j < idx.len() && idx[j] == idx[j - 1] + 1 {
                j += 1;
            }
            self.read_rows(idx[i], idx[j - 1] + 1, &mut raw)?;
            i = j;
        }
        Ok(raw)
    }
    /// All raw data bytes (for small arrays: labels, tests).
    pub fn read_all(&self) -> Result<Vec<u8>> {
        let mut raw = Vec::new();
        self.read_rows(0, self.rows(), &mut raw)?;
        Ok(raw)
    }
    /// The data as float32 values (the file must be float32).
    pub fn to_f32_vec(&self) -> Result<Vec<f32>> {
        if self.dtype != DType::F32 {
            bail!("{}: expected float32, found {}", self.path.display(), self.dtype.name());
        }
        Ok(self.read_all()?.chunks_exact(4).map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect())
    }
}

/// The magic string, version, length field and header dict at the start of `file` (`len`
/// bytes long); shorter when the file is.
fn read_header(file: &File, len: u64) -> std::io::Result<Vec<u8>> {
    let mut head = vec![0u8; len.min(12) as usize];
    file.read_exact_at(&mut head, 0)?;
    let dict_end = match head.get(6) {
        Some(1) if head.len() >= 10 => 10 + u16::from_le_bytes([head[8], head[9]]) as u64,
        Some(2 | 3) if head.len() >= 12 => 12 + u32::from_le_bytes([head[8], head[9], head[10], head[11]]) as u64,
        _ => return Ok(head),
    };
    let mut all = vec![0u8; dict_end.min(len) as usize];
    file.read_exact_at(&mut all, 0)?;
    Ok(all)
}

/// Parses a `.npy` header (magic, version, length, dict): dtype, shape and data offset.
pub fn parse_header(data: &[u8]) -> Result<(DType, Vec<usize>, usize)> {
    if data.len() < 10 || &data[..6] != MAGIC {
        bail!("missing NumPy magic string");
    }
    let (len, start) = match data[6] {
        1 => (u16::from_le_bytes([data[8], data[9]]) as usize, 10),
        2 | 3 => {
            if data.len() < 12 {
                bail!("header cut short");
            }
            (u32::from_le_bytes([data[8], data[9], data[10], data[11]]) as usize, 12)
        }
        v => bail!("unsupported .npy format version {v}"),
    };
    let end = start + len;
    if data.len() < end {
        bail!("header cut short");
    }
    let dict = std::str::from_utf8(&data[start..end])?;
    let descr = dict_value(dict, "descr").context("header has no 'descr'")?;
    let descr = descr.trim_matches(|c| c == '\'' || c == '"');
    let dtype =
        DType::from_descr(descr).with_context(|| format!("dtype {descr:?} is not supported (expected uint8 or little-endian float32)"))?;
    let fortran = dict_value(dict, "fortran_order").context("header has no 'fortran_order'")?;
    if fortran.trim() != "False" {
        bail!("Fortran-ordered arrays are not supported");
    }
    let shape_txt = dict_value(dict, "shape").context("header has no 'shape'")?;
    let inner = shape_txt.trim().trim_start_matches('(').trim_end_matches(')');
    let shape = inner
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(|s| s.trim_end_matches('L').parse::<usize>())
        .collect::<Result<Vec<_>, _>>()
        .with_context(|| format!("bad shape {shape_txt:?}"))?;
    Ok((dtype, shape, end))
}

/// Bytes of data an array of `shape` holds; `None` when that overflows.
pub fn data_bytes(dtype: DType, shape: &[usize]) -> Option<usize> {
    shape.iter().try_fold(dtype.size(), |n, &d| n.checked_mul(d))
}

/// The raw text of `key`'s value in a NumPy header dict.
fn dict_value<'a>(dict: &'a str, key: &str) -> Option<&'a str> {
    let k1 = format!("'{key}':");
    let at = dict.find(&k1)? + k1.len();
    let rest = dict[at..].trim_start();
    let end = if rest.starts_with('(') { rest.find(')')? + 1 } else { rest.find(',').or_else(|| rest.find('}'))? };
    Some(&rest[..end])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn u8_round_trip_with_header_fixup() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("x.npy");
        let mut w = NpyWriter::create(&p, DType::U8, &[2, 2, 3]).unwrap();
        let row: Vec<u8> = (0..12).collect();
        w.write_u8_rows(&row).unwrap();
        w.write_u8_rows(&row).unwrap();
        assert_eq!(w.finish().unwrap(), 2);
        let a = NpyArray::open(&p).unwrap();
        assert_eq!(a.shape(), &[2, 2, 2, 3]);
        assert_eq!(a.dtype(), DType::U8);
        let mut got = vec![7u8];
        a.read_rows(1, 2, &mut got).unwrap();
        assert_eq!(got[1..], row[..]);
        assert_eq!(got[0], 7);
        assert!(a.read_rows(1, 3, &mut got).is_err());
    }

    #[test]
    fn gathers_rows_in_the_order_asked() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("x.npy");
        let mut w = NpyWriter::create(&p, DType::U8, &[2]).unwrap();
        w.write_u8_rows(&(0..12).collect::<Vec<u8>>()).unwrap();
        w.finish().unwrap();
        let a = NpyArray::open(&p).unwrap();
        assert_eq!(a.gather_rows(&[3, 0, 1, 2, 5, 5]).unwrap(), vec![6, 7, 0, 1, 2, 3, 4, 5, 10, 11, 10, 11]);
        assert!(a.gather_rows(&[]).unwrap().is_empty());
        let e = a.gather_rows(&[1, 6]).unwrap_err().to_string();
        assert!(e.contains("rows 6..7 out of range"), "{e}");
        let raw = std::fs::read(&p).unwrap();
        assert_eq!(&raw[..6], MAGIC);
        let hlen = u16::from_le_bytes([raw[8], raw[9]]) as usize;
        assert_eq!((10 + hlen) % 64, 0);
        assert_eq!(raw[10 + hlen - 1], b'\n');
    }

    #[test]
    fn f32_scaling_and_one_dim_shape() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("y.npy");
        let mut w = NpyWriter::create(&p, DType::F32, &[2]).unwrap();
        w.write_u8_rows(&[0, 255]).unwrap();
        w.finish().unwrap();
        assert_eq!(NpyArray::open(&p).unwrap().to_f32_vec().unwrap(), vec![0.0, 1.0]);
        let q = dir.path().join("v.npy");
        write_f32(&q, &[3], &[1.0, 2.0, 3.0]).unwrap();
        let text = std::fs::read(&q).unwrap();
        assert!(String::from_utf8_lossy(&text[..80]).contains("'shape': (3,)"));
    }

    #[test]
    fn rejects_truncated_and_foreign_files() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("t.npy");
        write_f32(&p, &[4, 2], &[0.0; 8]).unwrap();
        let mut raw = std::fs::read(&p).unwrap();
        raw.truncate(raw.len() - 4);
        std::fs::write(&p, &raw).unwrap();
        let e = NpyArray::open(&p).err().unwrap().to_string();
        assert!(e.contains("truncated"), "{e}");
        std::fs::write(&p, b"not numpy at all").unwrap();
        assert!(format!("{:#}", NpyArray::open(&p).err().unwrap()).contains("magic"));
        let mut w = NpyWriter::create(&p, DType::U8, &[3]).unwrap();
        assert!(w.write_u8_rows(&[1, 2]).is_err());
    }
}
