//! Data preparation and prepared data: sources (VOC, class folders, CSV, COCO JSON, Label
//! Studio exports, the synthetic datasets) -> filtered, resized, stratified splits on disk (`X_*.npy`, `y_*.npy`,
//! `manifest.json`) -> [`prepared::SplitData`] read back batch by batch.

pub mod classes;
pub mod import;
pub mod import_coco;
pub mod import_label_studio;
pub mod manifest;
pub mod prep;
pub mod prepared;
pub mod shapes;
pub mod split;
pub mod voc;
