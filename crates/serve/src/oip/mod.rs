//! The Open Inference Protocol v2 (KServe "V2", Triton): one protocol-neutral core that the
//! REST routes (`routes::v2`) and the gRPC service ([`grpc`]) both speak. The model answers to
//! its configured name (`vocml` unless `serve --model-name`) and to its run's name; its one
//! input `images` is a BYTES tensor of encoded image files, its output `probabilities` an
//! FP32 `[N, C]` tensor, or with the classification extension the top N classes of each
//! image as BYTES `"value:index:label"`.

pub mod binary;
pub mod grpc;
pub mod json;

use crate::engine::ModelInfo;
use crate::error::{shown, ApiError};
use crate::scoring::{score, Scoring};
use crate::state::AppState;
use axum::http::StatusCode;
use base64::Engine as _;
use std::sync::Arc;
use vocml_core::infer::Rows;

/// The protocol extensions `serve` supports, as `GET /v2` lists them.
pub const EXTENSIONS: &[&str] = &["binary_tensor_data", "classification"];
/// The model's one input.
pub const INPUT: &str = "images";
/// The model's one output.
pub const OUTPUT: &str = "probabilities";
/// The platform the model metadata names.
pub const PLATFORM: &str = "vocml";

/// Why a protocol request was refused; each front end maps it to its own status.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Malformed or inconsistent input (HTTP 400, gRPC INVALID_ARGUMENT).
    BadRequest,
    /// Unknown model or version (404, NOT_FOUND).
    NotFound,
    /// No model loaded yet, queue full, shutting down (503, UNAVAILABLE).
    Unavailable,
    /// More than the service takes in one request (413, RESOURCE_EXHAUSTED).
    TooLarge,
    /// The engine failed (500, INTERNAL).
    Internal,
}

/// A refused protocol request: what kind of failure and a message naming the problem.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OipError {
    pub kind: Kind,
    pub message: String,
}

impl OipError {
    pub fn bad(message: impl Into<String>) -> Self {
        OipError { kind: Kind::BadRequest, message: message.into() }
    }
    fn not_found(message: impl Into<String>) -> Self {
        OipError { kind: Kind::NotFound, message: message.into() }
    }
    fn unavailable(message: impl Into<String>) -> Self {
        OipError { kind: Kind::Unavailable, message: message.into() }
    }

