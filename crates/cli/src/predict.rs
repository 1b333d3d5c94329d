//! `predict`: batch scoring of image files and folders with a trained run.

use anyhow::{bail, Context, Result};
use clap::{Parser, ValueEnum};
use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;
use vocml::{interrupt_flag, progress_bar, ComputeArgs, DecodeArgs, TtaArgs};
use vocml_core::infer::{LoadOptions, Predictor};
use vocml_core::io::staging::StagingFile;
use vocml_core::io::walk::collect_inputs;
use vocml_core::predict::merge::merge;
use vocml_core::predict::output::{csv_header, written_rows, Format, RowWriter, Written};
use vocml_core::predict::{score_files, Scored, Shard};
use vocml_core::select::{diverse_selection, informativeness, Informativeness};

/// Score images with a trained run: labels plus a probability for every class.
///
/// Inputs are files and folders (walked recursively, sorted; files with image extensions).
/// JPEG, PNG, BMP, GIF, TIFF and WebP are read; grayscale, alpha, CMYK, 16-bit and EXIF
/// orientation are handled, and images are resized exactly as in training. One row per
/// image is streamed to the output (CSV or JSON lines); an unreadable file gives an error
/// row and the batch goes on. Labels use the run's tuned thresholds (from `evaluate`),
/// else 0.5, unless --threshold is given.
///
/// Exit status: 0 if at least one image was scored (or with --strict, all were), 1
/// otherwise.
///
/// Examples:
///   predict photos/ > predictions.csv
///   predict --run runs/20261123-101500_efficientnet_lite0 --format jsonl --top-k 2 a.jpg b.png
///   predict --shard 3/8 --output part-3.csv /data/images    # one of 8 cluster jobs
///   predict --run runs/A --run runs/B --tta photos/          # average two runs and mirrors
///   predict --shard $((SLURM_ARRAY_TASK_ID+1))/$SLURM_ARRAY_TASK_COUNT --resume --output part.csv /data
///   predict --merge part-1.csv --merge part-2.csv --output all.csv /data   # check and join the parts
#[derive(Parser, Debug)]
#[command(name = "predict", version, long_about, verbatim_doc_comment, args_override_self = true)]
struct Cli {
    /// Image files and folders.
    #[arg(required = true, value_name = "PATH")]
    inputs: Vec<PathBuf>,
    /// Run directory to use (default: runs/best, set by evaluate and retrain); an ensemble
    /// saved by `evaluate --ensemble` is a run too; or a registered model version in MLflow,
    /// `models:/NAME@ALIAS` or `models:/NAME/N` (with --mlflow). Repeat it to average several
    /// runs on the fly (thresholds 0.5 unless --threshold; `evaluate --ensemble` tunes them).
    #[arg(long, value_name = "DIR", default_value = "runs/best")]
    run: Vec<PathBuf>,
    /// MLflow tracking server that resolves `--run models:/...`.
    #[arg(long = "mlflow", value_name = "URI", env = "MLFLOW_TRACKING_URI")]
    mlflow: Option<String>,
    #[command(flatten)]
    tta: TtaArgs,
    #[arg(long, value_enum, default_value_t = FormatArg::Csv)]
    format: FormatArg,
    /// One threshold for every class instead of the run's tuned thresholds.
    #[arg(long, value_name = "P", allow_hyphen_values = true, value_parser = vocml::probability)]
    threshold: Option<f32>,
    /// Decide with the thresholds of this thresholds.json (one `evaluate --out DIR` wrote, or
    /// another run's) instead of the run's own.
    #[arg(long, value_name = "FILE", conflicts_with = "threshold")]
    thresholds_file: Option<PathBuf>,
    /// Also output the K most probable classes.
    #[arg(long, default_value_t = 0, value_name = "K")]
    top_k: usize,
    /// Write rows to FILE instead of standard output (FILE appears complete or not at all:
    /// rows go to a hidden temporary file that is renamed when scoring ends).
    #[arg(long, short, value_name = "FILE")]
    output: Option<PathBuf>,
    /// Score only shard K of N (a stable hash of each path), for splitting huge folders.
    #[arg(long, value_name = "K/N", value_parser = |s: &str| Shard::parse(s).map_err(|e| e.to_string()))]
    shard: Option<Shard>,
    /// Go on with --output FILE where an earlier run stopped (killed, preempted): its rows are
    /// kept, the other images scored and appended. Rows are written whole, one at a time, so
    /// FILE is valid at every point; a FILE of another run, format or --top-k is refused.
    #[arg(long, requires = "output", conflicts_with_all = ["rank", "explain", "merge"])]
    resume: bool,
    /// Instead of scoring: join the outputs of shards (repeat it, one per part, in --format)
    /// into one, in the order one predict over PATH... writes; every image under PATH must have
    /// exactly one row in the parts and every row an image (an error names the first that does
    /// not). No model is loaded.
    #[arg(long, value_name = "PART", conflicts_with_all = ["rank", "explain", "shard"])]
    merge: Vec<PathBuf>,
    /// Exit with status 1 if any input could not be scored.
    #[arg(long)]
    strict: bool,
    /// Order the rows by how unsure the model is, most informative first, with the score as a
    /// column (active learning: label these first). uncertainty: closest probability to its
    /// threshold (closest top-2 margin for grouped tasks); entropy; margin.
    #[arg(long, value_enum, value_name = "HOW")]
    rank: Option<Informativeness>,
    /// With --rank: keep only the K most informative images.
    #[arg(long, value_name = "K", requires = "rank", value_parser = clap::value_parser!(u64).range(1..))]
    select: Option<u64>,
    /// With --select: pick K images that differ from each other, not K near-copies of one
    /// confusing scene: of the 10·K most informative, k-means on the backbone features
    /// (weighted by informativeness) into K clusters, and the image nearest each centre
    /// (Zhdanov 2019, diverse mini-batch active learning).
    #[arg(long, requires = "select")]
    diverse: bool,
    /// Write Grad-CAM heat maps into DIR: for each scored image, one PNG overlay per decided
    /// label (or the most probable class), listed in DIR/explanations.csv.
    #[arg(long, value_name = "DIR")]
    explain: Option<PathBuf>,
    /// With --explain: explain these classes instead of the decided labels.
    #[arg(long, value_name = "A,B", value_delimiter = ',', requires = "explain")]
    explain_classes: Option<Vec<String>>,
    /// With --explain: also write each raw map as float32 .npy (model input size).
    #[arg(long, requires = "explain")]
    explain_npy: bool,
    /// Images per forward pass [default: 8 on a CPU (as fast as larger batches, with less
    /// memory), 32 on a GPU].
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..))]
    batch_size: Option<u64>,
    #[command(flatten)]
    compute: ComputeArgs,
    #[command(flatten)]
    engine: vocml::EngineArgs,
    #[command(flatten)]
    decode: DecodeArgs,
    /// No progress bar or summary.
    #[arg(long, short)]
    quiet: bool,
}

