//! `voc-prep`: PASCAL VOC -> filtered, resized, split `.npy` arrays and `manifest.json`.
//! Also writes the embedded synthetic dataset (`voc-prep synth`).

use anyhow::Result;
use clap::{Args, Parser, Subcommand, ValueEnum};
use std::path::PathBuf;
use std::process::ExitCode;
use vocml::{interrupt_flag, progress_bar, DecodeArgs};
use vocml_core::dataset::classes::parse_class_list;
use vocml_core::dataset::import::{import_csv, import_folders};
use vocml_core::dataset::import_coco::import_coco;
use vocml_core::dataset::import_label_studio::{import_label_studio, LabelStudioImport, UrlMap};
use vocml_core::dataset::manifest::{Manifest, SPLITS};
use vocml_core::dataset::prep::{prepare, LabelSource, OutputSpec, PrepConfig};
use vocml_core::dataset::split::{Fold, SplitFractions};
use vocml_core::dataset::voc::synth::{generate, SynthConfig};
use vocml_core::io::image::ResizeMode;
use vocml_core::io::npy::DType;
use vocml_core::retrain::training_set::{add_feedback, FeedbackDataConfig};
use vocml_core::task::TaskKind;

/// Prepare PASCAL VOC images for multi-label training.
///
/// Reads a VOC root (the directory holding Annotations/, JPEGImages/, ImageSets/), labels
/// every image with the target classes, keeps the images that hold at least one, resizes
/// them to a square and writes a stratified train/val/test split as NumPy arrays:
/// X_<split>.npy (N,H,W,3 uint8 RGB), y_<split>.npy (N,C float32 0/1) and manifest.json.
/// Output is written to a temporary directory and renamed at the end.
///
/// Examples:
///   voc-prep --voc-root VOCdevkit/VOC2007 --out processed_data
///   voc-prep --voc-root VOCdevkit/VOC2007 --labels imagesets --image-set train --classes all
///   voc-prep --voc-root my_images --split 0,0,1 --out scoring_data
///   voc-prep synth --out data/synth-voc --images 240
///
/// Other task types (multiclass, folder-name multilabel, multihead) import with the
/// `folders` and `csv` subcommands; `shapes` writes an example dataset for them:
///   voc-prep shapes --out data/shapes
///   voc-prep folders --root data/shapes/images --size 64 --out processed_shapes
///   voc-prep csv --file data/shapes/labels.csv --task multihead --size 64 --out processed_heads
///
/// Corrections (the feedback store) into a training split for the next full train:
///   voc-prep feedback --base processed_data --feedback runs/feedback --out processed_fb
#[derive(Parser, Debug)]
#[command(name = "voc-prep", version, long_about, verbatim_doc_comment, args_override_self = true)]
#[command(args_conflicts_with_subcommands = true, subcommand_negates_reqs = true)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    #[command(flatten)]
    prep: PrepArgs,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Write the embedded synthetic VOC-layout dataset (drawn scenes; for demos and tests).
    Synth(SynthArgs),
    /// Import a class-per-folder tree (ROOT/<class>/**/image).
    ///
    /// --task multiclass (default): each folder is one class (softmax). --task multilabel:
    /// each folder name is split on --separator into labels, e.g. red_dress -> {red, dress}.
    /// Files without an image extension and unreadable images are skipped and listed in the
    /// manifest; a class folder without images is an error.
    ///
    /// Example:
    ///   voc-prep folders --root data/shapes/images --task multilabel --size 64 --out processed_shapes
    #[command(verbatim_doc_comment)]
    Folders(FoldersArgs),
    /// Import a CSV of image paths and labels (header `path,<label columns...>`).
    ///
    /// --task multilabel: one 0/1 column per class. --task multiclass: one column of class
    /// names. --task multihead: one column of class names per head (the header names the
    /// heads), e.g. `path,type,part,angle`. Relative paths are resolved against
    /// --images-root (default: the CSV's folder). Missing or unreadable images are skipped
    /// and listed in the manifest; a malformed line is an error naming it.
    ///
    /// Example:
    ///   voc-prep csv --file data/shapes/labels.csv --task multihead --size 64 --out processed_heads
    #[command(verbatim_doc_comment)]
    Csv(CsvArgs),
    /// Import COCO instances JSON: multilabel, each image labelled with its instances'
    /// categories (any category set: COCO's 80, VOC's 20, your own).
    ///
    /// --classes picks and orders the label columns (default: every category, in the file's
    /// order); images with none of them are left out unless --keep-empty. Image files are
    /// `file_name` under --images-root (default: the JSON's folder); missing or unreadable
    /// ones are skipped and listed in the manifest.
    ///
    /// Example:
    ///   voc-prep coco --file annotations/instances_train2017.json --images-root train2017 \
    ///            --classes person,chair,dog,couch --size 224 --out processed_coco
    #[command(verbatim_doc_comment)]
    Coco(CocoArgs),
    /// Import a Label Studio JSON export of an image classification project (`<Choices>`):
    /// multilabel, each task labelled with its latest annotation's choices.
    ///
    /// Images: uploads (/data/upload/...) and local files (/data/local-files/?d=...) are read
    /// under --images-root (Label Studio's media folder, or its local-files document root);
    /// http(s) URLs only through --url-map PREFIX=DIR (nothing is downloaded). Tasks without
    /// an annotation, with an unmapped URL or a missing file are skipped and listed in the
    /// manifest. --classes picks and orders the label columns (default: every choice used).
    ///
    /// Example:
    ///   voc-prep label-studio --file project-1-export.json \
    ///            --images-root ~/.local/share/label-studio/media --size 224 --out processed_ls
    #[command(verbatim_doc_comment, name = "label-studio")]
    LabelStudio(LabelStudioArgs),
    /// Add the feedback store's corrections (retrain, serve's /correct and /retrain, Label
    /// Studio annotations) to a prepared dataset's training split, for a full `train` that
    /// learns from every correction so far. The images are the store's copies, resized as the
    /// base was; a base training row that a correction relabels is replaced; validation and
    /// test are the base's, unchanged, so the new run is scored on the same images.
    ///
    /// Example:
    ///   voc-prep feedback --base processed_data --feedback runs/feedback --out processed_fb
    ///   train --config configs/voc4-best.toml --data processed_fb
    #[command(verbatim_doc_comment)]
    Feedback(FeedbackArgs),
    /// Write the embedded example dataset of the other task types: drawn shapes of three
    /// colours and forms, as a class-per-folder tree (images/<color>_<shape>/) and a CSV
    /// (labels.csv: path,color,shape).
    Shapes(ShapesArgs),
}