    /// The HTTP status of this failure.
    pub fn status(&self) -> StatusCode {
        match self.kind {
            Kind::BadRequest => StatusCode::BAD_REQUEST,
            Kind::NotFound => StatusCode::NOT_FOUND,
            Kind::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
            Kind::TooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            Kind::Internal => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }
}

impl From<OipError> for ApiError {
    fn from(e: OipError) -> Self {
        match e.kind {
            Kind::Unavailable => ApiError::unavailable(e.message),
            _ => ApiError::new(e.status(), e.message),
        }
    }
}

impl From<ApiError> for OipError {
    fn from(e: ApiError) -> Self {
        let kind = match e.status {
            StatusCode::BAD_REQUEST => Kind::BadRequest,
            StatusCode::NOT_FOUND => Kind::NotFound,
            StatusCode::SERVICE_UNAVAILABLE => Kind::Unavailable,
            StatusCode::PAYLOAD_TOO_LARGE => Kind::TooLarge,
            _ => Kind::Internal,
        };
        OipError { kind, message: e.message }
    }
}

/// A client's name as an error may echo it: quoted, escaped, at most 64 characters (so a
/// gRPC status stays within its metadata limit whatever was sent).
fn quoted(name: &str) -> String {
    format!("\"{}\"", shown(name, 64))
}

/// The served model if `name` (and `version`, when given and not empty) names it.
pub fn model(state: &AppState, name: &str, version: Option<&str>) -> Result<Arc<ModelInfo>, OipError> {
    let Some(info) = state.engine.info() else {
        return Err(match name == state.model_name {
            true => OipError::unavailable("no model loaded yet (see GET /ready)"),
            false => OipError::not_found(format!("unknown model {}; this server serves {:?}", quoted(name), state.model_name)),
        });
    };
    if name != state.model_name && name != info.run {
        return Err(OipError::not_found(format!(
            "unknown model {}; this server serves {:?} (run {})",
            quoted(name),
            state.model_name,
            info.run
        )));
    }
    match version.filter(|v| !v.is_empty()) {
        Some(v) if v != info.version.to_string() => {
            Err(OipError::not_found(format!("model {} has no version {}; version {} is served", quoted(name), quoted(v), info.version)))
        }
        _ => Ok(info),
    }
}

/// A tensor's name, datatype and shape (-1: any size).
#[derive(Debug, Clone, PartialEq)]
pub struct TensorMetadata {
    pub name: &'static str,
    pub datatype: &'static str,
    pub shape: Vec<i64>,
}

/// What model metadata says on every protocol.
#[derive(Debug, Clone)]
pub struct ModelMetadata {
    pub name: String,
    pub versions: Vec<String>,
    pub platform: &'static str,
    pub inputs: Vec<TensorMetadata>,
    pub outputs: Vec<TensorMetadata>,
}

/// The metadata of `info` under the name the client asked for.
pub fn metadata(name: &str, info: &ModelInfo) -> ModelMetadata {
    ModelMetadata {
        name: name.to_string(),
        versions: vec![info.version.to_string()],
        platform: PLATFORM,
        inputs: vec![TensorMetadata { name: INPUT, datatype: "BYTES", shape: vec![-1] }],
        outputs: vec![TensorMetadata { name: OUTPUT, datatype: "FP32", shape: vec![-1, info.task.classes.len() as i64] }],
    }
}

/// An input tensor as a front end read it: the encoded images are its elements.
pub struct InputTensor {
    pub name: String,
    pub elements: Vec<Vec<u8>>,
}

/// An output the client asked for, with its parameters.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct RequestedOutput {
    pub name: String,
    /// The classification extension: the top N classes instead of the probabilities.
    pub classification: Option<usize>,
    /// The binary tensor data extension (REST): this output as raw bytes after the JSON.
    pub binary: Option<bool>,
}

/// An inference request in protocol-neutral form.
pub struct InferRequest {
    pub id: Option<String>,
    pub inputs: Vec<InputTensor>,
    /// Empty: every output.
    pub outputs: Vec<RequestedOutput>,
    /// REST's `binary_data_output`: outputs not asked for otherwise travel as raw bytes.
    pub binary_output: bool,
}

/// An output tensor's elements.
#[derive(Debug, Clone, PartialEq)]
pub enum TensorData {
    Fp32(Vec<f32>),
    Bytes(Vec<Vec<u8>>),
}

impl TensorData {
    pub fn datatype(&self) -> &'static str {
        match self {
            TensorData::Fp32(_) => "FP32",
            TensorData::Bytes(_) => "BYTES",
        }
    }

    /// Little-endian, row-major bytes; BYTES elements each a 4-byte length then the bytes.
    pub fn raw(&self) -> Vec<u8> {
        match self {
            TensorData::Fp32(v) => binary::fp32_raw(v),
            TensorData::Bytes(v) => binary::bytes_raw(v),
        }
    }
}

/// One output of an answer.
#[derive(Debug, Clone, PartialEq)]
pub struct OutputTensor {
    pub name: String,
    pub shape: Vec<i64>,
    pub data: TensorData,
    /// Sent as raw bytes after the JSON (REST's binary extension).
    pub binary: bool,
}

/// An inference answer in protocol-neutral form.
#[derive(Debug, Clone)]
pub struct InferResponse {
    pub model_name: String,
    pub model_version: String,
    pub id: Option<String>,
    pub outputs: Vec<OutputTensor>,
}