#[derive(ValueEnum, Clone, Copy, Debug)]
enum FormatArg {
    Csv,
    Jsonl,
}

fn main() -> ExitCode {
    vocml::tool_main("predict", run)
}

/// The run (or saved ensemble) of `--run`, or the runs averaged on the fly.
fn load_model(cli: &Cli, device: tch::Device) -> Result<Predictor> {
    let runs = cli.run.iter().map(|r| vocml::resolve_run(r, cli.mlflow.as_deref())).collect::<Result<Vec<_>>>()?;
    if let Some(r) = runs.iter().find(|r| !r.join(vocml_core::run::CONFIG_FILE).is_file()) {
        bail!("{} is not a trained run; train one and select it with `evaluate --runs runs`, or pass --run DIR", r.display());
    }
    let mut model = Predictor::from_members(&runs, &LoadOptions { device, tta: cli.tta.choice(), engine: cli.engine.engine })?;
    if let Some(file) = &cli.thresholds_file {
        if model.task().is_grouped() {
            bail!(
                "--thresholds-file applies to multilabel runs; this {} run labels each image with its most probable class per head",
                model.task().kind.name()
            );
        }
        let t = vocml_core::thresholds::read_thresholds_file(file)?;
        if t.classes != model.classes() {
            bail!("--thresholds-file {}: thresholds for classes {:?}, the model has {:?}", file.display(), t.classes, model.classes());
        }
        (model.thresholds, model.thresholds_tuned) = (t.thresholds, true);
    }
    Ok(model)
}

