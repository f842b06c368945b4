//! Builds the kernel sensor: dumps the running kernel's BTF as `vmlinux.h`, compiles
//! `src/sensor/sensor.bpf.c` into a CO-RE BPF object and generates its libbpf-rs skeleton, all in
//! `OUT_DIR`. CO-RE relocations make the object portable to other kernels with BTF.

use std::env;
use std::ffi::OsString;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use libbpf_cargo::SkeletonBuilder;

const SRC: &str = "src/sensor/sensor.bpf.c";
const INSTALL_HINT: &str = "install the Debian packages clang libelf-dev zlib1g-dev pkg-config bpftool \
     (apt-get install clang libelf-dev zlib1g-dev pkg-config bpftool)";

fn main() {
    println!("cargo:rerun-if-changed={SRC}");
    for var in ["RAMPART_BPFTOOL", "RAMPART_VMLINUX_BTF", "RAMPART_CLANG"] {
        println!("cargo:rerun-if-env-changed={var}");
    }
    if let Err(message) = build() {
        eprintln!("error: rampart-agent kernel sensor: {message}");
        std::process::exit(1);
    }
}

fn build() -> Result<(), String> {
    let out_dir = PathBuf::from(env::var_os("OUT_DIR").ok_or("OUT_DIR is not set")?);
    write_vmlinux_h(&out_dir.join("vmlinux.h"))?;

    let clang = env::var_os("RAMPART_CLANG").unwrap_or_else(|| OsString::from("clang"));
    probe_tool(&clang, "--version", "clang (set RAMPART_CLANG to its path)")?;

    let mut include = OsString::from("-I");
    include.push(&out_dir);
    SkeletonBuilder::new()
        .source(SRC)
        .clang(&clang)
        .clang_args([
            include,
            OsString::from("-Wall"),
            OsString::from("-Wno-unused-function"),
        ])
        // include_bytes! the object instead of a byte-array literal: far faster to compile.
        .reference_obj(true)
        .build_and_generate(out_dir.join("sensor.skel.rs"))
        .map_err(|e| format!("compiling {SRC} failed: {e:#}"))
}

/// `bpftool btf dump file <btf> format c > vmlinux.h`.
fn write_vmlinux_h(dest: &Path) -> Result<(), String> {
    let btf = env::var_os("RAMPART_VMLINUX_BTF")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/sys/kernel/btf/vmlinux"));
    if !btf.exists() {
        return Err(format!(
            "kernel BTF {} not found: the build needs a kernel with CONFIG_DEBUG_INFO_BTF, or \
             RAMPART_VMLINUX_BTF pointing at a vmlinux BTF file",
            btf.display()
        ));
    }
    let bpftool = find_bpftool()?;
    let output = Command::new(&bpftool)
        .args(["btf", "dump", "file"])
        .arg(&btf)
        .args(["format", "c"])
        .output()
        .map_err(|e| format!("running {}: {e}", bpftool.display()))?;
    if !output.status.success() {
        return Err(format!(
            "{} btf dump file {} failed ({}): {}",
            bpftool.display(),
            btf.display(),
            output.status,
            String::from_utf8_lossy(&output.stderr).trim()
        ));
    }
    fs::write(dest, &output.stdout).map_err(|e| format!("writing {}: {e}", dest.display()))
}

/// `RAMPART_BPFTOOL`, else `bpftool` on PATH, else Debian's `/usr/sbin/bpftool` (root's PATH
/// only has sbin).
fn find_bpftool() -> Result<PathBuf, String> {
    if let Some(path) = env::var_os("RAMPART_BPFTOOL") {
        let path = PathBuf::from(path);
        probe_tool(
            path.as_os_str(),
            "version",
            "bpftool (from RAMPART_BPFTOOL)",
        )?;
        return Ok(path);
    }
    for candidate in ["bpftool", "/usr/sbin/bpftool", "/sbin/bpftool"] {
        if probe_tool(candidate.as_ref(), "version", "bpftool").is_ok() {
            return Ok(PathBuf::from(candidate));
        }
    }
    Err(format!(
        "bpftool not found (set RAMPART_BPFTOOL to its path, or {INSTALL_HINT})"
    ))
}

fn probe_tool(program: &std::ffi::OsStr, arg: &str, what: &str) -> Result<(), String> {
    match Command::new(program).arg(arg).output() {
        Ok(out) if out.status.success() => Ok(()),
        Ok(out) => Err(format!(
            "{what} at {} does not run ({}); {INSTALL_HINT}",
            program.to_string_lossy(),
            out.status
        )),
        Err(e) => Err(format!("{what} not found ({e}); {INSTALL_HINT}")),
    }
}