/// Checks an input's datatype and shape before its data is read, and returns how many
/// elements it must hold: one BYTES element per image, shape `[N]` or `[N, 1]`.
pub fn check_input(name: &str, datatype: &str, shape: &[i64], max_files: usize) -> Result<usize, OipError> {
    if name != INPUT {
        return Err(OipError::bad(format!("unknown input {}; the model's one input is {INPUT:?} (BYTES: encoded images)", quoted(name))));
    }
    if datatype != "BYTES" {
        return Err(OipError::bad(format!("input {INPUT}: datatype {}, expected BYTES (encoded image files)", shown(datatype, 32))));
    }
    let n = match shape {
        [n] | [n, 1] if *n >= 0 => *n as usize,
        _ if shape.len() > 8 => {
            return Err(OipError::bad(format!("input {INPUT}: a shape of {} dimensions, expected [N] or [N, 1]", shape.len())))
        }
        _ => return Err(OipError::bad(format!("input {INPUT}: shape {shape:?}, expected [N] or [N, 1] (one image per element)"))),
    };
    if n == 0 || n > max_files {
        return Err(OipError::bad(format!("input {INPUT}: 1 to {max_files} images per request (serve --max-files), got {n}")));
    }
    Ok(n)
}

/// An element's image bytes: the encoded file itself, or base64 text of it (what JSON, and
/// clients that encode before sending, carry).
fn image_bytes(element: Vec<u8>) -> Vec<u8> {
    let text = element.iter().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'+' | b'/' | b'='));
    match text {
        true => base64::engine::general_purpose::STANDARD.decode(&element).unwrap_or(element),
        false => element,
    }
}

/// Checks the outputs asked for: only `probabilities`, at most once, classification N ≥ 1.
fn check_outputs(outputs: &[RequestedOutput]) -> Result<(), OipError> {
    for (i, o) in outputs.iter().enumerate() {
        if o.name != OUTPUT {
            return Err(OipError::bad(format!("unknown output {}; the model's one output is {OUTPUT:?}", quoted(&o.name))));
        }
        if outputs[..i].iter().any(|p| p.name == o.name) {
            return Err(OipError::bad(format!("output {OUTPUT:?} asked for twice")));
        }
        if o.classification == Some(0) {
            return Err(OipError::bad(format!("output {OUTPUT}: classification must be at least 1")));
        }
    }
    Ok(())
}

/// Scores the request's images with the served model (the same decoding, batching, limits
/// and upload keeping as `/predict`) and answers the outputs asked for.
pub async fn infer(state: &AppState, req: InferRequest) -> Result<InferResponse, OipError> {
    check_outputs(&req.outputs)?;
    let input = match <[InputTensor; 1]>::try_from(req.inputs) {
        Ok([input]) => input,
        Err(inputs) => return Err(OipError::bad(format!("expected one input ({INPUT}), got {}", inputs.len()))),
    };
    let files = input.elements.into_iter().enumerate().map(|(i, e)| (format!("{}[{i}]", input.name), Arc::new(image_bytes(e)))).collect();
    let (scores, model) = score(state, files, Scoring { keep: true, ..Scoring::default() }).await?;
    let classes = model.task.classes.len();
    let rows: Vec<Vec<f32>> = scores
        .into_iter()
        .enumerate()
        .map(|(i, s)| s.result.map_err(|e| OipError::bad(format!("input {} element {i}: {e}", input.name))))
        .collect::<Result<_, _>>()?;
    let probabilities = Rows::from_rows(classes, rows.iter().map(Vec::as_slice))
        .map_err(|e| OipError { kind: Kind::Internal, message: format!("{e:#}") })?;
    let wanted = match req.outputs.is_empty() {
        true => vec![RequestedOutput { name: OUTPUT.into(), ..RequestedOutput::default() }],
        false => req.outputs,
    };
    let outputs = wanted
        .into_iter()
        .map(|o| {
            let binary = o.binary.unwrap_or(req.binary_output);
            match o.classification {
                None => OutputTensor {
                    name: o.name,
                    shape: vec![probabilities.len() as i64, classes as i64],
                    data: TensorData::Fp32(probabilities.values().to_vec()),
                    binary,
                },
                Some(k) => {
                    let k = k.min(classes);
                    let top = probabilities.iter().flat_map(|row| classification(row, k, &model.task.classes)).collect();
                    OutputTensor { name: o.name, shape: vec![probabilities.len() as i64, k as i64], data: TensorData::Bytes(top), binary }
                }
            }
        })
        .collect();
    Ok(InferResponse { model_name: state.model_name.clone(), model_version: model.version.to_string(), id: req.id, outputs })
}