/// The rows by informativeness, most informative first (unscored failures last), the first
/// `select` of them when given; with `features` (one per row, of the scored ones), a diverse
/// selection of `select` scored rows.
fn ranked(
    rows: Vec<Scored>,
    features: Option<Vec<Option<Vec<f32>>>>,
    task: &vocml_core::task::Task,
    thresholds: &[f32],
    how: Informativeness,
    select: Option<u64>,
) -> Vec<(Scored, Option<f32>)> {
    let mut scored: Vec<(Scored, Option<f32>)> = rows
        .into_iter()
        .map(|r| {
            let s = r.result.as_ref().ok().map(|p| informativeness(task, p, thresholds, how));
            (r, s)
        })
        .collect();
    if let (Some(features), Some(k)) = (features, select) {
        let (rows, described): (Vec<_>, Vec<_>) =
            scored.into_iter().zip(features).filter_map(|(row, f)| Some((row, f?))).filter(|((_, s), _)| s.is_some()).unzip();
        let scores: Vec<f32> = rows.iter().map(|(_, s)| s.unwrap_or(f32::NEG_INFINITY)).collect();
        let described: Vec<&[f32]> = described.iter().map(Vec::as_slice).collect();
        let picked = diverse_selection(&scores, &described, k as usize, 0);
        let mut rows: Vec<Option<(Scored, Option<f32>)>> = rows.into_iter().map(Some).collect();
        return picked.into_iter().filter_map(|i| rows[i].take()).collect();
    }
    scored.sort_by(|a, b| match (a.1, b.1) {
        (Some(x), Some(y)) => y.total_cmp(&x),
        (Some(_), None) => std::cmp::Ordering::Less,
        (None, Some(_)) => std::cmp::Ordering::Greater,
        (None, None) => std::cmp::Ordering::Equal,
    });
    scored.truncate(select.map_or(usize::MAX, |k| k as usize));
    scored
}

/// The --explain options, with --explain-classes checked against the model's classes.
fn explain_options(cli: &Cli, model: &Predictor) -> Result<Option<vocml_core::explain::ExplainOptions>> {
    let Some(dir) = &cli.explain else { return Ok(None) };
    let classes = match &cli.explain_classes {
        Some(names) => Some(
            names
                .iter()
                .map(|n| {
                    model.task().column_of(n).with_context(|| {
                        format!("--explain-classes: unknown class {n:?}; the model's classes are {}", model.classes().join(", "))
                    })
                })
                .collect::<Result<Vec<_>>>()?,
        ),
        None => None,
    };
    Ok(Some(vocml_core::explain::ExplainOptions {
        dir: dir.clone(),
        classes,
        npy: cli.explain_npy,
        alpha: 0.5,
        max_pixels: cli.decode.max_image_pixels,
    }))
}

