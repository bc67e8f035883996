//! Builds the XDP programs (dataplane-ebpf) for the BPF target and puts the object in OUT_DIR,
//! where `agent::program` embeds it. Needs nightly, rust-src and bpf-linker: `cargo xtask bootstrap`.
use aya_build::{Package, Toolchain};

fn main() -> anyhow::Result<()> {
    let manifest_dir = std::env::var("CARGO_MANIFEST_DIR")?;
    let root_dir = format!("{manifest_dir}/../dataplane-ebpf");
    aya_build::build_ebpf(
        [Package { name: "cats-dataplane-ebpf", root_dir: &root_dir, ..Default::default() }],
        Toolchain::default(),
    )
}
