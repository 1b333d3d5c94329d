//! `evaluate`: multi-label metrics of one or more runs on a prepared split, per-class
//! thresholds tuned on validation, a comparison table, and `runs/best`.

use anyhow::{bail, Context, Result};
use clap::{Parser, ValueEnum};
use std::path::PathBuf;
use std::process::ExitCode;
use vocml::{usage, ComputeArgs, TrackingArgs, TtaArgs};
use vocml_core::eval::comparison::{best_index, write_comparison, RankMetric};
use vocml_core::eval::evaluate::{evaluate_run, Evaluation};
use vocml_core::eval::pipeline::evaluate_into;
use vocml_core::infer::predictor::create_ensemble;
use vocml_core::run::{list_runs, point_best};
use vocml_core::thresholds::ThresholdRule;

/// Evaluate trained runs on a prepared split and compare them.
///
/// For each run: per-class precision, recall, F1, VOC average precision and support; micro
/// and macro F1; subset (exact-match) accuracy; label accuracy; Hamming loss; mAP; loss.
/// Multilabel metrics are reported at threshold 0.5, at per-class thresholds tuned on the
/// validation split (maximising F1) and at those shrunk toward 0.5 by the evidence behind
/// them; the run's threshold rule (--thresholds, else its recipe's `thresholds`, else the
/// default, shrunk) picks the set stored in the run (thresholds.json, with the rule and why)
/// for `predict` and `serve`. Multiclass and multihead runs are scored by their most probable class per
/// head, with each head's accuracy and confusion matrix (printed, in evaluation.json, and
/// drawn to confusion.png, or confusion_<head>.png per head). Results go to
/// <run>/evaluation.json (or, with --out DIR, to DIR with metrics.json and pr/<class>.csv
/// for pipeline tools, the run untouched). With several runs, a comparison table is printed
/// and written (comparison.csv, comparison.md) and runs/best is pointed at the best run,
/// atomically.
///
/// --ensemble saves the given runs as one more run that averages their probabilities
/// (runs/<timestamp>_ensemble/: a config.json listing the members, then thresholds and
/// evaluation like any run); predict and runs/best treat it as a run. --tta averages each
/// image with its horizontal mirror.
///
/// Examples:
///   evaluate --data processed_data --run runs/20261123-101500_efficientnet_lite0
///   evaluate --data processed_data --runs runs --metric mAP
///   evaluate --data processed_data --run runs/A --run runs/B --run runs/C --ensemble --tta
///   evaluate --data prepared --run model --out evaluation      # a pipeline stage (DVC, Make)
#[derive(Parser, Debug)]
#[command(name = "evaluate", version, long_about, verbatim_doc_comment, args_override_self = true)]
struct Cli {
    /// voc-prep output directory.
    #[arg(long, value_name = "DIR", default_value = "processed_data")]
    data: PathBuf,
    /// A run directory to evaluate (repeatable).
    #[arg(long = "run", value_name = "DIR")]
    runs_list: Vec<PathBuf>,
    /// Evaluate every finished run in this directory and select the best (`--runs` is the
    /// same flag).
    #[arg(long = "runs-dir", visible_alias = "runs", value_name = "DIR")]
    runs_dir: Option<PathBuf>,
    /// Split to score.
    #[arg(long, value_enum, default_value_t = SplitArg::Test)]
    split: SplitArg,
    /// Metric that picks the best run: macro_f1, micro_f1, mAP, accuracy (exact match),
    /// subset_accuracy (the same), label_accuracy; auto: accuracy when every run is
    /// multiclass or multihead, else macro_f1.
    #[arg(long, value_enum, default_value_t = RankMetric::Auto, value_name = "NAME")]
    metric: RankMetric,
    /// Point runs/best at the best run even when a single run is evaluated.
    #[arg(long)]
    select: bool,
    /// Do not touch runs/best.
    #[arg(long, conflicts_with = "select")]
    no_select: bool,
    /// Also save the given runs (two or more --run) as an ensemble run that averages their
    /// probabilities, in the first run's directory, and evaluate it beside them.
    #[arg(long)]
    ensemble: bool,
    /// Write the evaluation of the one --run to exactly DIR (for pipeline tools): its
    /// evaluation.json, thresholds.json, plots, metrics.json (mAP, F1s, per class) and
    /// pr/<class>.csv; the run and runs/best are left untouched, and `predict
    /// --thresholds-file DIR/thresholds.json` decides with its thresholds. An earlier
    /// evaluation or an empty directory there is replaced atomically.
    #[arg(long, value_name = "DIR", conflicts_with_all = ["runs_dir", "ensemble", "select"])]
    out: Option<PathBuf>,
    /// Decision thresholds to store in each run: tuned (F1-maximising on val), shrunk
    /// (tuned, moved toward 0.5 unless many validation positives back them) or half (0.5);
    /// default: the run's recipe's `thresholds`, else shrunk.
    #[arg(long, value_enum, value_name = "RULE")]
    thresholds: Option<ThresholdRule>,
    #[command(flatten)]
    tta: TtaArgs,
    #[command(flatten)]
    compute: ComputeArgs,
    #[command(flatten)]
    engine: vocml::EngineArgs,
    #[command(flatten)]
    tracking: TrackingArgs,
    /// Images per forward pass [default: 8 on a CPU (as fast as larger batches, with less
    /// memory), 32 on a GPU].
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..))]
    batch_size: Option<u64>,
    /// Print only the summary lines.
    #[arg(long, short)]
    quiet: bool,
}

