//! The Open Inference Protocol's gRPC service (`inference.GRPCInferenceService`, as
//! `tritonclient[grpc]` and KServe's gRPC clients call it) over the same engine, batching,
//! swaps, limits and upload keeping as the REST side. Inputs come as `raw_input_contents` or
//! `contents.bytes_contents`; outputs always go back as `raw_output_contents`, as Triton
//! answers.

use super::{InferRequest, InputTensor, Kind, OipError, RequestedOutput};
use crate::state::AppState;
use std::sync::Arc;
use std::time::Instant;
use tonic::{Request, Response, Status};

/// The code generated from `proto/inference.proto`.
pub mod proto {
    tonic::include_proto!("inference");
}

use proto::grpc_inference_service_server::{GrpcInferenceService, GrpcInferenceServiceServer};
use proto::infer_parameter::ParameterChoice;
use proto::*;

/// The gRPC service over the HTTP side's shared state.
pub struct Service {
    state: Arc<AppState>,
}

impl Service {
    /// The service, taking messages of up to `max_message` bytes (`serve --max-body-mb`).
    pub fn server(state: Arc<AppState>, max_message: usize) -> GrpcInferenceServiceServer<Service> {
        GrpcInferenceServiceServer::new(Service { state }).max_decoding_message_size(max_message).max_encoding_message_size(usize::MAX)
    }

    fn model(&self, name: &str, version: &str) -> Result<Arc<crate::engine::ModelInfo>, Status> {
        super::model(&self.state, name, Some(version)).map_err(status)
    }
}

/// The gRPC status of a refused request.
pub fn status(e: OipError) -> Status {
    match e.kind {
        Kind::BadRequest => Status::invalid_argument(e.message),
        Kind::NotFound => Status::not_found(e.message),
        Kind::Unavailable => Status::unavailable(e.message),
        Kind::TooLarge => Status::resource_exhausted(e.message),
        Kind::Internal => Status::internal(e.message),
    }
}

fn int_param(p: Option<&InferParameter>, key: &str, of: &str) -> Result<Option<usize>, OipError> {
    match p.and_then(|p| p.parameter_choice.as_ref()) {
        None => Ok(None),
        Some(ParameterChoice::Int64Param(n)) if *n >= 0 => Ok(Some(*n as usize)),
        Some(ParameterChoice::Uint64Param(n)) => Ok(Some(*n as usize)),
        Some(other) => Err(OipError::bad(format!("{of}: {key} {} is not a count", crate::error::shown(&format!("{other:?}"), 40)))),
    }
}

/// Reads a `ModelInferRequest` into the protocol-neutral form.
fn request(r: ModelInferRequest, max_files: usize) -> Result<InferRequest, OipError> {
    if !r.raw_input_contents.is_empty() && r.raw_input_contents.len() != r.inputs.len() {
        return Err(OipError::bad(format!(
            "{} raw_input_contents for {} inputs (one each, in order)",
            r.raw_input_contents.len(),
            r.inputs.len()
        )));
    }
    let mut raw = r.raw_input_contents.into_iter();
    let mut inputs = Vec::with_capacity(r.inputs.len());
    for input in r.inputs {
        let count = super::check_input(&input.name, &input.datatype, &input.shape, max_files)?;
        let contents = input.contents.map(|c| c.bytes_contents).unwrap_or_default();
        let elements = match raw.next() {
            Some(_) if !contents.is_empty() => {
                return Err(OipError::bad(format!("input {}: both contents and raw_input_contents", input.name)));
            }
            Some(bytes) => super::binary::bytes_elements(&bytes, count).map_err(|e| OipError::bad(format!("input {}: {e}", input.name)))?,
            None if contents.len() == count => contents,
            None => {
                return Err(OipError::bad(format!("input {}: {} bytes_contents, its shape says {count}", input.name, contents.len())));
            }
        };
        inputs.push(InputTensor { name: input.name, elements });
    }
    let outputs = r
        .outputs
        .into_iter()
        .map(|o| {
            let what = format!("output {}", crate::error::shown(&o.name, 64));
            let classification = int_param(o.parameters.get("classification"), "classification", &what)?;
            Ok(RequestedOutput { name: o.name, classification, binary: None })
        })
        .collect::<Result<_, OipError>>()?;
    Ok(InferRequest { id: Some(r.id).filter(|id| !id.is_empty()), inputs, outputs, binary_output: true })
}

