//! Recipes, read one way for every tool: a TOML file whose keys are the options' names
//! (snake_case, as a run's `config.json` records them) or a run's `config.json` itself. `train`
//! and `retrain` turn a recipe into their flags (`--config`); serve's retrain jobs into
//! [`RetrainOptions`]. Keys spelled with `-` (the flags' spelling, read by earlier versions)
//! are still read, and listed in [`Recipe::old_spellings`] so the tools can say so.

use crate::run::config::RunConfig;
use crate::run::options::RetrainOptions;
use anyhow::{bail, Context, Result};
use std::path::Path;

/// The options a recipe sets, by name.
#[derive(Debug, Clone, PartialEq)]
pub struct Recipe {
    /// Where it was read from, for messages.
    pub origin: String,
    /// Option name (snake_case) -> value.
    pub keys: serde_json::Map<String, serde_json::Value>,
    /// Keys as written with `-`, in file order: read under their snake_case names.
    pub old_spellings: Vec<String>,
}

impl Recipe {
    /// Reads a recipe file for `tool` (`train` or `retrain`): TOML, or a run's `config.json`
    /// (which must be a run of that tool).
    pub fn read(path: &Path, tool: &str) -> Result<Recipe> {
        let origin = path.display().to_string();
        let text = std::fs::read_to_string(path).with_context(|| format!("cannot read config {origin}"))?;
        if text.trim_start().starts_with('{') {
            let run = RunConfig::parse(&text).with_context(|| format!("{origin}: not a valid run config"))?;
            let keys = run.recipe(tool).with_context(|| origin.clone())?;
            return Ok(Recipe { origin, keys, old_spellings: Vec::new() });
        }
        Self::parse_toml(&text, &origin)
    }

    /// A TOML recipe's keys; `origin` names it in errors.
    pub fn parse_toml(text: &str, origin: &str) -> Result<Recipe> {
        let table: toml::Table = text
            .parse()
            .map_err(|e: toml::de::Error| anyhow::anyhow!("{origin}: not valid TOML: {}", e.message().trim().replace('\n', ", ")))?;
        let mut keys = serde_json::Map::new();
        let mut old_spellings = Vec::new();
        for (key, value) in table {
            let name = key.replace('-', "_");
            if name != key {
                old_spellings.push(key.clone());
            }
            if keys.insert(name.clone(), serde_json::to_value(value)?).is_some() {
                bail!("{origin}: key {name:?} is given twice (as {key:?} too)");
            }
        }
        Ok(Recipe { origin: origin.to_string(), keys, old_spellings })
    }

    /// What to tell the user about old spellings, if any were read.
    pub fn note(&self) -> Option<String> {
        (!self.old_spellings.is_empty()).then(|| {
            let now: Vec<String> = self.old_spellings.iter().map(|k| k.replace('-', "_")).collect();
            format!("{}: keys {} are spelled {} now (read either way)", self.origin, self.old_spellings.join(", "), now.join(", "))
        })
    }

    /// The retrain options this recipe sets over the reference defaults, checked; keys in
    /// `not_here` are refused (a service sets them per job).
    pub fn retrain_options(&self, not_here: &[&str]) -> Result<RetrainOptions> {
        if let Some(key) = self.keys.keys().find(|k| not_here.contains(&k.as_str())) {
            bail!("{}: {key} is the service's to set for each job, not a recipe's", self.origin);
        }
        let options: RetrainOptions =
            serde_json::from_value(serde_json::Value::Object(self.keys.clone())).with_context(|| self.origin.clone())?;
        options.validate().with_context(|| self.origin.clone())?;
        Ok(options)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn both_spellings_are_read_and_the_old_one_is_reported() {
        let r = Recipe::parse_toml("replay-all = true\nepochs = 8\n", "gentle.toml").unwrap();
        assert_eq!(r.keys["replay_all"], serde_json::json!(true));
        assert_eq!(r.old_spellings, vec!["replay-all".to_string()]);
        assert!(r.note().unwrap().contains("replay-all are spelled replay_all"), "{:?}", r.note());
        let o = r.retrain_options(&[]).unwrap();
        assert!(o.replay_all && o.epochs == 8);
        assert!(Recipe::parse_toml("epochs = 8\n", "x").unwrap().note().is_none());
        let twice = Recipe::parse_toml("replay-all = true\nreplay_all = false\n", "x").unwrap_err();
        assert!(twice.to_string().contains("given twice"), "{twice}");
    }

    #[test]
    fn a_service_refuses_the_keys_it_sets_and_unknown_keys_are_errors() {
        let r = Recipe::parse_toml("runs_dir = \"elsewhere\"\n", "r.toml").unwrap();
        let e = r.retrain_options(&["runs_dir"]).unwrap_err();
        assert!(e.to_string().contains("runs_dir is the service's to set"), "{e}");
        let e = Recipe::parse_toml("epochz = 3\n", "r.toml").unwrap().retrain_options(&[]).unwrap_err();
        assert!(format!("{e:#}").contains("epochz"), "{e:#}");
        let e = Recipe::parse_toml("epochs = [", "r.toml").unwrap_err();
        assert!(e.to_string().starts_with("r.toml: not valid TOML"), "{e}");
    }
}