/// Output options shared by every importer.
#[derive(Args, Debug)]
struct OutputArgs {
    /// Output directory (replaced atomically if it holds an earlier voc-prep output).
    #[arg(long, value_name = "DIR", default_value = "processed_data")]
    out: PathBuf,
    /// Side of the square output images, in pixels.
    #[arg(long, default_value_t = 224, value_name = "PX")]
    size: u32,
    /// How to make images square: stretch (reference), letterbox (pad) or center-crop.
    #[arg(long, value_enum, default_value_t = ResizeArg::Stretch)]
    resize: ResizeArg,
    /// Train,val,test fractions; `0,0,1` puts everything in test.
    #[arg(long, default_value = "0.7,0.15,0.15", value_name = "T,V,T", allow_hyphen_values = true, value_parser = |s: &str| SplitFractions::parse(s).map_err(|e| e.to_string()))]
    split: SplitFractions,
    /// Cross-validation: the test split is fold I of K (stratified like --split; over
    /// I = 1..K every image is tested once), train and val split the rest in --split's
    /// train:val ratio. Same --seed for every fold.
    #[arg(long, value_name = "I/K", value_parser = |s: &str| Fold::parse(s).map_err(|e| e.to_string()))]
    fold: Option<Fold>,
    /// Seed of the split (same seed and inputs, same split).
    #[arg(long, default_value_t = 42, value_name = "S")]
    seed: u64,
    /// Pixel dtype of X: uint8 (0..255, compact) or f32 ([0,1], like the reference).
    #[arg(long, value_enum, default_value_t = DTypeArg::U8)]
    dtype: DTypeArg,
    /// Replace --out even if it does not hold an earlier voc-prep output.
    #[arg(long)]
    force: bool,
    #[command(flatten)]
    decode: DecodeArgs,
    /// No progress bar.
    #[arg(long, short)]
    quiet: bool,
}

impl OutputArgs {
    fn spec(&self) -> Result<OutputSpec> {
        self.decode.apply();
        Ok(OutputSpec {
            out: self.out.clone(),
            size: self.size,
            resize: match self.resize {
                ResizeArg::Stretch => ResizeMode::Stretch,
                ResizeArg::Letterbox => ResizeMode::Letterbox,
                ResizeArg::CenterCrop => ResizeMode::CenterCrop,
            },
            split: self.split,
            fold: self.fold,
            seed: self.seed,
            dtype: match self.dtype {
                DTypeArg::U8 => DType::U8,
                DTypeArg::F32 => DType::F32,
            },
            force: self.force,
        })
    }
}

