//! Shared glue for the vocml binaries: error reporting and exit codes, progress bars and
//! Ctrl-C handling. The work itself lives in `vocml-core`; binaries only parse flags.

use indicatif::{ProgressBar, ProgressStyle};
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use vocml_core::device::{resolve, DeviceChoice};
use vocml_core::progress::Progress;
use vocml_core::train::history::TrainObserver;

/// Exit statuses shared by every binary.
pub mod exit {
    /// Success.
    pub const OK: u8 = 0;
    /// Bad input or a failed operation (a one-line error was printed).
    pub const FAILURE: u8 = 1;
    /// Bad command-line usage (clap's own code).
    pub const USAGE: u8 = 2;
    /// Interrupted by Ctrl-C; nothing half-written was left behind.
    pub const INTERRUPTED: u8 = 130;
}

/// A bad value of an option (from a flag or a recipe) found after parsing: exit status 2,
/// like clap's own usage errors.
#[derive(Debug, thiserror::Error)]
#[error("{0:#}")]
pub struct UsageError(pub anyhow::Error);

/// Marks an error as bad usage (exit status 2).
pub fn usage(e: anyhow::Error) -> anyhow::Error {
    UsageError(e).into()
}

/// Runs a binary's body and maps its result to an exit status, printing errors once as
/// `<tool>: error: <message: cause: cause>`.
pub fn run_main(tool: &str, body: impl FnOnce() -> anyhow::Result<()>) -> ExitCode {
    match body() {
        Ok(()) => ExitCode::from(exit::OK),
        Err(e) if is_broken_pipe(&e) => ExitCode::from(exit::OK),
        Err(e) if e.downcast_ref::<UsageError>().is_some() => {
            eprintln!("{tool}: error: {e:#}");
            ExitCode::from(exit::USAGE)
        }
        Err(e) if e.downcast_ref::<vocml_core::Interrupted>().is_some() => {
            eprintln!("{tool}: interrupted; no output was written");
            ExitCode::from(exit::INTERRUPTED)
        }
        Err(e) => {
            eprintln!("{tool}: error: {e:#}");
            ExitCode::from(exit::FAILURE)
        }
    }
}

/// The whole `main` of a tool: the panic hook, `--generate`, flags from the process's
/// arguments, then `body` with its result mapped to an exit status by [`run_main`].
pub fn tool_main<C: clap::Parser>(tool: &'static str, body: impl FnOnce(C) -> anyhow::Result<()>) -> ExitCode {
    tool_main_with_args(tool, Ok(std::env::args_os().collect()), body)
}

/// [`tool_main`] with the arguments given (e.g. expanded from a recipe file); an error in
/// producing them is reported like the tool's own.
pub fn tool_main_with_args<C: clap::Parser>(
    tool: &'static str,
    args: anyhow::Result<Vec<std::ffi::OsString>>,
    body: impl FnOnce(C) -> anyhow::Result<()>,
) -> ExitCode {
    install_panic_hook(tool);
    if let Some(code) = generate_if_asked(C::command) {
        return code;
    }
    let args = match args {
        Ok(a) => a,
        Err(e) => return run_main(tool, || Err(e)),
    };
    let matches = with_negative_numbers(C::command()).get_matches_from(args);
    let cli = C::from_arg_matches(&matches).unwrap_or_else(|e| e.format(&mut C::command()).exit());
    run_main(tool, || body(cli))
}

/// Lets `--epochs -3` reach the value parser (and its one-line error naming the flag) instead
/// of clap reading `-3` as an unknown flag.
fn with_negative_numbers(cmd: clap::Command) -> clap::Command {
    cmd.allow_negative_numbers(true).mut_subcommands(with_negative_numbers)
}

/// A panic (a bug) prints one line naming it instead of a backtrace dump; the process then
/// exits with Rust's panic status, 101.
fn install_panic_hook(tool: &'static str) {
    std::panic::set_hook(Box::new(move |info| {
        let what = info
            .payload()
            .downcast_ref::<&str>()
            .map(|s| s.to_string())
            .or_else(|| info.payload().downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "panic".into());
        let at = info.location().map(|l| format!(" at {}:{}", l.file(), l.line())).unwrap_or_default();
        eprintln!("{tool}: internal error: {}{at}; please report it with the command line", what.replace('\n', " "));
    }));
}

/// A closed stdout (e.g. `predict dir | head`) ends the program quietly, like ripgrep.
fn is_broken_pipe(e: &anyhow::Error) -> bool {
    e.chain().any(|c| c.downcast_ref::<std::io::Error>().is_some_and(|io| io.kind() == std::io::ErrorKind::BrokenPipe))
}