/// The classification extension's answer for one image: its `k` most probable classes as
/// `"value:index:label"`, most probable first (the value printed so that it reads back as the
/// same f32).
pub fn classification(row: &[f32], k: usize, labels: &[String]) -> Vec<Vec<u8>> {
    let mut order: Vec<usize> = (0..row.len()).collect();
    order.sort_by(|&a, &b| row[b].total_cmp(&row[a]).then(a.cmp(&b)));
    order.into_iter().take(k).map(|i| format!("{}:{i}:{}", row[i], labels[i]).into_bytes()).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classification_is_top_k_most_probable_first() {
        let labels: Vec<String> = ["person", "chair", "dog"].map(String::from).to_vec();
        let top = classification(&[0.25, 0.75, 0.5], 2, &labels);
        assert_eq!(top, vec![b"0.75:1:chair".to_vec(), b"0.5:2:dog".to_vec()]);
        let v: f32 = String::from_utf8(classification(&[0.123_456_79], 1, &labels[..1])[0].clone())
            .unwrap()
            .split(':')
            .next()
            .unwrap()
            .parse()
            .unwrap();
        assert_eq!(v, 0.123_456_79_f32);
    }

    #[test]
    fn inputs_are_checked_before_their_data() {
        assert_eq!(check_input("images", "BYTES", &[3], 64), Ok(3));
        assert_eq!(check_input("images", "BYTES", &[2, 1], 64), Ok(2));
        for (name, dt, shape, needle) in [
            ("pixels", "BYTES", vec![1], "unknown input"),
            ("images", "FP32", vec![1], "datatype FP32"),
            ("images", "BYTES", vec![1, 2], "shape [1, 2]"),
            ("images", "BYTES", vec![-1], "shape [-1]"),
            ("images", "BYTES", vec![0], "1 to 64 images"),
            ("images", "BYTES", vec![65], "1 to 64 images"),
        ] {
            let e = check_input(name, dt, &shape, 64).unwrap_err();
            assert_eq!(e.kind, Kind::BadRequest);
            assert!(e.message.contains(needle), "{} lacks {needle}", e.message);
        }
    }

    #[test]
    fn outputs_name_the_model_output_once() {
        let o = |name: &str, classification| RequestedOutput { name: name.into(), classification, binary: None };
        assert!(check_outputs(&[o("probabilities", Some(2))]).is_ok());
        assert!(check_outputs(&[o("labels", None)]).unwrap_err().message.contains("unknown output"));
        assert!(check_outputs(&[o("probabilities", None), o("probabilities", None)]).unwrap_err().message.contains("twice"));
        assert!(check_outputs(&[o("probabilities", Some(0))]).unwrap_err().message.contains("at least 1"));
    }

    #[test]
    fn elements_are_raw_files_or_base64_of_them() {
        let jpeg = vec![0xff, 0xd8, 0xff, 0xe0, b'A'];
        assert_eq!(image_bytes(jpeg.clone()), jpeg);
        let b64 = base64::engine::general_purpose::STANDARD.encode(&jpeg).into_bytes();
        assert_eq!(image_bytes(b64), jpeg);
    }
}