#[derive(ValueEnum, Clone, Copy, Debug)]
enum TaskArg {
    Multilabel,
    Multiclass,
    Multihead,
}

impl TaskArg {
    fn kind(self) -> TaskKind {
        match self {
            TaskArg::Multilabel => TaskKind::Multilabel,
            TaskArg::Multiclass => TaskKind::Multiclass,
            TaskArg::Multihead => TaskKind::Multihead,
        }
    }
}

#[derive(Args, Debug)]
struct FoldersArgs {
    /// Folder holding one sub-folder per class (or per label combination).
    #[arg(long, value_name = "DIR")]
    root: PathBuf,
    /// multiclass (a folder is a class) or multilabel (folder names split into labels).
    #[arg(long, value_enum, default_value_t = TaskArg::Multiclass)]
    task: TaskArg,
    /// With --task multilabel: what separates the labels in a folder name.
    #[arg(long, default_value = "_", value_name = "TEXT")]
    separator: String,
    #[command(flatten)]
    output: OutputArgs,
}

#[derive(Args, Debug)]
struct CsvArgs {
    /// The CSV file (header `path,<label columns...>`).
    #[arg(long, value_name = "FILE")]
    file: PathBuf,
    /// multilabel (0/1 columns), multiclass (one class column) or multihead (a column per head).
    #[arg(long, value_enum)]
    task: TaskArg,
    /// Base folder of relative image paths (default: the CSV's folder).
    #[arg(long, value_name = "DIR")]
    images_root: Option<PathBuf>,
    #[command(flatten)]
    output: OutputArgs,
}

#[derive(Args, Debug)]
struct CocoArgs {
    /// The COCO instances JSON (images, annotations, categories).
    #[arg(long, value_name = "FILE")]
    file: PathBuf,
    /// Folder of the images' `file_name`s (default: the JSON's folder).
    #[arg(long, value_name = "DIR")]
    images_root: Option<PathBuf>,
    /// Label columns, comma-separated category names in order (default: every category).
    #[arg(long, value_name = "LIST", value_delimiter = ',')]
    classes: Vec<String>,
    /// Keep images with none of the classes (as all-negative rows).
    #[arg(long)]
    keep_empty: bool,
    #[command(flatten)]
    output: OutputArgs,
}

#[derive(Args, Debug)]
struct LabelStudioArgs {
    /// The export (Label Studio's `JSON` format).
    #[arg(long, value_name = "FILE")]
    file: PathBuf,
    /// Folder of uploads, local files and plain paths (default: the JSON's folder).
    #[arg(long, value_name = "DIR")]
    images_root: Option<PathBuf>,
    /// Read URLs starting with PREFIX from DIR (repeatable), e.g.
    /// https://bucket.example/images/=/data/images.
    #[arg(long, value_name = "PREFIX=DIR")]
    url_map: Vec<UrlMap>,
    /// The key of the image in each task's data.
    #[arg(long, value_name = "KEY", default_value = "image")]
    image_key: String,
    /// The <Choices> tag to read, when the project has several.
    #[arg(long, value_name = "NAME")]
    from_name: Option<String>,
    /// Label columns, comma-separated choices in order (default: every choice used).
    #[arg(long, value_name = "LIST", value_delimiter = ',')]
    classes: Vec<String>,
    #[command(flatten)]
    output: OutputArgs,
}

#[derive(Args, Debug)]
struct FeedbackArgs {
    /// The prepared dataset (a voc-prep output) whose training split the corrections join.
    #[arg(long, value_name = "DIR")]
    base: PathBuf,
    /// The feedback store.
    #[arg(long, value_name = "DIR", default_value = "runs/feedback")]
    feedback: PathBuf,
    /// Output directory (replaced atomically if it holds an earlier voc-prep output).
    #[arg(long, value_name = "DIR")]
    out: PathBuf,
    /// Replace --out even if it does not hold an earlier voc-prep output.
    #[arg(long)]
    force: bool,
    #[command(flatten)]
    decode: DecodeArgs,
    /// No progress bar.
    #[arg(long, short)]
    quiet: bool,
}

#[derive(Args, Debug)]
struct ShapesArgs {
    /// Directory to write.
    #[arg(long, value_name = "DIR")]
    out: PathBuf,
    /// Number of images (cycling through the 9 colour/shape combinations).
    #[arg(long, default_value_t = 360, value_name = "N")]
    images: usize,
    /// Side of the drawn images in pixels.
    #[arg(long, default_value_t = 64, value_name = "PX")]
    size: u32,
    #[arg(long, default_value_t = 7, value_name = "S")]
    seed: u64,
}

