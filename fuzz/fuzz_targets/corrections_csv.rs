//! Corrections CSV text (records, quoting, labels) against a multilabel and a multihead task.
#![no_main]
use libfuzzer_sys::fuzz_target;
use std::sync::OnceLock;
use vocml_core::retrain::feedback::parse_corrections;
use vocml_core::task::{LabelGroup, Task};

fn tasks() -> &'static [Task; 2] {
    static TASKS: OnceLock<[Task; 2]> = OnceLock::new();
    TASKS.get_or_init(|| {
        let names = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        let multilabel = Task::multilabel(names(&["person", "chair", "dog", "sofa"]));
        let groups = vec![
            LabelGroup { name: "color".into(), classes: names(&["red", "blue"]) },
            LabelGroup { name: "shape".into(), classes: names(&["circle", "square"]) },
        ];
        let multihead = Task::multihead(groups).expect("a valid two-head task");
        [multilabel, multihead]
    })
}

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        for task in tasks() {
            if let Ok(rows) = parse_corrections(text, task) {
                assert!(rows.iter().all(|r| !r.path.is_empty() && r.line >= 1));
            }
        }
        for (line, _) in vocml_core::io::csv_line::records(text) {
            assert!(line >= 1);
        }
    }
});
