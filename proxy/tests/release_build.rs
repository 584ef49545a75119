//! The release build's profile (README, "Profile-guided build"): scripts/pgo-flags.sh,
//! which scripts/build-release.sh and Dockerfile.proxy both use, unpacks the
//! committed profile where rustc reads it and leaves it alone when it has not
//! changed (rustc tracks the file: a new date would rebuild every crate), and
//! builds without it, saying why, when asked to or when the compiler's LLVM is
//! older than the profile's. The optimised build itself runs in the test
//! command's run-local check and container build; what it gains is measured in
//! bench/ (callgrind.py, ab.py), not here.

mod utils;

use std::os::unix::fs::PermissionsExt;
use std::process::Command;
use utils::*;

/// pgo-flags.sh's (stdout, stderr), with `envs` set and `path_first` ahead of PATH.
fn pgo_flags(envs: &[(&str, &str)], path_first: Option<&std::path::Path>) -> (String, String) {
    let mut command = Command::new("bash");
    command.arg(repo_root().join("scripts/pgo-flags.sh"));
    command.envs(envs.iter().copied());
    if let Some(dir) = path_first {
        let path = std::env::var("PATH").unwrap_or_default();
        command.env("PATH", format!("{}:{path}", dir.display()));
    }
    let out = command.output().unwrap();
    let stderr = String::from_utf8(out.stderr).unwrap();
    assert!(out.status.success(), "pgo-flags.sh failed: {stderr}");
    (String::from_utf8(out.stdout).unwrap(), stderr)
}

#[test]
fn the_profile_is_unpacked_where_rustc_reads_it_and_left_alone_when_unchanged() {
    let profile = repo_root().join("target/pgo/edge-proxy.profdata");
    let (flags, _) = pgo_flags(&[], None);
    assert_eq!(
        flags.trim(),
        format!(
            "-Cprofile-use={} -Cllvm-args=-no-pgo-warn-mismatch",
            profile.display()
        )
    );
    // LLVM's indexed profile (what rustc reads), not the packed file.
    let bytes = std::fs::read(&profile).unwrap();
    assert_eq!(
        &bytes[..8],
        b"\xfflprofi\x81",
        "not an indexed LLVM profile"
    );
    let written = std::fs::metadata(&profile).unwrap().modified().unwrap();

    let (again, _) = pgo_flags(&[], None);
    assert_eq!(again, flags);
    assert_eq!(
        std::fs::metadata(&profile).unwrap().modified().unwrap(),
        written,
        "an unchanged profile was written again (every crate would rebuild)"
    );
}

#[test]
fn edge_proxy_pgo_off_builds_without_the_profile_and_says_so() {
    let (flags, said) = pgo_flags(&[("EDGE_PROXY_PGO", "off")], None);
    assert_eq!(flags, "");
    assert!(said.contains("EDGE_PROXY_PGO=off"), "{said}");
}

#[test]
fn a_compiler_older_than_the_profile_builds_without_it_and_says_so() {
    // A `rustc` whose LLVM (19) cannot read a profile written by LLVM 22.
    let dir = tempfile::tempdir().unwrap();
    let rustc = dir.path().join("rustc");
    std::fs::write(
        &rustc,
        "#!/bin/sh\nprintf 'rustc 1.86.0\\nhost: x86_64-unknown-linux-gnu\\nLLVM version: 19.1.7\\n'\n",
    )
    .unwrap();
    std::fs::set_permissions(&rustc, std::fs::Permissions::from_mode(0o755)).unwrap();
    let (flags, said) = pgo_flags(&[], Some(dir.path()));
    assert_eq!(flags, "");
    assert!(
        said.contains("LLVM 19 is older than the profile's"),
        "{said}"
    );
}
