//! Gives the shared library (the cdylib) an ELF SONAME, so that programs linked
//! against it record which ABI they need and the dynamic loader can tell two
//! incompatible versions apart.
//!
//! The rule (Cargo's semver, as cargo-c applies it to C libraries): the SONAME is
//! `libengagehub.so.<major>` from 1.0 on, and `libengagehub.so.0.<minor>` while the
//! version is 0.x, where a minor release may break compatibility. Every release with
//! the same SONAME is ABI compatible with the earlier ones. `make install` reads the
//! SONAME back (readelf) and installs `libengagehub.so.<version>` with the
//! `libengagehub.so.<soname version>` and `libengagehub.so` links.

use std::env;

/// Emits the `-soname` link argument for ELF targets (Linux, the BSDs); other
/// platforms (macOS install names, Windows DLLs) keep their defaults.
fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    let family = env::var("CARGO_CFG_TARGET_FAMILY").unwrap_or_default();
    let os = env::var("CARGO_CFG_TARGET_OS").unwrap_or_default();
    if !family.split(',').any(|f| f == "unix") || matches!(os.as_str(), "macos" | "ios") {
        return;
    }
    let major = env::var("CARGO_PKG_VERSION_MAJOR").expect("cargo sets CARGO_PKG_VERSION_MAJOR");
    let minor = env::var("CARGO_PKG_VERSION_MINOR").expect("cargo sets CARGO_PKG_VERSION_MINOR");
    let soversion = if major == "0" {
        format!("0.{minor}")
    } else {
        major
    };
    println!("cargo:rustc-cdylib-link-arg=-Wl,-soname,libengagehub.so.{soversion}");
}