/// The one-line summary on stderr.
fn print_summary(cli: &Cli, model: &Predictor, scored: usize, failed: usize, ignored: usize, secs: f64) {
    eprintln!(
        "predict: {scored} scored, {failed} failed{} in {secs:.1}s ({:.1} images/s) with {}{}{} on {}{}",
        if ignored > 0 { format!(", {ignored} non-image files ignored") } else { String::new() },
        (scored + failed) as f64 / secs.max(1e-9),
        if model.len() > 1 && cli.run.len() > 1 {
            format!("an ensemble of {} runs", model.len())
        } else {
            model.run_dir.display().to_string()
        },
        if cli.threshold.is_none() && model.thresholds_tuned { " (tuned thresholds)" } else { "" },
        if model.tta { " + flip TTA" } else { "" },
        model.engine(),
        model.engine_note().map(|n| format!(" (model.onnx not used: {n})")).unwrap_or_default()
    );
}

fn run(cli: Cli) -> Result<()> {
    if !cli.merge.is_empty() {
        return merge_parts(&cli);
    }
    let device = cli.compute.resolve()?;
    let batch_size = cli.batch_size.map_or_else(|| vocml_core::device::inference_batch(device), |b| b as usize);
    let shard = cli.shard;
    let model = load_model(&cli, device)?;
    let mut inputs = collect_inputs(&cli.inputs)?;
    if let Some(s) = shard {
        inputs.files.retain(|p| s.contains(p));
    }
    if cli.threshold.is_some() && model.task().is_grouped() {
        bail!(
            "--threshold applies to multilabel runs; this {} run labels each image with its most probable class per head",
            model.task().kind.name()
        );
    }
    let thresholds = match cli.threshold {
        Some(t) => vec![t; model.classes().len()],
        None => model.thresholds.clone(),
    };
    let explain = explain_options(&cli, &model)?;
    let format = format_of(&cli);
    let dest = cli.output.as_ref().map_or("standard output".to_string(), |p| p.display().to_string());
    let written = |r: Result<()>| r.with_context(|| format!("cannot write {dest}"));
    let (staged, mut writer, kept) = match (&cli.output, cli.resume) {
        (Some(path), true) => {
            let header = csv_header(model.task(), cli.top_k, false);
            let (file, done) = resume_output(path, format, &header)?;
            inputs.files.retain(|p| !done.paths.contains(p.to_string_lossy().as_ref()));
            let file: Box<dyn Write> = Box::new(file);
            let (task, th) = (model.task().clone(), thresholds.clone());
            let writer = match done.whole {
                0 => RowWriter::with_score(file, format, task, th, cli.top_k, false).with_context(|| format!("cannot write {dest}"))?,
                _ => RowWriter::continuing(file, format, task, th, cli.top_k),
            };
            (None, writer, done.paths.len())
        }
        _ => {
            let (staged, out) = output(&cli)?;
            let writer = RowWriter::with_score(out, format, model.task().clone(), thresholds.clone(), cli.top_k, cli.rank.is_some())
                .with_context(|| format!("cannot write {dest}"))?;
            (staged, writer, 0)
        }
    };
    let mut held = Vec::new();
    let pb = progress_bar("predict", cli.quiet);
    pb.set_length(inputs.files.len() as u64);
    let cancel = interrupt_flag();
    let started = std::time::Instant::now();
    let mut to_explain = Vec::new();
    let (mut scored, mut failed) = (0usize, 0usize);
    let mut features = Vec::new();
    score_files(&model, &inputs.files, batch_size, cli.decode.max_image_pixels, &cancel, cli.diverse, |row, described| {
        features.push(described);
        if let Ok(p) = &row.result {
            scored += 1;
            if explain.is_some() {
                to_explain.push((row.path.clone(), p.clone()));
            }
        } else {
            failed += 1;
        }
        pb.inc(1);
        if cli.rank.is_some() {
            held.push(row);
            return Ok(());
        }
        written(writer.write(&row))
    })?;
    if let Some(how) = cli.rank {
        for (row, score) in ranked(held, cli.diverse.then_some(features), model.task(), &thresholds, how, cli.select) {
            written(writer.write_scored(&row, score))?;
        }
    }
    written(writer.finish())?;
    if let Some(staged) = staged {
        staged.commit()?;
    }
    pb.finish_and_clear();
    if let Some(opts) = &explain {
        let written = vocml_core::explain::explain_files(&model, &to_explain, opts)?;
        if !cli.quiet {
            eprintln!("predict: {} heat maps in {} (listed in explanations.csv)", written.len(), opts.dir.display());
        }
    }
    if !cli.quiet {
        if kept > 0 {
            eprintln!("predict: {kept} rows were in {dest} already (--resume)");
        }
        print_summary(&cli, &model, scored, failed, inputs.ignored, started.elapsed().as_secs_f64());
    }
    match (kept, scored + failed) {
        (1.., 0) => Ok(()),
        _ => outcome(scored, failed, cli.strict),
    }
}

