//! Release builds of the `agent` binary on Linux with glibc pack their relative relocations
//! (`-z pack-relative-relocs`, DT_RELR) when the linker and the C library here support it:
//! the dynamic loader then reads a few kilobytes instead of a 1.3 MB relocation table at
//! every start (about two thirds less time in the loader). Checked by linking and running
//! a tiny program with the flag; without support the binary is linked as before.
//!
//! They are also linked as position-dependent executables (`-no-pie`): then the loader has
//! no relocations of the binary's own to apply at all, and the 1.5 MB of read-only data
//! that holds pointers is no longer copied page by page at every start (about 350 fewer
//! page faults, a third of a one-step `agent exec`). The cost is that the binary's own
//! code and data are not placed at a random address (shared libraries, heap and stacks
//! still are).
//!
//! OpenSSL (HTTPS of webhooks and of git remotes) and zlib are linked statically when their
//! static archives are installed (`libssl-dev` and `zlib1g-dev` ship them): the loader then
//! opens and relocates two libraries fewer (about 150 fewer page faults, 1 to 2 ms at every
//! start). The archives are offered to the linker from a directory of links searched before
//! the system's, so the `-lssl -lcrypto -lz` of the `-sys` crates find them there; checked by
//! linking and running a tiny program against them. The cost: a security update of the
//! system's OpenSSL reaches the agent only when it is rebuilt (`install.sh` again).

use std::path::PathBuf;
use std::process::Command;

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    let var = |name: &str| std::env::var(name).unwrap_or_default();
    if var("PROFILE") != "release"
        || var("CARGO_CFG_TARGET_OS") != "linux"
        || var("CARGO_CFG_TARGET_ENV") != "gnu"
        || var("TARGET") != var("HOST")
    {
        return;
    }
    let flag = "-Wl,-z,pack-relative-relocs";
    if supported(flag, true) {
        println!("cargo:rustc-link-arg-bins={flag}");
    }
    // Given after rustc's own `-pie`, so it wins.
    if supported("-no-pie", false) {
        println!("cargo:rustc-link-arg-bins=-no-pie");
    }
    if let Some(dir) = static_libs() {
        println!("cargo:rustc-link-search=native={}", dir.display());
    }
}

/// A directory of links to the static archives of OpenSSL and zlib, when both OpenSSL
/// archives exist and a program links and runs with them (zlib is added when it exists).
fn static_libs() -> Option<PathBuf> {
    let out = PathBuf::from(std::env::var_os("OUT_DIR")?);
    let dir = out.join("static-libs");
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).ok()?;
    let cc = std::env::var("CC").unwrap_or_else(|_| "cc".into());
    let archive = |name: &str| -> Option<()> {
        let file = format!("lib{name}.a");
        let out = Command::new(&cc)
            .arg(format!("-print-file-name={file}"))
            .output()
            .ok()?;
        let path = PathBuf::from(String::from_utf8(out.stdout).ok()?.trim());
        (path.is_absolute() && path.is_file()).then_some(())?;
        std::os::unix::fs::symlink(&path, dir.join(&file)).ok()
    };
    archive("ssl")?;
    archive("crypto")?;
    let zlib = archive("z").is_some();
    let source = out.join("probe_static.c");
    let program = out.join("probe_static");
    let text = "int OPENSSL_init_ssl(unsigned long long, const void *);\n\
                const char *zlibVersion(void);\n\
                int main(int argc, char **argv) {\n\
                \x20 (void)argv;\n\
                \x20 if (argc > 99) return OPENSSL_init_ssl(0, 0) + (ZLIB != 0);\n\
                \x20 return 0;\n\
                }\n";
    let text = text.replace("ZLIB", if zlib { "zlibVersion()[0]" } else { "0" });
    std::fs::write(&source, text).ok()?;
    let mut command = Command::new(&cc);
    command
        .arg(&source)
        .arg("-o")
        .arg(&program)
        .arg("-no-pie")
        .arg("-L")
        .arg(&dir)
        .args(["-lssl", "-lcrypto"]);
    if zlib {
        command.arg("-lz");
    }
    let linked = command
        .args(["-lpthread", "-ldl"])
        .output()
        .is_ok_and(|o| o.status.success());
    (linked && Command::new(&program).status().is_ok_and(|s| s.success())).then_some(dir)
}

/// Whether a program linked with `flag` (warnings fatal; as a PIE when `pie`) links and runs.
fn supported(flag: &str, pie: bool) -> bool {
    let out = PathBuf::from(std::env::var_os("OUT_DIR").unwrap_or_default());
    let name: String = flag.chars().filter(char::is_ascii_alphanumeric).collect();
    let source = out.join(format!("probe_{name}.c"));
    let program = out.join(format!("probe_{name}"));
    if std::fs::write(&source, "int main(void) { return 0; }\n").is_err() {
        return false;
    }
    let cc = std::env::var("CC").unwrap_or_else(|_| "cc".into());
    let mut command = Command::new(cc);
    command.arg(&source).arg("-o").arg(&program);
    if pie {
        command.arg("-pie").arg("-fPIE");
    }
    let linked = command
        .arg(flag)
        .arg("-Wl,--fatal-warnings")
        .output()
        .is_ok_and(|o| o.status.success());
    linked && Command::new(&program).status().is_ok_and(|s| s.success())
}
