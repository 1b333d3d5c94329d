//! The workspace's link set-up (rpaths to libtorch, `crates/cli/build.rs`) and the Open
//! Inference Protocol's gRPC service, compiled from `proto/inference.proto` by protox (pure
//! Rust: no `protoc` needed).

#[path = "../cli/build.rs"]
mod link;

fn main() {
    link::link_setup();
    println!("cargo:rerun-if-changed=proto/inference.proto");
    let fds = protox::compile(["proto/inference.proto"], ["proto"]).expect("proto/inference.proto compiles");
    tonic_prost_build::configure().build_client(true).build_server(true).compile_fds(fds).expect("gRPC code generation");
}