#[derive(Args, Debug)]
struct SynthArgs {
    /// Directory to write (becomes a VOC root with JPEGImages/, Annotations/, ImageSets/).
    #[arg(long, value_name = "DIR")]
    out: PathBuf,
    /// Number of images.
    #[arg(long, default_value_t = 240, value_name = "N")]
    images: usize,
    /// Random seed (same seed, same dataset).
    #[arg(long, default_value_t = 7, value_name = "S")]
    seed: u64,
    /// No progress bar.
    #[arg(long, short)]
    quiet: bool,
}

#[derive(Args, Debug)]
struct PrepArgs {
    /// VOC root: the directory containing Annotations/, JPEGImages/ and ImageSets/.
    #[arg(long, value_name = "DIR", required = true)]
    voc_root: Option<PathBuf>,
    /// Target classes: comma-separated VOC names in label order, or `all` (20, VOC order).
    #[arg(long, value_name = "LIST", default_value = "person,chair,dog,sofa")]
    classes: String,
    /// Label source: XML objects, or the official ImageSets/Main/<class>_<set>.txt lists.
    #[arg(long, value_enum, default_value_t = LabelsArg::Annotations)]
    labels: LabelsArg,
    /// Image id list from ImageSets/Main/<set>.txt (default: every annotated image).
    #[arg(long, value_enum, value_name = "SET")]
    image_set: Option<ImageSetArg>,
    /// With --labels annotations: objects marked difficult do not count.
    #[arg(long)]
    ignore_difficult: bool,
    /// With --labels imagesets: label 0 (only difficult instances) counts as present.
    #[arg(long)]
    difficult_as_positive: bool,
    /// Keep images that hold none of the target classes (as all-negative rows).
    #[arg(long)]
    keep_empty: bool,
    /// Skip malformed annotation XML files (listed in the manifest) instead of failing.
    #[arg(long)]
    skip_bad: bool,
    #[command(flatten)]
    output: OutputArgs,
}

#[derive(ValueEnum, Clone, Copy, Debug)]
enum LabelsArg {
    Annotations,
    Imagesets,
}

#[derive(ValueEnum, Clone, Copy, Debug)]
enum ImageSetArg {
    Train,
    Val,
    Trainval,
    Test,
}

#[derive(ValueEnum, Clone, Copy, Debug)]
enum ResizeArg {
    Stretch,
    Letterbox,
    CenterCrop,
}

#[derive(ValueEnum, Clone, Copy, Debug)]
enum DTypeArg {
    U8,
    F32,
}

impl PrepArgs {
    fn into_config(self) -> Result<PrepConfig> {
        Ok(PrepConfig {
            voc_root: self.voc_root.expect("required by clap"),
            classes: parse_class_list(&self.classes)?,
            labels: match self.labels {
                LabelsArg::Annotations => LabelSource::Annotations,
                LabelsArg::Imagesets => LabelSource::ImageSets,
            },
            ignore_difficult: self.ignore_difficult,
            difficult_as_positive: self.difficult_as_positive,
            image_set: self.image_set.map(|s| s.to_possible_value().expect("no skipped variants").get_name().to_string()),
            keep_empty: self.keep_empty,
            skip_bad: self.skip_bad,
            output: self.output.spec()?,
        })
    }
}

fn main() -> ExitCode {
    vocml::tool_main("voc-prep", |cli: Cli| match cli.command {
        Some(Command::Synth(args)) => run_synth(args),
        Some(Command::Folders(args)) => {
            run_import(&args.output, |spec, pb, cancel| import_folders(&args.root, args.task.kind(), &args.separator, spec, pb, cancel))
        }
        Some(Command::Csv(args)) => run_import(&args.output, |spec, pb, cancel| {
            import_csv(&args.file, args.task.kind(), args.images_root.as_deref(), spec, pb, cancel)
        }),
        Some(Command::Coco(args)) => run_import(&args.output, |spec, pb, cancel| {
            let classes = (!args.classes.is_empty()).then_some(args.classes.as_slice());
            import_coco(&args.file, args.images_root.as_deref(), classes, args.keep_empty, spec, pb, cancel)
        }),
        Some(Command::LabelStudio(args)) => run_import(&args.output, |spec, pb, cancel| {
            let how = LabelStudioImport {
                json: &args.file,
                images_root: args.images_root.as_deref(),
                url_maps: &args.url_map,
                image_key: &args.image_key,
                from_name: args.from_name.as_deref(),
                classes: (!args.classes.is_empty()).then_some(args.classes.as_slice()),
            };
            import_label_studio(&how, spec, pb, cancel)
        }),
        Some(Command::Feedback(args)) => run_feedback(args),
        Some(Command::Shapes(args)) => {
            let csv = vocml_core::dataset::shapes::generate(&args.out, args.images, args.size, args.seed)?;
            println!(
                "wrote {} shape images to {} (class folders in images/, labels in {})",
                args.images,
                args.out.display(),
                csv.display()
            );
            Ok(())
        }
        None => run_prep(cli.prep),
    })
}