#[derive(ValueEnum, Clone, Copy, Debug)]
enum SplitArg {
    Train,
    Val,
    Test,
}

fn main() -> ExitCode {
    vocml::tool_main("evaluate", run)
}

/// Per-class metrics, then accuracy and the confusion matrix of every head.
fn print_grouped(e: &Evaluation) {
    println!("{} on {} ({} images, split {}, {} task)", e.run.display(), e.data.display(), e.images, e.split, e.task.name());
    let w = e.at_half.per_class.iter().map(|c| c.class.len()).max().unwrap_or(5).max(5);
    println!("{:<w$} {:>9} {:>7} {:>6} {:>6} {:>8}", "class", "precision", "recall", "f1", "ap", "support");
    for c in &e.at_half.per_class {
        let ap = c.ap.map(|a| format!("{a:.3}")).unwrap_or_else(|| "-".into());
        println!("{:<w$} {:>9.3} {:>7.3} {:>6.3} {:>6} {:>8}", c.class, c.precision, c.recall, c.f1, ap, c.support);
    }
    for g in &e.groups {
        let w = g.classes.iter().map(String::len).max().unwrap_or(4).max(10);
        println!("\n{}: accuracy {:.4}  macro-F1 {:.4}  (rows true, columns predicted)", g.name, g.accuracy, g.macro_f1);
        println!("{:<w$} {}", "", g.classes.iter().map(|c| format!("{c:>w$}")).collect::<Vec<_>>().join(" "));
        for (name, row) in g.classes.iter().zip(&g.confusion) {
            println!("{name:<w$} {}", row.iter().map(|v| format!("{v:>w$}")).collect::<Vec<_>>().join(" "));
        }
    }
    println!("\naccuracy {:.4} (every head right)  loss {:.4}  macro-F1 {:.4}  mAP {:.4}", e.accuracy, e.loss, e.at_half.macro_f1, e.map);
    println!("inference {:.2} ms/image ({}), {} parameters", e.inference_ms_per_image, e.engine, e.parameters);
}

fn print_table(e: &Evaluation) {
    if !e.groups.is_empty() {
        return print_grouped(e);
    }
    let used = e.threshold_rule.map(|_| e.decided());
    println!("{} on {} ({} images, split {})", e.run.display(), e.data.display(), e.images, e.split);
    println!(
        "{:<12} {:>9} {:>7} {:>6} {:>6} {:>8} {:>9} {:>8}",
        "class", "precision", "recall", "f1", "ap", "support", "threshold", "f1@thr"
    );
    for (i, c) in e.at_half.per_class.iter().enumerate() {
        let (th, tf1) = used.map(|t| (t.per_class[i].threshold, t.per_class[i].f1)).unwrap_or((0.5, c.f1));
        let ap = c.ap.map(|a| format!("{a:.3}")).unwrap_or_else(|| "-".into());
        println!(
            "{:<12} {:>9.3} {:>7.3} {:>6.3} {:>6} {:>8} {:>9.3} {:>8.3}",
            c.class, c.precision, c.recall, c.f1, ap, c.support, th, tf1
        );
    }
    let m = &e.at_half;
    println!(
        "at 0.5:   macro-F1 {:.4}  micro-F1 {:.4}  subset acc {:.4}  label acc {:.4}  Hamming {:.4}  mAP {:.4}  loss {:.4}",
        m.macro_f1, m.micro_f1, m.subset_accuracy, m.label_accuracy, m.hamming_loss, e.map, e.loss
    );
    for (name, set) in [("tuned:", e.tuned.as_ref()), ("shrunk:", e.shrunk.as_ref())] {
        if let Some(t) = set {
            println!(
                "{name:<9} macro-F1 {:.4}  micro-F1 {:.4}  subset acc {:.4}  label acc {:.4}  Hamming {:.4}  (thresholds from {})",
                t.macro_f1,
                t.micro_f1,
                t.subset_accuracy,
                t.label_accuracy,
                t.hamming_loss,
                e.tuned_on.as_deref().unwrap_or("-")
            );
        }
    }
    if let Some(rule) = e.threshold_rule {
        println!("thresholds stored: {rule} (from {})", e.threshold_rule_why);
    }
    println!("inference {:.2} ms/image ({}), {} parameters", e.inference_ms_per_image, e.engine, e.parameters);
}

