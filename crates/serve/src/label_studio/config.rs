//! A Label Studio labelling config (XML) read for an image classification backend: the
//! `<Image>` tag (its name and data key) and the `<Choices>` tag that labels it, with each
//! choice mapped to a class of the served model.

use quick_xml::events::{BytesStart, Event};
use quick_xml::Reader;
use std::collections::HashMap;
use vocml_core::task::Task;

/// What predictions and annotations of a project are read and written with.
#[derive(Debug, Clone, PartialEq)]
pub struct LabelConfig {
    /// The `<Choices name>`: results' `from_name`.
    pub from_name: String,
    /// The `<Image name>`: results' `to_name`.
    pub to_name: String,
    /// The task data key of the image (`value="$image"` -> `image`).
    pub data_key: String,
    /// `choice="multiple"`.
    pub multiple: bool,
    /// The choices, as results carry them (a `<Choice>`'s `alias`, else its `value`).
    pub choices: Vec<String>,
}

/// Choice names mapped to the model's classes (`--label-studio-map CHOICE=CLASS`; unmapped
/// choices are classes of the same name).
#[derive(Debug, Clone, Default)]
pub struct ClassMap(pub HashMap<String, String>);

impl ClassMap {
    /// The model class a choice stands for.
    pub fn class_of<'a>(&'a self, choice: &'a str) -> &'a str {
        self.0.get(choice).map(String::as_str).unwrap_or(choice)
    }

    /// The choice that stands for a model class in `config`.
    pub fn choice_of<'a>(&self, config: &'a LabelConfig, class: &str) -> Option<&'a str> {
        config.choices.iter().find(|c| self.class_of(c) == class).map(String::as_str)
    }
}

fn attr(tag: &BytesStart, name: &str) -> Option<String> {
    tag.attributes()
        .flatten()
        .find(|a| a.key.as_ref().eq_ignore_ascii_case(name.as_bytes()))
        .and_then(|a| a.unescape_value().ok())
        .map(|v| v.into_owned())
}