fn format_of(cli: &Cli) -> Format {
    match cli.format {
        FormatArg::Csv => Format::Csv,
        FormatArg::Jsonl => Format::Jsonl,
    }
}

/// `--resume`: `path` opened to append after its whole rows (a row cut short is dropped), and
/// the rows it holds; created (empty) when it does not exist.
fn resume_output(path: &std::path::Path, format: Format, header: &str) -> Result<(std::fs::File, Written)> {
    let text = match std::fs::read(path) {
        Ok(bytes) => String::from_utf8(bytes).map_err(|_| anyhow::anyhow!("--resume {}: not a text output of predict", path.display()))?,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => String::new(),
        Err(e) => return Err(anyhow::anyhow!("--resume {}: {e}", path.display())),
    };
    let done = written_rows(&text, format, header).with_context(|| format!("--resume {}", path.display()))?;
    let file =
        std::fs::OpenOptions::new().create(true).append(true).open(path).with_context(|| format!("cannot open {}", path.display()))?;
    file.set_len(done.whole as u64).with_context(|| format!("cannot write {}", path.display()))?;
    Ok((file, done))
}

/// `--merge`: the parts joined into --output (staged) or standard output.
fn merge_parts(cli: &Cli) -> Result<()> {
    let inputs = collect_inputs(&cli.inputs)?;
    let expected: Vec<String> = inputs.files.iter().map(|p| p.to_string_lossy().into_owned()).collect();
    let parts = cli
        .merge
        .iter()
        .map(|p| Ok((p.display().to_string(), std::fs::read_to_string(p).with_context(|| format!("--merge {}", p.display()))?)))
        .collect::<Result<Vec<_>>>()?;
    let merged = merge(&parts, &expected, format_of(cli))?;
    let (staged, mut out) = output(cli)?;
    out.write_all(merged.as_bytes()).and_then(|_| out.flush()).with_context(|| "cannot write the merged rows")?;
    drop(out);
    if let Some(staged) = staged {
        staged.commit()?;
    }
    if !cli.quiet {
        eprintln!("predict: merged {} parts: {} rows, one per image", parts.len(), expected.len());
    }
    Ok(())
}

/// Where rows go: a file is staged and renamed into place once every row is written (through
/// a symbolic link to a file; a directory is refused); standard output streams row by row.
fn output(cli: &Cli) -> Result<(Option<StagingFile>, Box<dyn Write>)> {
    Ok(match &cli.output {
        Some(p) => {
            let (staged, file) = StagingFile::create(p)?;
            (Some(staged), Box::new(std::io::BufWriter::new(file)))
        }
        None => (None, Box::new(std::io::stdout().lock())),
    })
}

/// The run's result: an error when nothing was scored, or (with `strict`) when anything failed.
fn outcome(scored: usize, failed: usize, strict: bool) -> Result<()> {
    if scored == 0 && failed > 0 {
        bail!("no input could be scored ({failed} failed)");
    }
    if scored == 0 {
        bail!("no images found in the given inputs");
    }
    if strict && failed > 0 {
        bail!("{failed} inputs could not be scored (--strict)");
    }
    Ok(())
}
