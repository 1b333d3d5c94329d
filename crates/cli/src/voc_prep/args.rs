//! `voc-prep`'s flags: the default VOC preparation's, each importer's and the output options
//! they share, turned into the core's typed configs.

use anyhow::Result;
use clap::{Args, ValueEnum};
use std::path::PathBuf;
use vocml::DecodeArgs;
use vocml_core::dataset::classes::parse_class_list;
use vocml_core::dataset::import_label_studio::UrlMap;
use vocml_core::dataset::prep::{LabelSource, OutputSpec, PrepConfig};
use vocml_core::dataset::split::{Fold, SplitFractions};
use vocml_core::io::image::ResizeMode;
use vocml_core::io::npy::DType;
use vocml_core::task::TaskKind;

/// Output options shared by every importer.
#[derive(Args, Debug)]
pub(crate) struct OutputArgs {
    /// Output directory (replaced atomically if it holds an earlier voc-prep output).
    #[arg(long, value_name = "DIR", default_value = "processed_data")]
    pub(crate) out: PathBuf,
    /// Side of the square output images, in pixels.
    #[arg(long, default_value_t = 224, value_name = "PX")]
    pub(crate) size: u32,
    /// How to make images square: stretch (reference), letterbox (pad) or center-crop.
    #[arg(long, value_enum, default_value_t = ResizeArg::Stretch)]
    pub(crate) resize: ResizeArg,
    /// Train,val,test fractions; `0,0,1` puts everything in test.
    #[arg(long, default_value = "0.7,0.15,0.15", value_name = "T,V,T", allow_hyphen_values = true, value_parser = |s: &str| SplitFractions::parse(s).map_err(|e| e.to_string()))]
    pub(crate) split: SplitFractions,
    /// Cross-validation: the test split is fold I of K (stratified like --split; over
    /// I = 1..K every image is tested once), train and val split the rest in --split's
    /// train:val ratio. Same --seed for every fold.
    #[arg(long, value_name = "I/K", value_parser = |s: &str| Fold::parse(s).map_err(|e| e.to_string()))]
    pub(crate) fold: Option<Fold>,
    /// Seed of the split (same seed and inputs, same split).
    #[arg(long, default_value_t = 42, value_name = "S")]
    pub(crate) seed: u64,
    /// Pixel dtype of X: uint8 (0..255, compact) or f32 ([0,1], like the reference).
    #[arg(long, value_enum, default_value_t = DTypeArg::U8)]
    pub(crate) dtype: DTypeArg,
    /// Replace --out even if it does not hold an earlier voc-prep output.
    #[arg(long)]
    pub(crate) force: bool,
    #[command(flatten)]
    pub(crate) decode: DecodeArgs,
    /// No progress bar.
    #[arg(long, short)]
    pub(crate) quiet: bool,
}

impl OutputArgs {
    pub(crate) fn spec(&self) -> Result<OutputSpec> {
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
            max_pixels: self.decode.max_image_pixels,
        })
    }
}

#[derive(ValueEnum, Clone, Copy, Debug)]
pub(crate) enum TaskArg {
    Multilabel,
    Multiclass,
    Multihead,
}

impl TaskArg {
    pub(crate) fn kind(self) -> TaskKind {
        match self {
            TaskArg::Multilabel => TaskKind::Multilabel,
            TaskArg::Multiclass => TaskKind::Multiclass,
            TaskArg::Multihead => TaskKind::Multihead,
        }
    }
}

#[derive(Args, Debug)]
pub(crate) struct FoldersArgs {
    /// Folder holding one sub-folder per class (or per label combination).
    #[arg(long, value_name = "DIR")]
    pub(crate) root: PathBuf,
    /// multiclass (a folder is a class) or multilabel (folder names split into labels).
    #[arg(long, value_enum, default_value_t = TaskArg::Multiclass)]
    pub(crate) task: TaskArg,
    /// With --task multilabel: what separates the labels in a folder name.
    #[arg(long, default_value = "_", value_name = "TEXT")]
    pub(crate) separator: String,
    #[command(flatten)]
    pub(crate) output: OutputArgs,
}

#[derive(Args, Debug)]
pub(crate) struct CsvArgs {
    /// The CSV file (header `path,<label columns...>`).
    #[arg(long, value_name = "FILE")]
    pub(crate) file: PathBuf,
    /// multilabel (0/1 columns), multiclass (one class column) or multihead (a column per head).
    #[arg(long, value_enum)]
    pub(crate) task: TaskArg,
    /// Base folder of relative image paths (default: the CSV's folder).
    #[arg(long, value_name = "DIR")]
    pub(crate) images_root: Option<PathBuf>,
    #[command(flatten)]
    pub(crate) output: OutputArgs,
}

#[derive(Args, Debug)]
pub(crate) struct CocoArgs {
    /// The COCO instances JSON (images, annotations, categories).
    #[arg(long, value_name = "FILE")]
    pub(crate) file: PathBuf,
    /// Folder of the images' `file_name`s (default: the JSON's folder).
    #[arg(long, value_name = "DIR")]
    pub(crate) images_root: Option<PathBuf>,
    /// Label columns, comma-separated category names in order (default: every category).
    #[arg(long, value_name = "LIST", value_delimiter = ',')]
    pub(crate) classes: Vec<String>,
    /// Keep images with none of the classes (as all-negative rows).
    #[arg(long)]
    pub(crate) keep_empty: bool,
    #[command(flatten)]
    pub(crate) output: OutputArgs,
}

