//! File formats and file-system mechanics every stage shares: `.npy` arrays, image decoding
//! and resizing, CSV lines, staged (atomic) outputs, PNG plots and the folder walk.

pub mod csv_line;
pub mod image;
pub mod npy;
pub mod plot;
pub mod staging;
pub mod walk;
