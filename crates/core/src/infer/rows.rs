//! What scoring returns: values of several images, a row per image.

use anyhow::{bail, Result};

/// Values of several images, one row of `width` per image in order: probabilities (a column
/// per class) or features. What scoring returns, so no caller cuts a flat buffer into rows.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Rows {
    width: usize,
    values: Vec<f32>,
}

impl Rows {
    /// `values` as rows of `width`; an error when they do not divide evenly.
    pub fn new(width: usize, values: Vec<f32>) -> Result<Self> {
        if width == 0 && !values.is_empty() || width > 0 && values.len() % width != 0 {
            bail!("{} values are not rows of {width}", values.len());
        }
        Ok(Rows { width, values })
    }

    /// The rows given one by one (each of `width` values).
    pub fn from_rows<'a>(width: usize, rows: impl IntoIterator<Item = &'a [f32]>) -> Result<Self> {
        Self::new(width, rows.into_iter().flatten().copied().collect())
    }

    /// Number of rows (images).
    pub fn len(&self) -> usize {
        self.values.len().checked_div(self.width).unwrap_or(0)
    }

    pub fn is_empty(&self) -> bool {
        self.values.is_empty()
    }

    /// Values per row.
    pub fn width(&self) -> usize {
        self.width
    }

    /// Row `i`.
    pub fn row(&self, i: usize) -> &[f32] {
        &self.values[i * self.width..(i + 1) * self.width]
    }

    /// The rows in order.
    pub fn iter(&self) -> impl Iterator<Item = &[f32]> {
        (0..self.len()).map(|i| self.row(i))
    }

    /// Every value, row after row.
    pub fn values(&self) -> &[f32] {
        &self.values
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rows_are_whole_and_read_back_in_order() {
        let rows = Rows::new(2, vec![0.1, 0.9, 0.4, 0.6]).unwrap();
        assert_eq!((rows.len(), rows.width()), (2, 2));
        assert_eq!(rows.iter().collect::<Vec<_>>(), [&[0.1, 0.9][..], &[0.4, 0.6][..]]);
        assert_eq!(Rows::from_rows(2, rows.iter()).unwrap(), rows);
        assert_eq!(Rows::new(3, vec![0.0; 4]).unwrap_err().to_string(), "4 values are not rows of 3");
        assert!(Rows::new(0, Vec::new()).unwrap().is_empty());
    }
}