#[tonic::async_trait]
impl GrpcInferenceService for Service {
    async fn server_live(&self, _: Request<ServerLiveRequest>) -> Result<Response<ServerLiveResponse>, Status> {
        Ok(Response::new(ServerLiveResponse { live: true }))
    }

    async fn server_ready(&self, _: Request<ServerReadyRequest>) -> Result<Response<ServerReadyResponse>, Status> {
        Ok(Response::new(ServerReadyResponse { ready: self.state.engine.info().is_some() }))
    }

    async fn model_ready(&self, r: Request<ModelReadyRequest>) -> Result<Response<ModelReadyResponse>, Status> {
        let r = r.into_inner();
        match super::model(&self.state, &r.name, Some(&r.version)) {
            Ok(_) => Ok(Response::new(ModelReadyResponse { ready: true })),
            Err(e) if e.kind == Kind::Unavailable => Ok(Response::new(ModelReadyResponse { ready: false })),
            Err(e) => Err(status(e)),
        }
    }

    async fn server_metadata(&self, _: Request<ServerMetadataRequest>) -> Result<Response<ServerMetadataResponse>, Status> {
        Ok(Response::new(ServerMetadataResponse {
            name: super::PLATFORM.into(),
            version: env!("CARGO_PKG_VERSION").into(),
            extensions: super::EXTENSIONS.iter().map(|e| e.to_string()).collect(),
        }))
    }

    async fn model_metadata(&self, r: Request<ModelMetadataRequest>) -> Result<Response<ModelMetadataResponse>, Status> {
        let r = r.into_inner();
        let info = self.model(&r.name, &r.version)?;
        let m = super::metadata(&r.name, &info);
        let tensors = |t: Vec<super::TensorMetadata>| {
            t.into_iter()
                .map(|t| model_metadata_response::TensorMetadata { name: t.name.into(), datatype: t.datatype.into(), shape: t.shape })
                .collect()
        };
        Ok(Response::new(ModelMetadataResponse {
            name: m.name,
            versions: m.versions,
            platform: m.platform.into(),
            inputs: tensors(m.inputs),
            outputs: tensors(m.outputs),
        }))
    }

    async fn model_infer(&self, r: Request<ModelInferRequest>) -> Result<Response<ModelInferResponse>, Status> {
        let start = Instant::now();
        let answer = async {
            let r = r.into_inner();
            super::model(&self.state, &r.model_name, Some(&r.model_version))?;
            let req = request(r, self.state.max_files)?;
            super::infer(&self.state, req).await
        }
        .await;
        let code = answer.as_ref().map_or_else(|e| e.status().as_u16(), |_| 200);
        self.state.metrics.request("grpc ModelInfer", code, start.elapsed().as_secs_f64());
        let answer = answer.map_err(status)?;
        let raw_output_contents = answer.outputs.iter().map(|o| o.data.raw()).collect();
        let outputs = answer
            .outputs
            .into_iter()
            .map(|o| model_infer_response::InferOutputTensor {
                name: o.name,
                datatype: o.data.datatype().into(),
                shape: o.shape,
                parameters: Default::default(),
                contents: None,
            })
            .collect();
        Ok(Response::new(ModelInferResponse {
            model_name: answer.model_name,
            model_version: answer.model_version,
            id: answer.id.unwrap_or_default(),
            parameters: Default::default(),
            outputs,
            raw_output_contents,
        }))
    }
}
