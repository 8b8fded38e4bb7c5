//! Generates the MCU protocol's Rust code from `proto/mcu.proto` with
//! rust-protobuf's pure-Rust parser (no `protoc` binary needed).

fn main() {
    protobuf_codegen::Codegen::new()
        .pure()
        .include("proto")
        .input("proto/mcu.proto")
        .cargo_out_dir("proto")
        .run_from_script();
}
