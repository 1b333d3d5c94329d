//! PASCAL VOC inputs: annotation XML, ImageSets lists, and the synthetic VOC-layout dataset
//! used by the demo and the tests.

pub mod annotation;
pub mod imagesets;
pub mod synth;

use std::path::PathBuf;

/// Paths inside a VOC root (the directory holding `Annotations/`, `JPEGImages/`, `ImageSets/`).
#[derive(Debug, Clone)]
pub struct VocLayout {
    pub root: PathBuf,
}

impl VocLayout {
    pub fn new(root: impl Into<PathBuf>) -> Self {
        VocLayout { root: root.into() }
    }
    pub fn annotations_dir(&self) -> PathBuf {
        self.root.join("Annotations")
    }
    pub fn images_dir(&self) -> PathBuf {
        self.root.join("JPEGImages")
    }
    pub fn main_sets_dir(&self) -> PathBuf {
        self.root.join("ImageSets").join("Main")
    }
    pub fn annotation(&self, id: &str) -> PathBuf {
        self.annotations_dir().join(format!("{id}.xml"))
    }
    pub fn image(&self, id: &str) -> PathBuf {
        self.images_dir().join(format!("{id}.jpg"))
    }
}

/// Converts a byte offset in `text` into a 1-based (line, column) pair for error messages.
pub fn line_col(text: &str, offset: usize) -> (usize, usize) {
    let upto = &text.as_bytes()[..offset.min(text.len())];
    let line = upto.iter().filter(|&&b| b == b'\n').count() + 1;
    let col = upto.iter().rev().take_while(|&&b| b != b'\n').count() + 1;
    (line, col)
}
