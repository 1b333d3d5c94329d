//! `ImageSets/Main` lists: `<set>.txt` id lists and the official per-class classification
//! labels `<class>_<set>.txt` (`1` present, `0` difficult only, `-1` absent).

use super::VocLayout;
use anyhow::{bail, Context, Result};
use std::collections::HashMap;
use std::path::Path;

/// The image sets voc-prep accepts for `--image-set`.
pub const IMAGE_SETS: [&str; 4] = ["train", "val", "trainval", "test"];

/// Reads the ids of `ImageSets/Main/<set>.txt`. A missing `trainval.txt` is the union of
/// `train.txt` and `val.txt`.
pub fn read_id_list(layout: &VocLayout, set: &str) -> Result<Vec<String>> {
    let path = layout.main_sets_dir().join(format!("{set}.txt"));
    if !path.exists() && set == "trainval" {
        let mut ids = read_id_list(layout, "train")?;
        ids.extend(read_id_list(layout, "val")?);
        return Ok(ids);
    }
    let text = std::fs::read_to_string(&path).with_context(|| format!("cannot read image set list {}", path.display()))?;
    let mut ids = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let mut fields = line.split_whitespace();
        match (fields.next(), fields.next()) {
            (None, _) => continue,
            (Some(id), None) => ids.push(id.to_string()),
            (Some(_), Some(_)) => bail!("{}:{}: expected one image id per line, found {line:?}", path.display(), i + 1),
        }
    }
    Ok(ids)
}

/// Reads `ImageSets/Main/<class>_<set>.txt` into id -> label (1, 0 or -1).
pub fn read_class_labels(layout: &VocLayout, class: &str, set: &str) -> Result<HashMap<String, i8>> {
    let path = layout.main_sets_dir().join(format!("{class}_{set}.txt"));
    if !path.exists() && set == "trainval" {
        let mut labels = read_class_labels(layout, class, "train")?;
        labels.extend(read_class_labels(layout, class, "val")?);
        return Ok(labels);
    }
    parse_class_labels(&path)
}

fn parse_class_labels(path: &Path) -> Result<HashMap<String, i8>> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read class label list {} (needed by --labels imagesets)", path.display()))?;
    let mut labels = HashMap::new();
    for (i, line) in text.lines().enumerate() {
        let fields: Vec<&str> = line.split_whitespace().collect();
        match fields.as_slice() {
            [] => continue,
            [id, value] => {
                let v: i8 = match *value {
                    "1" => 1,
                    "0" => 0,
                    "-1" => -1,
                    other => bail!("{}:{}: label {other:?} for id {id}, expected 1, 0 or -1", path.display(), i + 1),
                };
                labels.insert(id.to_string(), v);
            }
            _ => bail!("{}:{}: expected '<id> <label>', found {line:?}", path.display(), i + 1),
        }
    }
    Ok(labels)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn layout_with(files: &[(&str, &str)]) -> (tempfile::TempDir, VocLayout) {
        let dir = tempfile::tempdir().unwrap();
        let layout = VocLayout::new(dir.path());
        std::fs::create_dir_all(layout.main_sets_dir()).unwrap();
        for (name, text) in files {
            std::fs::write(layout.main_sets_dir().join(name), text).unwrap();
        }
        (dir, layout)
    }

    #[test]
    fn reads_ids_and_class_labels() {
        let (_d, l) = layout_with(&[("train.txt", "000001\n000002\n\n"), ("dog_train.txt", "000001  1\n000002 -1\n000003  0\n")]);
        assert_eq!(read_id_list(&l, "train").unwrap(), vec!["000001", "000002"]);
        let labels = read_class_labels(&l, "dog", "train").unwrap();
        assert_eq!(labels["000001"], 1);
        assert_eq!(labels["000002"], -1);
        assert_eq!(labels["000003"], 0);
    }

    #[test]
    fn trainval_falls_back_to_union() {
        let (_d, l) = layout_with(&[("train.txt", "a\n"), ("val.txt", "b\n"), ("dog_train.txt", "a 1\n"), ("dog_val.txt", "b -1\n")]);
        assert_eq!(read_id_list(&l, "trainval").unwrap(), vec!["a", "b"]);
        assert_eq!(read_class_labels(&l, "dog", "trainval").unwrap().len(), 2);
    }

    #[test]
    fn bad_lines_name_file_and_line() {
        let (_d, l) = layout_with(&[("dog_train.txt", "a 1\nb 7\n")]);
        let e = read_class_labels(&l, "dog", "train").unwrap_err().to_string();
        assert!(e.contains("dog_train.txt:2"), "{e}");
        let e = read_class_labels(&l, "cat", "train").unwrap_err().to_string();
        assert!(e.contains("cat_train.txt"), "{e}");
    }
}