impl LabelConfig {
    /// Reads `xml` and checks it against the served model's `task` under `map`: one
    /// `<Image>`, a `<Choices>` on it whose choices are exactly the model's classes, and
    /// `choice="multiple"` for a multilabel model. The error says what to change.
    pub fn parse(xml: &str, task: &Task, map: &ClassMap) -> Result<LabelConfig, String> {
        let mut reader = Reader::from_str(xml);
        let mut images: Vec<(String, String)> = Vec::new();
        // (name, toName, choice attribute, choices)
        let mut choices: Vec<(String, String, String, Vec<String>)> = Vec::new();
        let mut inside_choices = false;
        loop {
            match reader.read_event() {
                Ok(Event::Start(t)) | Ok(Event::Empty(t)) if t.name().as_ref() == b"Image" => {
                    let value = attr(&t, "value").unwrap_or_default();
                    let key = value
                        .strip_prefix('$')
                        .ok_or_else(|| format!("<Image> value {value:?}: expected $<data key>, e.g. value=\"$image\""))?;
                    images.push((attr(&t, "name").unwrap_or_default(), key.to_string()));
                }
                Ok(Event::Start(t)) if t.name().as_ref() == b"Choices" => {
                    inside_choices = true;
                    choices.push((
                        attr(&t, "name").unwrap_or_default(),
                        attr(&t, "toName").unwrap_or_default(),
                        attr(&t, "choice").unwrap_or_default(),
                        Vec::new(),
                    ));
                }
                Ok(Event::End(t)) if t.name().as_ref() == b"Choices" => inside_choices = false,
                Ok(Event::Start(t)) | Ok(Event::Empty(t)) if inside_choices && t.name().as_ref() == b"Choice" => {
                    let v = attr(&t, "alias").or_else(|| attr(&t, "value")).unwrap_or_default();
                    choices.last_mut().expect("inside <Choices>").3.push(v);
                }
                Ok(Event::Eof) => break,
                Err(e) => return Err(format!("the labelling config is not valid XML: {e}")),
                _ => {}
            }
        }
        let [(image, data_key)] = images.as_slice() else {
            return Err(format!("the labelling config has {} <Image> tags; this backend labels one image per task", images.len()));
        };
        let on_image: Vec<_> = choices.iter().filter(|c| c.1 == *image).collect();
        let (from_name, _, choice, names) = match on_image.as_slice() {
            [one] => *one,
            [] => {
                return Err(format!(
                    "the labelling config has no <Choices toName=\"{image}\">; this backend predicts image classes as choices"
                ))
            }
            _ => return Err(format!("the labelling config has {} <Choices> on <Image name=\"{image}\">; keep one", on_image.len())),
        };
        let config = LabelConfig {
            from_name: from_name.clone(),
            to_name: image.clone(),
            data_key: data_key.clone(),
            multiple: choice == "multiple",
            choices: names.clone(),
        };
        let unknown: Vec<&str> = config.choices.iter().map(|c| map.class_of(c)).filter(|c| !task.classes.iter().any(|k| k == c)).collect();
        if !unknown.is_empty() {
            return Err(format!(
                "choices {unknown:?} are not classes of the served model ({}); rename them, or map them with serve --label-studio-map CHOICE=CLASS",
                task.classes.join(", ")
            ));
        }
        let missing: Vec<&String> = task.classes.iter().filter(|k| map.choice_of(&config, k).is_none()).collect();
        if !missing.is_empty() {
            return Err(format!("the model's classes {missing:?} have no <Choice> in <Choices name=\"{from_name}\">; add them"));
        }
        if !task.is_grouped() && !config.multiple {
            return Err(format!("the served model is multi-label; set choice=\"multiple\" on <Choices name=\"{from_name}\">"));
        }
        Ok(config)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const XML: &str = r#"<View>
  <Image name="photo" value="$image"/>
  <Choices name="objects" toName="photo" choice="multiple" showInLine="true">
    <Choice value="person"/><Choice value="chair"/><Choice value="dog"/><Choice value="Couch" alias="couch"/>
  </Choices>
</View>"#;

    fn task() -> Task {
        Task::multilabel(["person", "chair", "dog", "sofa"].map(String::from).to_vec())
    }

    #[test]
    fn reads_image_and_choices_and_maps_renamed_classes() {
        let map = ClassMap([("couch".to_string(), "sofa".to_string())].into());
        let c = LabelConfig::parse(XML, &task(), &map).unwrap();
        assert_eq!((c.from_name.as_str(), c.to_name.as_str(), c.data_key.as_str(), c.multiple), ("objects", "photo", "image", true));
        assert_eq!(c.choices, ["person", "chair", "dog", "couch"]);
        assert_eq!(map.choice_of(&c, "sofa"), Some("couch"));
    }

    #[test]
    fn configs_the_model_cannot_serve_are_errors_that_say_what_to_change() {
        let none = ClassMap::default();
        for (xml, expect) in [
            (XML.to_string(), "choices [\"couch\"] are not classes of the served model"),
            (XML.replace("couch", "sofa").replace(r#"<Choice value="dog"/>"#, ""), "classes [\"dog\"] have no <Choice>"),
            (XML.replace("couch", "sofa").replace(r#" choice="multiple""#, ""), "set choice=\"multiple\""),
            (r#"<View><Image name="i" value="$image"/><Labels name="l" toName="i"/></View>"#.to_string(), "no <Choices toName=\"i\">"),
            (r#"<View><Text name="t" value="$text"/></View>"#.to_string(), "0 <Image> tags"),
            ("<View><Image name=\"i\" value=\"$image\"></View>".to_string(), "not valid XML"),
        ] {
            let err = LabelConfig::parse(&xml, &task(), &none).unwrap_err();
            assert!(err.contains(expect), "{err}");
        }
    }
}
