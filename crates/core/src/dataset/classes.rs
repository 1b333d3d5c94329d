//! Class names: the 20 PASCAL VOC classes, the default target set, and `--classes` parsing.

use anyhow::{bail, Result};

/// The 20 PASCAL VOC classes in the official order.
pub const VOC_CLASSES: [&str; 20] = [
    "aeroplane",
    "bicycle",
    "bird",
    "boat",
    "bottle",
    "bus",
    "car",
    "cat",
    "chair",
    "cow",
    "diningtable",
    "dog",
    "horse",
    "motorbike",
    "person",
    "pottedplant",
    "sheep",
    "sofa",
    "train",
    "tvmonitor",
];

/// The reference system's four target classes, in its order.
pub const DEFAULT_CLASSES: [&str; 4] = ["person", "chair", "dog", "sofa"];

/// Parses a `--classes` value: `all` (the 20 VOC classes in VOC order) or a comma-separated
/// list of VOC class names, kept in the order given. Unknown or repeated names are errors.
pub fn parse_class_list(spec: &str) -> Result<Vec<String>> {
    let spec = spec.trim();
    if spec.eq_ignore_ascii_case("all") {
        return Ok(VOC_CLASSES.iter().map(|s| s.to_string()).collect());
    }
    let mut out: Vec<String> = Vec::new();
    for raw in spec.split(',') {
        let name = raw.trim().to_ascii_lowercase();
        if name.is_empty() {
            bail!("empty class name in --classes {spec:?}");
        }
        if !VOC_CLASSES.contains(&name.as_str()) {
            bail!("unknown class {name:?} in --classes; expected 'all' or names from: {}", VOC_CLASSES.join(","));
        }
        if out.contains(&name) {
            bail!("class {name:?} is listed twice in --classes");
        }
        out.push(name);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn all_gives_twenty_in_voc_order() {
        let c = parse_class_list("all").unwrap();
        assert_eq!(c.len(), 20);
        assert_eq!(c[0], "aeroplane");
        assert_eq!(c[19], "tvmonitor");
    }

    #[test]
    fn list_keeps_given_order_and_normalises_case() {
        assert_eq!(parse_class_list(" Dog,person ").unwrap(), vec!["dog", "person"]);
    }

    #[test]
    fn unknown_and_duplicate_names_are_errors() {
        let e = parse_class_list("person,unicorn").unwrap_err().to_string();
        assert!(e.contains("unknown class \"unicorn\""), "{e}");
        assert!(parse_class_list("dog,dog").is_err());
        assert!(parse_class_list("dog,,cat").is_err());
    }
}
