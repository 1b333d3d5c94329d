//! VOC annotation XML (`Annotations/<id>.xml`) parsed with quick-xml.

use quick_xml::events::Event;
use quick_xml::Reader;
use std::path::Path;
use thiserror::Error;

/// One `<object>` of an annotation.
#[derive(Debug, Clone, PartialEq)]
pub struct VocObject {
    pub name: String,
    pub difficult: bool,
}

/// The parts of a VOC annotation that labelling needs.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Annotation {
    pub filename: Option<String>,
    pub objects: Vec<VocObject>,
    /// The file carries an `<incomplete>` element (some objects are known to be missing).
    pub incomplete: bool,
}

impl Annotation {
    /// Whether the image holds `class`, optionally ignoring objects marked difficult.
    pub fn has_class(&self, class: &str, ignore_difficult: bool) -> bool {
        self.objects.iter().any(|o| o.name == class && !(ignore_difficult && o.difficult))
    }
}

/// A malformed annotation: which file, where, and what was wrong.
#[derive(Debug, Error)]
#[error("{path}:{line}:{col}: malformed VOC annotation: {message}")]
pub struct AnnotationError {
    pub path: String,
    pub line: usize,
    pub col: usize,
    pub message: String,
}

/// Reads and parses one annotation file.
pub fn read_annotation(path: &Path) -> Result<Annotation, AnnotationError> {
    let text = std::fs::read_to_string(path).map_err(|e| AnnotationError {
        path: path.display().to_string(),
        line: 0,
        col: 0,
        message: format!("cannot read: {e}"),
    })?;
    parse_annotation(&text).map_err(|(offset, message)| {
        let (line, col) = super::line_col(&text, offset);
        AnnotationError { path: path.display().to_string(), line, col, message }
    })
}

/// Parses annotation XML text. On error returns the byte offset and a message.
pub fn parse_annotation(text: &str) -> Result<Annotation, (usize, String)> {
    let mut reader = Reader::from_str(text);
    reader.config_mut().trim_text(true);
    let mut stack: Vec<String> = Vec::new();
    let mut ann = Annotation::default();
    let mut current: Option<(Option<String>, bool)> = None;
    let mut object_start = 0usize;
    loop {
        let pos = reader.buffer_position() as usize;
        let event = reader.read_event().map_err(|e| (reader.error_position() as usize, e.to_string()))?;
        match event {
            Event::Start(e) => {
                let name = String::from_utf8_lossy(e.name().as_ref()).into_owned();
                if stack.is_empty() && name != "annotation" {
                    return Err((pos, format!("root element is <{name}>, expected <annotation>")));
                }
                if stack.len() == 1 && name == "object" {
                    current = Some((None, false));
                    object_start = pos;
                }
                if stack.len() == 1 && name == "incomplete" {
                    ann.incomplete = true;
                }
                stack.push(name);
            }
            Event::Empty(e) => {
                let name = String::from_utf8_lossy(e.name().as_ref()).into_owned();
                if stack.is_empty() {
                    return Err((pos, format!("root element is <{name}/>, expected <annotation>")));
                }
                if stack.len() == 1 && name == "incomplete" {
                    ann.incomplete = true;
                }
            }
            Event::Text(t) => {
                let value = t.unescape().map_err(|e| (pos, e.to_string()))?;
                let value = value.trim();
                let path: Vec<&str> = stack.iter().map(String::as_str).collect();
                match path.as_slice() {
                    ["annotation", "filename"] => ann.filename = Some(value.to_string()),
                    ["annotation", "object", "name"] => {
                        if let Some(obj) = current.as_mut() {
                            obj.0 = Some(value.to_string());
                        }
                    }
                    ["annotation", "object", "difficult"] => {
                        let flag = match value {
                            "0" => false,
                            "1" => true,
                            other => return Err((pos, format!("<difficult> is {other:?}, expected 0 or 1"))),
                        };
                        if let Some(obj) = current.as_mut() {
                            obj.1 = flag;
                        }
                    }
                    _ => {}
                }
            }
            Event::End(_) => {
                let closed = stack.pop();
                if stack.len() == 1 && closed.as_deref() == Some("object") {
                    let (name, difficult) = current.take().unwrap_or((None, false));
                    let name = name.filter(|n| !n.is_empty()).ok_or_else(|| (object_start, "<object> without a <name>".to_string()))?;
                    ann.objects.push(VocObject { name, difficult });
                }
            }
            Event::Eof => {
                if let Some(open) = stack.last() {
                    return Err((text.len(), format!("unexpected end of file: <{open}> is not closed")));
                }
                if text.trim().is_empty() {
                    return Err((0, "empty file".to_string()));
                }
                return Ok(ann);
            }
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = r#"<annotation>
  <folder>VOC2007</folder><filename>000001.jpg</filename>
  <size><width>353</width><height>500</height><depth>3</depth></size>
  <object><name>dog</name><pose>Left</pose><truncated>1</truncated><difficult>0</difficult>
    <bndbox><xmin>48</xmin><ymin>240</ymin><xmax>195</xmax><ymax>371</ymax></bndbox></object>
  <object><name>person</name><difficult>1</difficult></object>
  <object><name>chair</name></object>
</annotation>"#;

    #[test]
    fn parses_objects_and_difficult_flags() {
        let a = parse_annotation(GOOD).unwrap();
        assert_eq!(a.filename.as_deref(), Some("000001.jpg"));
        assert_eq!(
            a.objects,
            vec![
                VocObject { name: "dog".into(), difficult: false },
                VocObject { name: "person".into(), difficult: true },
                VocObject { name: "chair".into(), difficult: false },
            ]
        );
        assert!(!a.incomplete);
        assert!(a.has_class("person", false));
        assert!(!a.has_class("person", true));
        assert!(!a.has_class("sofa", false));
    }

    #[test]
    fn incomplete_marker_is_recorded() {
        let a = parse_annotation("<annotation><incomplete>person</incomplete></annotation>").unwrap();
        assert!(a.incomplete);
        let b = parse_annotation("<annotation><incomplete/></annotation>").unwrap();
        assert!(b.incomplete);
    }

    #[test]
    fn mismatched_tag_reports_line_and_column() {
        let text = "<annotation>\n  <object><name>dog</nam></object>\n</annotation>";
        let (off, msg) = parse_annotation(text).unwrap_err();
        let (line, _col) = crate::dataset::voc::line_col(text, off);
        assert_eq!(line, 2, "{msg}");
    }

    #[test]
    fn truncated_file_is_an_error() {
        let (_, msg) = parse_annotation("<annotation><object><name>dog</name>").unwrap_err();
        assert!(msg.contains("not closed"), "{msg}");
    }

    #[test]
    fn wrong_root_empty_file_and_nameless_object_are_errors() {
        assert!(parse_annotation("<html></html>").unwrap_err().1.contains("root element"));
        assert!(parse_annotation("   ").unwrap_err().1.contains("empty"));
        assert!(parse_annotation("<annotation><object></object></annotation>").unwrap_err().1.contains("without a <name>"));
        assert!(parse_annotation("<annotation><object><name>a</name><difficult>x</difficult></object></annotation>").is_err());
    }

    #[test]
    fn read_annotation_names_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("bad.xml");
        std::fs::write(&p, "<annotation>\n<object>\n").unwrap();
        let e = read_annotation(&p).unwrap_err().to_string();
        assert!(e.contains("bad.xml:"), "{e}");
        assert!(e.contains("malformed VOC annotation"), "{e}");
    }
}
