//! Compiles the kernel data path's BPF program (`bpf/sockmap.bpf.c`) with clang.
//!
//! Without clang (or without the kernel and libbpf headers) the crate still builds: the
//! `fog_bpf` cfg is left unset and the listener uses its user-space data path only, saying
//! so in its log. `FOG_LISTENER_CLANG` names another clang.

use std::env;
use std::path::PathBuf;
use std::process::Command;

fn main() {
    println!("cargo::rustc-check-cfg=cfg(fog_bpf)");
    println!("cargo::rerun-if-changed=bpf/sockmap.bpf.c");
    println!("cargo::rerun-if-env-changed=FOG_LISTENER_CLANG");
    let Some(out_dir) = env::var_os("OUT_DIR").map(PathBuf::from) else {
        println!("cargo::warning=OUT_DIR unset; building without the kernel data path");
        return;
    };
    let object = out_dir.join("sockmap.bpf.o");
    let clang = env::var("FOG_LISTENER_CLANG").unwrap_or_else(|_| "clang".to_owned());
    let mut cmd = Command::new(&clang);
    cmd.args(["-O2", "-g", "-target", "bpf", "-Wall", "-Werror", "-c"]);
    // <linux/bpf.h> includes <asm/types.h>, which lives under the multiarch directory.
    if let Some(multiarch) = multiarch() {
        cmd.arg(format!("-I/usr/include/{multiarch}"));
    }
    cmd.arg("bpf/sockmap.bpf.c").arg("-o").arg(&object);
    match cmd.output() {
        Ok(out) if out.status.success() => println!("cargo::rustc-cfg=fog_bpf"),
        Ok(out) => println!(
            "cargo::warning=fog-listener: {clang} could not compile bpf/sockmap.bpf.c ({}); \
             building without the kernel data path: {}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
                .lines()
                .next()
                .unwrap_or("")
        ),
        Err(e) => println!(
            "cargo::warning=fog-listener: cannot run {clang} ({e}); building without the \
             kernel data path (install clang and libbpf-dev to get it)"
        ),
    }
}

/// The Debian multiarch triplet of the build host (`x86_64-linux-gnu`), if gcc knows it.
fn multiarch() -> Option<String> {
    let out = Command::new("gcc").arg("-print-multiarch").output().ok()?;
    let triplet = String::from_utf8(out.stdout).ok()?.trim().to_owned();
    (!triplet.is_empty()).then_some(triplet)
}
