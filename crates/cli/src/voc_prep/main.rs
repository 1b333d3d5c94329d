//! `voc-prep`: PASCAL VOC -> filtered, resized, split `.npy` arrays and `manifest.json`.
//! Also writes the embedded synthetic dataset (`voc-prep synth`).

mod args;

use anyhow::Result;
use args::{CocoArgs, CsvArgs, FeedbackArgs, FoldersArgs, LabelStudioArgs, OutputArgs, PrepArgs, ShapesArgs, SynthArgs};
use clap::{Parser, Subcommand};
use std::process::ExitCode;
use vocml::{interrupt_flag, progress_bar};
use vocml_core::dataset::import::{import_csv, import_folders};
use vocml_core::dataset::import_coco::import_coco;
use vocml_core::dataset::import_label_studio::{import_label_studio, LabelStudioImport};
use vocml_core::dataset::manifest::{Manifest, SPLITS};
use vocml_core::dataset::prep::{prepare, OutputSpec};
use vocml_core::dataset::voc::synth::{generate, SynthConfig};
use vocml_core::retrain::training_set::{add_feedback, FeedbackDataConfig};

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
    let cfg = FeedbackDataConfig {
        base: args.base,
        feedback: args.feedback,
        out: args.out,
        force: args.force,
        max_pixels: args.decode.max_image_pixels,
    };
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
