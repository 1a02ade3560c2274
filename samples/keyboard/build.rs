//! Build script of `vmbus-kbd`.
//!
//! On Windows with the `driver` feature (and so a WDK), it configures the crate as a KMDF driver
//! binary the windows-drivers-rs way (`wdk_build::configure_wdk_binary_build`) and sets
//! `cfg(kbd_driver)`, which compiles the WDF glue (`src/driver.rs`), the `wdk-alloc` global
//! allocator and the `wdk-panic` handler. Everywhere else it only declares that cfg.

fn main() {
    println!("cargo::rustc-check-cfg=cfg(kbd_driver)");
    #[cfg(all(windows, feature = "driver"))]
    if std::env::var("CARGO_CFG_TARGET_OS").as_deref() == Ok("windows") {
        match wdk_build::configure_wdk_binary_build() {
            Ok(()) => println!("cargo::rustc-cfg=kbd_driver"),
            Err(error) => println!("cargo::error=vmbus-kbd build script: {error}"),
        }
    }
}
