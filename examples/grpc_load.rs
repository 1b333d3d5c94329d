//! A gRPC load generator for `make bench-serve` (oha speaks HTTP only): REQUESTS calls of the
//! Open Inference Protocol's ModelInfer with one image (a raw BYTES input, as tritonclient
//! sends it) at CONCURRENCY, one connection per worker like oha, after 20 warm-up calls.
//! Prints "requests_per_s p50_ms p99_ms errors".
//!
//! Usage: cargo run --release --example grpc_load -- HOST:PORT MODEL IMAGE REQUESTS CONCURRENCY

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use vocml_serve::oip::grpc::proto::grpc_inference_service_client::GrpcInferenceServiceClient;
use vocml_serve::oip::grpc::proto::model_infer_request::InferInputTensor;
use vocml_serve::oip::grpc::proto::ModelInferRequest;

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [addr, model, image, requests, concurrency] = args.as_slice() else {
        eprintln!("usage: grpc_load HOST:PORT MODEL IMAGE REQUESTS CONCURRENCY");
        std::process::exit(2);
    };
    let bytes = std::fs::read(image).unwrap_or_else(|e| panic!("{image}: {e}"));
    let mut raw = (bytes.len() as u32).to_le_bytes().to_vec();
    raw.extend(bytes);
    let request = ModelInferRequest {
        model_name: model.clone(),
        inputs: vec![InferInputTensor { name: "images".into(), datatype: "BYTES".into(), shape: vec![1], ..Default::default() }],
        raw_input_contents: vec![raw],
        ..Default::default()
    };
    let (n, c): (usize, usize) = (requests.parse().expect("REQUESTS"), concurrency.parse().expect("CONCURRENCY"));
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let url = format!("http://{addr}");
    let (elapsed, mut latencies, errors) = rt.block_on(async {
        let mut warm = GrpcInferenceServiceClient::connect(url.clone()).await.expect("connect");
        for _ in 0..20 {
            warm.model_infer(request.clone()).await.expect("warm-up call");
        }
        let next = Arc::new(AtomicUsize::new(0));
        let latencies = Arc::new(Mutex::new(Vec::with_capacity(n)));
        let errors = Arc::new(AtomicUsize::new(0));
        let start = Instant::now();
        let workers: Vec<_> = (0..c)
            .map(|_| {
                let (url, request, next, latencies, errors) =
                    (url.clone(), request.clone(), next.clone(), latencies.clone(), errors.clone());
                tokio::spawn(async move {
                    let mut client = GrpcInferenceServiceClient::connect(url).await.expect("connect");
                    while next.fetch_add(1, Ordering::SeqCst) < n {
                        let t = Instant::now();
                        match client.model_infer(request.clone()).await {
                            Ok(_) => latencies.lock().unwrap().push(t.elapsed()),
                            Err(_) => drop(errors.fetch_add(1, Ordering::SeqCst)),
                        }
                    }
                })
            })
            .collect();
        for w in workers {
            w.await.unwrap();
        }
        let latencies = std::mem::take(&mut *latencies.lock().unwrap());
        (start.elapsed(), latencies, errors.load(Ordering::SeqCst))
    });
    latencies.sort();
    let pct = |p: f64| {
        latencies.get(((latencies.len() as f64 * p) as usize).min(latencies.len().saturating_sub(1))).copied().unwrap_or(Duration::ZERO)
    };
    println!(
        "{:.1} {:.1} {:.1} {errors}",
        latencies.len() as f64 / elapsed.as_secs_f64(),
        pct(0.50).as_secs_f64() * 1000.0,
        pct(0.99).as_secs_f64() * 1000.0
    );
}