/// A flag set by the first Ctrl-C so long work can stop cleanly; a second Ctrl-C exits at
/// once.
pub fn interrupt_flag() -> Arc<AtomicBool> {
    let flag = Arc::new(AtomicBool::new(false));
    let f = flag.clone();
    let _ = ctrlc::set_handler(move || {
        if f.swap(true, Ordering::SeqCst) {
            std::process::exit(exit::INTERRUPTED as i32);
        }
        eprintln!("\nstopping after the current step (Ctrl-C again to abort)");
    });
    flag
}

/// A progress bar on stderr with `what` as its prefix; hidden when `quiet` (indicatif also
/// hides it when stderr is not a terminal, so logs in CI stay clean).
pub fn progress_bar(what: &str, quiet: bool) -> Bar {
    if quiet {
        return Bar(ProgressBar::hidden());
    }
    let pb = ProgressBar::new(0);
    pb.set_style(
        ProgressStyle::with_template("{prefix:>10} [{bar:30}] {pos}/{len} {per_sec} eta {eta} {msg}")
            .expect("valid template")
            .progress_chars("=> "),
    );
    pb.set_prefix(what.to_string());
    Bar(pb)
}

/// A progress bar the library's [`Progress`] calls drive: a phase resets it with its name and
/// length, each step advances it and shows the loss.
pub struct Bar(pub ProgressBar);

impl std::ops::Deref for Bar {
    type Target = ProgressBar;

    fn deref(&self) -> &ProgressBar {
        &self.0
    }
}

impl Progress for Bar {
    fn phase(&self, what: &str, total: u64) {
        self.reset();
        self.set_length(total);
        self.set_prefix(what.to_string());
    }
    fn done(&self, n: u64, loss: Option<f64>) {
        self.inc(n);
        if let Some(loss) = loss {
            self.set_message(format!("loss {loss:.4}"));
        }
    }
    fn note(&self, line: &str) {
        if self.is_hidden() {
            eprintln!("{line}");
        } else {
            self.println(line);
        }
    }
}

impl TrainObserver for Bar {}

/// What `--generate` can print, from the same definitions as the flags (like ripgrep's).
const GENERATE_KINDS: [&str; 4] = ["complete-bash", "complete-zsh", "complete-fish", "man"];

/// Handles `<tool> --generate KIND` (KIND: complete-bash, complete-zsh, complete-fish or man):
/// prints the shell completion script or the roff man page of `command` and returns the exit
/// status; `None` when the first argument is not `--generate`. Checked before the other flags,
/// so it works without a tool's required ones.
pub fn generate_if_asked(command: impl FnOnce() -> clap::Command) -> Option<ExitCode> {
    let args: Vec<String> = std::env::args().skip(1).take(2).collect();
    if args.first().map(String::as_str) != Some("--generate") {
        return None;
    }
    let mut cmd = command();
    let name = cmd.get_name().to_string();
    let mut out = std::io::stdout();
    let shell = match args.get(1).map(String::as_str) {
        Some("complete-bash") => clap_complete::Shell::Bash,
        Some("complete-zsh") => clap_complete::Shell::Zsh,
        Some("complete-fish") => clap_complete::Shell::Fish,
        Some("man") => {
            return Some(match clap_mangen::Man::new(cmd).render(&mut out) {
                Ok(()) => ExitCode::from(exit::OK),
                Err(e) => {
                    eprintln!("{name}: error: {e}");
                    ExitCode::from(exit::FAILURE)
                }
            });
        }
        other => {
            eprintln!("{name}: error: --generate {}: expected one of {}", other.unwrap_or("(nothing)"), GENERATE_KINDS.join(", "));
            return Some(ExitCode::from(exit::USAGE));
        }
    };
    clap_complete::generate(shell, &mut cmd, name, &mut out);
    Some(ExitCode::from(exit::OK))
}

/// Command-line value parser of a probability in [0, 1] (`--threshold`).
pub fn probability(s: &str) -> Result<f32, String> {
    match s.trim().parse::<f32>() {
        Ok(p) if (0.0..=1.0).contains(&p) => Ok(p),
        Ok(p) => Err(format!("{p} is not a probability (expected a number from 0 to 1)")),
        Err(_) => Err(format!("{s:?} is not a number (expected a probability from 0 to 1)")),
    }
}

/// The `--device` flag shared by the binaries that run models.
#[derive(clap::ValueEnum, Clone, Copy, Debug, Default)]
pub enum DeviceArg {
    /// A CUDA GPU when libtorch sees one, else the CPU.
    #[default]
    Auto,
    Cpu,
    /// A CUDA GPU; an error if none is usable.
    Cuda,
}