fn run_synth(args: SynthArgs) -> Result<()> {
    let pb = progress_bar("synth", args.quiet);
    let summary = generate(&SynthConfig { out: args.out.clone(), images: args.images, seed: args.seed }, &pb)?;
    pb.finish_and_clear();
    let objects: Vec<String> = summary.objects_per_class.iter().map(|(c, n)| format!("{c} {n}")).collect();
    println!("wrote {} synthetic images to {} (objects: {})", summary.images, args.out.display(), objects.join(", "));
    Ok(())
}

fn run_import<'a>(
    args: &OutputArgs,
    import: impl FnOnce(&OutputSpec, &dyn vocml_core::progress::Progress, &std::sync::atomic::AtomicBool) -> Result<Manifest> + 'a,
) -> Result<()> {
    let spec = args.spec()?;
    let cancel = interrupt_flag();
    let pb = progress_bar("import", args.quiet);
    let started = std::time::Instant::now();
    let manifest = import(&spec, &pb, &cancel)?;
    pb.finish_and_clear();
    print_summary(&manifest, &spec.out, started.elapsed().as_secs_f64());
    Ok(())
}

fn run_feedback(args: FeedbackArgs) -> Result<()> {
    args.decode.apply();
    let cfg = FeedbackDataConfig { base: args.base, feedback: args.feedback, out: args.out, force: args.force };
    let cancel = interrupt_flag();
    let pb = progress_bar("feedback", args.quiet);
    let started = std::time::Instant::now();
    let manifest = add_feedback(&cfg, &pb, &cancel)?;
    pb.finish_and_clear();
    print_summary(&manifest, &cfg.out, started.elapsed().as_secs_f64());
    if let Some(f) = &manifest.feedback {
        println!(
            "added {} corrections from {} to the training split of {} ({} of its rows relabelled)",
            f.added,
            cfg.feedback.display(),
            cfg.base.display(),
            f.replaced
        );
    }
    Ok(())
}

fn run_prep(args: PrepArgs) -> Result<()> {
    let quiet = args.output.quiet;
    let cfg = args.into_config()?;
    let cancel = interrupt_flag();
    let pb = progress_bar("voc-prep", quiet);
    let started = std::time::Instant::now();
    let manifest = prepare(&cfg, &pb, &cancel)?;
    pb.finish_and_clear();
    print_summary(&manifest, &cfg.output.out, started.elapsed().as_secs_f64());
    Ok(())
}

fn print_summary(m: &Manifest, out: &std::path::Path, secs: f64) {
    let total: usize = SPLITS.iter().map(|s| m.splits.get(s).map_or(0, |i| i.count)).sum();
    println!(
        "voc-prep: {total} images -> {} ({} task, {}x{} {}, {}; labels from {}) in {secs:.1}s ({:.0} images/s)",
        out.display(),
        m.task.name(),
        m.image.size,
        m.image.size,
        m.image.dtype,
        m.image.resize.name(),
        m.source.labels,
        total as f64 / secs.max(1e-9)
    );
    let width = m.classes.iter().map(String::len).max().unwrap_or(5).max(5);
    println!("{:width$}  {:>7} {:>7} {:>7}", "class", "train", "val", "test");
    for class in &m.classes {
        let n = |s: &str| m.splits.get(s).and_then(|i| i.per_class.get(class)).copied().unwrap_or(0);
        println!("{class:width$}  {:>7} {:>7} {:>7}", n("train"), n("val"), n("test"));
    }
    println!("{:width$}  {:>7} {:>7} {:>7}", "images", m.splits.train.count, m.splits.val.count, m.splits.test.count);
    if m.incomplete_annotations > 0 && m.source.labels == "annotations" {
        eprintln!(
            "voc-prep: warning: {} annotations carry <incomplete> (objects missing); --labels imagesets is authoritative",
            m.incomplete_annotations
        );
    }
    if !m.skipped.is_empty() {
        eprintln!("voc-prep: skipped {} inputs (listed in manifest.json):", m.skipped.len());
        for s in m.skipped.iter().take(5) {
            eprintln!("  {} ({}): {}", s.id, s.path, s.reason);
        }
        if m.skipped.len() > 5 {
            eprintln!("  ... and {} more", m.skipped.len() - 5);
        }
    }
}
