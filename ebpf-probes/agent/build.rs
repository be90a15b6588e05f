//! Builds the BPF programs (crate `steer-probe-ebpf`) for bpfel with aya-build and leaves the
//! object in `OUT_DIR/steer-probe-ebpf`, which `src/loader.rs` embeds.
//!
//! Toolchain: nightly (with rust-src and bpf-linker) by default; `STEER_BPF_TOOLCHAIN=stable`
//! uses the stable toolchain with `RUSTC_BOOTSTRAP=1` (build-std and `core_intrinsics` need it).

use anyhow::Context as _;

fn main() -> anyhow::Result<()> {
    println!("cargo:rerun-if-env-changed=STEER_BPF_TOOLCHAIN");
    // aya-build watches ebpf/; the programs also compile common/ in.
    println!("cargo:rerun-if-changed=../common/src");
    let manifest_dir = std::env::var("CARGO_MANIFEST_DIR").context("CARGO_MANIFEST_DIR not set")?;
    let root_dir = std::path::Path::new(&manifest_dir).join("../ebpf");
    let root_dir = root_dir.to_str().context("non-UTF-8 path to ebpf-probes/ebpf")?;
    let toolchain = match std::env::var("STEER_BPF_TOOLCHAIN").as_deref() {
        Ok("stable") => {
            // SAFETY: build scripts are single-threaded at this point; aya-build reads it below.
            unsafe { std::env::set_var("RUSTC_BOOTSTRAP", "1") };
            aya_build::Toolchain::Custom("stable")
        }
        Ok("nightly") | Err(_) => aya_build::Toolchain::Nightly,
        Ok(other) => anyhow::bail!("STEER_BPF_TOOLCHAIN must be nightly or stable, got {other:?}"),
    };
    let package = aya_build::Package {
        name: "steer-probe-ebpf",
        root_dir,
        ..Default::default()
    };
    aya_build::build_ebpf([package], toolchain).context("building the BPF programs")
}