fn run(cli: Cli) -> Result<()> {
    let device = cli.compute.resolve()?;
    let batch_size = cli.batch_size.map_or_else(|| vocml_core::device::inference_batch(device), |b| b as usize);
    // What was named explicitly must be right; runs found in --runs that cannot be evaluated
    // are skipped with a warning.
    vocml_core::dataset::manifest::Manifest::load(&cli.data)?;
    let tracker = cli.tracking.tracker("evaluate")?;
    for r in &cli.runs_list {
        vocml_core::run::config::RunConfig::read(r).with_context(|| format!("--run {}", r.display()))?;
    }
    if cli.out.is_some() && cli.runs_list.len() != 1 {
        return Err(usage(anyhow::anyhow!("--out takes the evaluation of one --run (got {})", cli.runs_list.len())));
    }
    let mut runs = cli.runs_list.clone();
    if let Some(dir) = &cli.runs_dir {
        runs.extend(list_runs(dir)?);
    }
    if runs.is_empty() {
        bail!("nothing to evaluate: pass --run DIR (repeatable) or --runs DIR");
    }
    let split = match cli.split {
        SplitArg::Train => "train",
        SplitArg::Val => "val",
        SplitArg::Test => "test",
    };
    let tta = cli.tta.choice();
    if cli.ensemble {
        if cli.runs_list.len() < 2 {
            bail!("--ensemble needs two or more --run directories (got {})", cli.runs_list.len());
        }
        let home = cli.runs_list[0].parent().map(PathBuf::from).unwrap_or_default();
        let dir = create_ensemble(&home, &cli.runs_list, tta, device)?;
        if !cli.quiet {
            eprintln!("evaluate: saved ensemble {}", dir.display());
        }
        runs.push(dir);
    }
    let many = runs.len() > 1;
    let mut evals = Vec::new();
    for r in &runs {
        let load = vocml_core::infer::LoadOptions { device, tta, engine: cli.engine.engine };
        let evaluated = match &cli.out {
            Some(out) => evaluate_into(out, r, &cli.data, split, &load, batch_size, cli.thresholds),
            None => evaluate_run(r, &cli.data, split, &load, batch_size, cli.thresholds),
        };
        match evaluated {
            Ok(e) => {
                if !cli.quiet {
                    print_table(&e);
                    println!();
                }
                evals.push(e);
            }
            Err(e) if many => eprintln!("evaluate: warning: skipping {}: {e:#}", r.display()),
            Err(e) => return Err(e),
        }
    }
    if evals.is_empty() {
        bail!("no run could be evaluated on {}", cli.data.display());
    }
    let metric = cli.metric.resolve(&evals);
    let best = best_index(&evals, metric).context("no evaluations")?;
    let mut comparison = Vec::new();
    if many {
        let out_dir = cli.runs_dir.clone().unwrap_or_else(|| runs[0].parent().map(PathBuf::from).unwrap_or_default());
        let md = write_comparison(&out_dir, &evals)?;
        print!("{md}");
        println!("(also in {}/comparison.csv and comparison.md)", out_dir.display());
        comparison = vec![out_dir.join(vocml_core::run::COMPARISON_CSV), out_dir.join(vocml_core::run::COMPARISON_MD)];
    }
    let e = &evals[best];
    let selected = (many || cli.runs_dir.is_some() || cli.select) && !cli.no_select && cli.out.is_none();
    if selected {
        let parent = e.run.parent().map(PathBuf::from).unwrap_or_default();
        let link = point_best(&parent, &e.run)?;
        println!("evaluate: best by {} = {:.4}: {} ({} -> {})", metric.name(), metric.value(e), e.model, link.display(), e.run.display());
    } else {
        println!("evaluate: {} {} = {:.4}, mAP {:.4}", e.model, metric.name(), metric.value(e), e.map);
    }
    if let Some(out) = &cli.out {
        println!("evaluate: written to {}", out.display());
    }
    if let Some(t) = &tracker {
        log_to_mlflow(t, &evals, cli.out.as_deref(), best, selected, &comparison)?;
    }
    Ok(())
}

/// Logs each evaluation to the MLflow run of its model (ensembles are not logged), the
/// comparison to the best one's, and moves the `champion` alias when a best was selected.
fn log_to_mlflow(
    t: &vocml_track::Tracker,
    evals: &[Evaluation],
    out: Option<&std::path::Path>,
    best: usize,
    selected: bool,
    comparison: &[PathBuf],
) -> Result<()> {
    let is_ensemble = |run: &std::path::Path| vocml_core::run::config::RunConfig::read(run).is_ok_and(|c| c.as_ensemble().is_some());
    for (i, e) in evals.iter().enumerate().filter(|(_, e)| !is_ensemble(&e.run)) {
        let files = if i == best { comparison } else { &[] };
        t.settle(&format!("the evaluation of {}", e.run.display()), t.log_evaluation(&e.run, out.unwrap_or(&e.run), files))?;
    }
    if selected && !is_ensemble(&evals[best].run) {
        if let Some(alias) = t.settle("the champion alias", t.promote(&evals[best].run))? {
            println!("evaluate: {alias}");
        }
    }
    Ok(())
}