#[derive(Args, Debug)]
pub(crate) struct LabelStudioArgs {
    /// The export (Label Studio's `JSON` format).
    #[arg(long, value_name = "FILE")]
    pub(crate) file: PathBuf,
    /// Folder of uploads, local files and plain paths (default: the JSON's folder).
    #[arg(long, value_name = "DIR")]
    pub(crate) images_root: Option<PathBuf>,
    /// Read URLs starting with PREFIX from DIR (repeatable), e.g.
    /// https://bucket.example/images/=/data/images.
    #[arg(long, value_name = "PREFIX=DIR")]
    pub(crate) url_map: Vec<UrlMap>,
    /// The key of the image in each task's data.
    #[arg(long, value_name = "KEY", default_value = "image")]
    pub(crate) image_key: String,
    /// The <Choices> tag to read, when the project has several.
    #[arg(long, value_name = "NAME")]
    pub(crate) from_name: Option<String>,
    /// Label columns, comma-separated choices in order (default: every choice used).
    #[arg(long, value_name = "LIST", value_delimiter = ',')]
    pub(crate) classes: Vec<String>,
    #[command(flatten)]
    pub(crate) output: OutputArgs,
}

#[derive(Args, Debug)]
pub(crate) struct FeedbackArgs {
    /// The prepared dataset (a voc-prep output) whose training split the corrections join.
    #[arg(long, value_name = "DIR")]
    pub(crate) base: PathBuf,
    /// The feedback store.
    #[arg(long, value_name = "DIR", default_value = "runs/feedback")]
    pub(crate) feedback: PathBuf,
    /// Output directory (replaced atomically if it holds an earlier voc-prep output).
    #[arg(long, value_name = "DIR")]
    pub(crate) out: PathBuf,
    /// Replace --out even if it does not hold an earlier voc-prep output.
    #[arg(long)]
    pub(crate) force: bool,
    #[command(flatten)]
    pub(crate) decode: DecodeArgs,
    /// No progress bar.
    #[arg(long, short)]
    pub(crate) quiet: bool,
}

#[derive(Args, Debug)]
pub(crate) struct ShapesArgs {
    /// Directory to write.
    #[arg(long, value_name = "DIR")]
    pub(crate) out: PathBuf,
    /// Number of images (cycling through the 9 colour/shape combinations).
    #[arg(long, default_value_t = 360, value_name = "N")]
    pub(crate) images: usize,
    /// Side of the drawn images in pixels.
    #[arg(long, default_value_t = 64, value_name = "PX")]
    pub(crate) size: u32,
    #[arg(long, default_value_t = 7, value_name = "S")]
    pub(crate) seed: u64,
}

#[derive(Args, Debug)]
pub(crate) struct SynthArgs {
    /// Directory to write (becomes a VOC root with JPEGImages/, Annotations/, ImageSets/).
    #[arg(long, value_name = "DIR")]
    pub(crate) out: PathBuf,
    /// Number of images.
    #[arg(long, default_value_t = 240, value_name = "N")]
    pub(crate) images: usize,
    /// Random seed (same seed, same dataset).
    #[arg(long, default_value_t = 7, value_name = "S")]
    pub(crate) seed: u64,
    /// No progress bar.
    #[arg(long, short)]
    pub(crate) quiet: bool,
}

#[derive(Args, Debug)]
pub(crate) struct PrepArgs {
    /// VOC root: the directory containing Annotations/, JPEGImages/ and ImageSets/.
    #[arg(long, value_name = "DIR", required = true)]
    pub(crate) voc_root: Option<PathBuf>,
    /// Target classes: comma-separated VOC names in label order, or `all` (20, VOC order).
    #[arg(long, value_name = "LIST", default_value = "person,chair,dog,sofa")]
    pub(crate) classes: String,
    /// Label source: XML objects, or the official ImageSets/Main/<class>_<set>.txt lists.
    #[arg(long, value_enum, default_value_t = LabelsArg::Annotations)]
    pub(crate) labels: LabelsArg,
    /// Image id list from ImageSets/Main/<set>.txt (default: every annotated image).
    #[arg(long, value_enum, value_name = "SET")]
    pub(crate) image_set: Option<ImageSetArg>,
    /// With --labels annotations: objects marked difficult do not count.
    #[arg(long)]
    pub(crate) ignore_difficult: bool,
    /// With --labels imagesets: label 0 (only difficult instances) counts as present.
    #[arg(long)]
    pub(crate) difficult_as_positive: bool,
    /// Keep images that hold none of the target classes (as all-negative rows).
    #[arg(long)]
    pub(crate) keep_empty: bool,
    /// Skip malformed annotation XML files (listed in the manifest) instead of failing.
    #[arg(long)]
    pub(crate) skip_bad: bool,
    #[command(flatten)]
    pub(crate) output: OutputArgs,
}

#[derive(ValueEnum, Clone, Copy, Debug)]
pub(crate) enum LabelsArg {
    Annotations,
    Imagesets,
}

#[derive(ValueEnum, Clone, Copy, Debug)]
pub(crate) enum ImageSetArg {
    Train,
    Val,
    Trainval,
    Test,
}

#[derive(ValueEnum, Clone, Copy, Debug)]
pub(crate) enum ResizeArg {
    Stretch,
    Letterbox,
    CenterCrop,
}

#[derive(ValueEnum, Clone, Copy, Debug)]
pub(crate) enum DTypeArg {
    U8,
    F32,
}

impl PrepArgs {
    pub(crate) fn into_config(self) -> Result<PrepConfig> {
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
