//! Build script of `vmbus-kmcl`.
//!
//! On Windows with a WDK and the `wdk` feature it configures the crate the windows-drivers-rs
//! way (`wdk_build::configure_wdk_library_build_and_then`) and:
//! - sets `cfg(kmcl_wdk)` when the build graph is a WDM/KMDF driver, so `sys` re-exports
//!   wdk-sys's base types instead of its portable twins, and `cfg(kmcl_kmdf)` for KMDF, which
//!   compiles the WDF interface query (`src/wdf.rs`);
//! - with the `bindgen-check` feature (maintainers and Windows CI; needs LLVM), runs bindgen over
//!   `include/vmbus_kmcl.h` (which includes the WDK's `vmbuskernelmodeclientlibapi.h`) and sets
//!   `cfg(kmcl_bindgen)`, which turns on a test that compares every generated struct size and
//!   slot offset with the hand-written `sys` layer.
//!
//! Everywhere else it does nothing. The WDK path can only run on a Windows host (the
//! `cfg(windows)` gates and `[target.'cfg(windows)'.build-dependencies]`), and only for a
//! Windows target (`CARGO_CFG_TARGET_OS`): cross-building a driver from Linux is not supported
//! by windows-drivers-rs.

fn main() {
    #[cfg(all(windows, feature = "wdk"))]
    if std::env::var("CARGO_CFG_TARGET_OS").as_deref() == Ok("windows")
        && let Err(error) = wdk::configure()
    {
        println!("cargo::error=vmbus-kmcl build script: {error}");
    }
}

#[cfg(all(windows, feature = "wdk"))]
mod wdk {
    use std::error::Error;

    use wdk_build::DriverConfig;

    /// The wrapper header bindgen reads.
    const WRAPPER_HEADER: &str = "include/vmbus_kmcl.h";

    pub fn configure() -> Result<(), Box<dyn Error>> {
        println!("cargo::rerun-if-changed={WRAPPER_HEADER}");
        wdk_build::configure_wdk_library_build_and_then(|config| -> Result<(), Box<dyn Error>> {
            // wdk-sys only exports its types for kernel-mode driver models.
            if !matches!(
                config.driver_config,
                DriverConfig::Wdm | DriverConfig::Kmdf(_)
            ) {
                return Ok(());
            }
            println!("cargo::rustc-cfg=kmcl_wdk");
            if matches!(config.driver_config, DriverConfig::Kmdf(_)) {
                println!("cargo::rustc-cfg=kmcl_kmdf");
            }
            #[cfg(feature = "bindgen-check")]
            generate_bindings(&config)?;
            Ok(())
        })
    }

    /// The bindings `src/sys/bindgen_check.rs` compares with the hand-written layer.
    #[cfg(feature = "bindgen-check")]
    fn generate_bindings(config: &wdk_build::Config) -> Result<(), Box<dyn Error>> {
        use wdk_build::BuilderExt as _;

        let out = std::path::PathBuf::from(std::env::var("OUT_DIR")?).join("kmcl_bindings.rs");
        bindgen::Builder::wdk_default(config)?
            .header(WRAPPER_HEADER)
            .allowlist_file(".*[/\\\\]vmbuskernelmodeclientlibapi\\.h")
            .allowlist_recursively(false)
            .layout_tests(false)
            // No `impl Default` (it would be an `unsafe` zeroing the workspace lints forbid in
            // an allowed-lints module).
            .derive_default(false)
            .generate()?
            .write_to_file(&out)?;
        println!("cargo::rustc-cfg=kmcl_bindgen");
        Ok(())
    }
}