/// Where models run: the `--device` and `--threads` flags of every binary that runs one.
#[derive(clap::Args, Debug, Clone, Copy)]
pub struct ComputeArgs {
    #[arg(long, value_enum, default_value_t = DeviceArg::Auto)]
    pub device: DeviceArg,
    /// CPU threads for libtorch, 1 to 256 (default: all cores).
    #[arg(long, value_name = "N", allow_hyphen_values = true, value_parser = clap::value_parser!(i32).range(1..=256))]
    pub threads: Option<i32>,
    /// Let cuDNN time its algorithms for each new input shape (GPU): pays off in long runs,
    /// costs seconds of tuning in short ones.
    #[arg(long)]
    pub cudnn_benchmark: bool,
}

impl ComputeArgs {
    /// Prepares libtorch (allocator, CUDA library, CPU threads) and returns the device.
    pub fn resolve(&self) -> anyhow::Result<tch::Device> {
        let device = resolve(match self.device {
            DeviceArg::Auto => DeviceChoice::Auto,
            DeviceArg::Cpu => DeviceChoice::Cpu,
            DeviceArg::Cuda => DeviceChoice::Cuda,
        })?;
        if let Some(t) = self.threads {
            tch::set_num_threads(t);
        }
        if device.is_cuda() {
            tch::Cuda::cudnn_set_benchmark(self.cudnn_benchmark);
        }
        Ok(device)
    }
}

/// MLflow tracking flags of `train`, `evaluate` and `retrain`.
#[derive(clap::Args, Debug, Clone)]
pub struct TrackingArgs {
    /// Log this run to the MLflow tracking server at URI (http://host:port): options, per-epoch
    /// metrics, files, a registered model version; the local run is complete either way.
    #[arg(long = "mlflow", value_name = "URI", env = "MLFLOW_TRACKING_URI")]
    pub mlflow: Option<String>,
    /// MLflow experiment to log to.
    #[arg(long, value_name = "NAME", env = "MLFLOW_EXPERIMENT_NAME", default_value = "vocml")]
    pub experiment: String,
    /// Registered model the run's weights become a version of (default: vocml-<task>-<classes>).
    #[arg(long, value_name = "NAME")]
    pub registered_model: Option<String>,
    /// Fail (exit 1) when the run cannot be logged, instead of warning (for pipelines that need
    /// the record).
    #[arg(long)]
    pub mlflow_required: bool,
}

impl TrackingArgs {
    /// The tracker, when a server is named.
    pub fn tracker(&self, tool: &'static str) -> anyhow::Result<Option<vocml_track::Tracker>> {
        let Some(uri) = &self.mlflow else { return Ok(None) };
        let cfg = vocml_track::TrackingConfig {
            uri: uri.clone(),
            experiment: self.experiment.clone(),
            registered_model: self.registered_model.clone(),
            required: self.mlflow_required,
        };
        vocml_track::Tracker::new(cfg, tool).map(Some)
    }
}

/// A run directory, or a registered model version (`models:/NAME@ALIAS`, `models:/NAME/N`)
/// fetched from the MLflow server into the local cache.
pub fn resolve_run(run: &std::path::Path, mlflow: Option<&str>) -> anyhow::Result<std::path::PathBuf> {
    let text = run.to_string_lossy();
    let Some(uri) = vocml_track::registry::ModelUri::parse(&text)? else { return Ok(run.to_path_buf()) };
    let server = mlflow.ok_or_else(|| anyhow::anyhow!("{text}: name the MLflow server with --mlflow URI (or MLFLOW_TRACKING_URI)"))?;
    Ok(vocml_track::registry::fetch(server, &uri, &vocml_track::registry::cache_dir())?.0)
}

/// The decode limit of every tool that reads images.
#[derive(clap::Args, Debug, Clone, Copy)]
pub struct DecodeArgs {
    /// Largest image decoded, in pixels (width x height, read from the header before any
    /// pixel memory is allocated); a larger one is a per-file error naming its size.
    #[arg(long, value_name = "N", default_value_t = vocml_core::io::image::DEFAULT_MAX_PIXELS, value_parser = clap::value_parser!(u64).range(1..))]
    pub max_image_pixels: u64,
}

/// Horizontal-flip test-time augmentation flags of `evaluate` and `predict`.
#[derive(clap::Args, Debug, Clone, Copy)]
pub struct TtaArgs {
    /// Average each image's probabilities with its horizontal mirror's (default: what the run
    /// recorded, see `train --tta`).
    #[arg(long, conflicts_with = "no_tta")]
    pub tta: bool,
    /// No test-time augmentation, whatever the run recorded.
    #[arg(long)]
    pub no_tta: bool,
}

impl TtaArgs {
    /// `Some(choice)` when a flag was given, `None` to use the run's default.
    pub fn choice(&self) -> Option<bool> {
        match (self.tta, self.no_tta) {
            (true, _) => Some(true),
            (_, true) => Some(false),
            _ => None,
        }
    }
}

/// Expands `--config FILE` into command-line flags. The file is a recipe
/// ([`vocml_core::run::recipe::Recipe`]): TOML whose keys are the command's options
/// (`batch_size = 16`; `true` for switches), or a run's `config.json`, whose recorded options
/// have the same names; its flags are placed before the command line's own, so explicit flags
/// override it. Keys spelled the flags' way (`batch-size`) are read and reported on stderr.
pub fn args_with_config(cmd: &clap::Command, args: Vec<std::ffi::OsString>) -> anyhow::Result<Vec<std::ffi::OsString>> {
    use anyhow::bail;
    let text_args: Vec<String> = args.iter().map(|a| a.to_string_lossy().into_owned()).collect();
    let path = text_args.iter().enumerate().find_map(|(i, a)| {
        if a == "--config" {
            text_args.get(i + 1).cloned()
        } else {
            a.strip_prefix("--config=").map(String::from)
        }
    });
    let Some(path) = path else { return Ok(args) };
    let recipe = vocml_core::run::recipe::Recipe::read(std::path::Path::new(&path), cmd.get_name())?;
    if let Some(note) = recipe.note() {
        eprintln!("{}: note: {note}", cmd.get_name());
    }
    let table = recipe.keys;
    let known: Vec<String> = cmd.get_arguments().filter_map(|a| a.get_long().map(String::from)).collect();
    let mut flags: Vec<std::ffi::OsString> = Vec::new();
    for (key, value) in &table {
        let flag = key.replace('_', "-");
        if flag == "config" || !known.contains(&flag) {
            bail!("{path}: unknown key {key:?}; keys are {}'s long flags (see --help)", cmd.get_name());
        }
        let is_switch = cmd.get_arguments().find(|a| a.get_long() == Some(flag.as_str())).is_some_and(|a| !a.get_action().takes_values());
        let text = match value {
            serde_json::Value::Bool(true) if is_switch => {
                flags.push(format!("--{flag}").into());
                continue;
            }
            serde_json::Value::Bool(false) if is_switch => continue,
            _ if is_switch => bail!("{path}: key {key:?} is a switch: expected true or false, found {value}"),
            serde_json::Value::String(s) => s.clone(),
            serde_json::Value::Number(n) => n.to_string(),
            serde_json::Value::Array(items) if items.is_empty() => continue,
            serde_json::Value::Array(items) => {
                items.iter().map(|v| v.as_str().map(String::from).unwrap_or_else(|| v.to_string())).collect::<Vec<_>>().join(",")
            }
            other => bail!("{path}: key {key:?} has an unsupported value {other}"),
        };
        // `--flag=value`, so a negative number is a value rather than a flag.
        flags.push(format!("--{flag}={text}").into());
    }
    // The recipe's values alone must parse: an error names the file, not just the flag. What
    // the command line must add (retrain's --corrections) is not the recipe's to give.
    let mut alone = vec![std::ffi::OsString::from(cmd.get_name())];
    alone.extend(flags.iter().cloned());
    let parsed = cmd.clone().try_get_matches_from(alone);
    if let Some(e) = parsed.err().filter(|e| e.kind() != clap::error::ErrorKind::MissingRequiredArgument) {
        let text = e.to_string();
        let first = text.lines().next().unwrap_or_default().trim_start_matches("error: ");
        bail!("{path}: {first}");
    }
    let mut out = Vec::with_capacity(args.len() + flags.len());
    out.extend(args.first().cloned());
    out.extend(flags);
    out.extend(args.into_iter().skip(1));
    Ok(out)
}

/// The inference engine flag of `predict`, `evaluate` and `serve`.
#[derive(clap::Args, Debug, Clone, Copy)]
pub struct EngineArgs {
    /// Inference engine: auto (ONNX Runtime on the CPU when the run holds a matching
    /// model.onnx written by `export`, else libtorch), torch, or onnx (ONNX Runtime, an
    /// error when the run has no exported file). Both give the same probabilities (1e-4).
    #[arg(long, value_enum, default_value_t = vocml_core::infer::onnx::Engine::Auto, value_name = "ENGINE")]
    pub engine: vocml_core::infer::onnx::Engine,
}
