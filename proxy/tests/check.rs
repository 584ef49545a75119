//! `edge-proxy check` and start-up validation, as a user runs them.

mod utils;

use utils::*;

#[test]
fn check_names_every_bad_field_and_exits_non_zero() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("bad.yaml");
    std::fs::write(
        &file,
        "listen:\n  http: \"0.0.0.0:80\"\ndiscovery: static\nroutes:\n  - service: a\n    port: 80\n  - service: a\n    port: 80\n    path: /x\n  - service: a\n    port: 99999\nstatic:\n  a: [\"127.0.0.1:1\"]\n",
    )
    .unwrap();
    let out = edge_proxy(&["check", file.to_str().unwrap()]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        stderr.contains("routes[2].port: 99999 is out of range"),
        "{stderr}"
    );
    assert!(!stderr.contains("panicked"), "{stderr}");
}

#[test]
fn check_reports_unreadable_and_non_yaml_files() {
    let out = edge_proxy(&["check", "/nonexistent/proxy.yaml"]);
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("/nonexistent/proxy.yaml"), "{stderr}");

    let dir = tempfile::tempdir().unwrap();
    for (name, text) in [
        ("tabs.yaml", "listen:\n\thttp: x\n"),
        ("list.yaml", "- 1\n- 2\n"),
        ("binary.yaml", "\u{0}\u{1}\u{2}"),
    ] {
        let file = dir.path().join(name);
        std::fs::write(&file, text).unwrap();
        let out = edge_proxy(&["check", file.to_str().unwrap()]);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{name}");
        assert!(stderr.contains(name), "{name}: {stderr}");
        assert!(!stderr.contains("panicked"), "{name}: {stderr}");
    }
}

#[test]
fn a_bad_config_at_start_up_exits_non_zero_with_the_field() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("proxy.yaml");
    std::fs::write(
        &file,
        "listen:\n  http: \"127.0.0.1:0\"\ndiscovery: staticc\nroutes: []\n",
    )
    .unwrap();
    let out = edge_proxy(&["--config", file.to_str().unwrap()]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(stderr.contains("discovery:"), "{stderr}");
}

#[test]
fn every_example_config_in_the_repo_passes_check() {
    let mut checked = 0;
    for dir in ["examples", "k8s"] {
        let Ok(entries) = std::fs::read_dir(repo_root().join(dir)) else {
            continue;
        };
        for entry in entries {
            let path = entry.unwrap().path();
            let text = std::fs::read_to_string(&path).unwrap_or_default();
            let is_config = path.extension().is_some_and(|e| e == "yaml" || e == "yml")
                && text.lines().any(|l| l.starts_with("listen:"));
            if !is_config {
                continue;
            }
            let out = edge_proxy(&["check", path.to_str().unwrap()]);
            assert!(
                out.status.success(),
                "{}: {}",
                path.display(),
                String::from_utf8_lossy(&out.stderr)
            );
            checked += 1;
        }
    }
    assert!(checked >= 1, "no example configs found");
}

#[test]
fn check_start_up_and_reload_read_a_file_alike_invalid_utf8_is_refused_by_all() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("latin1.yaml");
    // A valid configuration but for one Latin-1 byte in a comment.
    let mut bytes = b"# caf\xe9\nlisten:\n  http: \"127.0.0.1:0\"\ndiscovery: static\nroutes:\n  - service: a\n    port: 80\nstatic:\n  a: [\"127.0.0.1:1\"]\n".to_vec();
    std::fs::write(&file, &bytes).unwrap();
    let check = edge_proxy(&["check", file.to_str().unwrap()]);
    let check_err = String::from_utf8_lossy(&check.stderr);
    assert!(!check.status.success());
    assert!(
        check_err.contains("not UTF-8 text: invalid byte at offset 5"),
        "{check_err}"
    );
    let start = edge_proxy(&["--config", file.to_str().unwrap()]);
    let start_err = String::from_utf8_lossy(&start.stderr);
    assert!(!start.status.success());
    assert!(
        start_err.contains("not UTF-8 text: invalid byte at offset 5"),
        "{start_err}"
    );

    // A running proxy refuses the same bytes on reload and keeps serving.
    let app = HelloApp::start("app");
    let proxy = Proxy::start(&static_config(
        "  - service: hello-app\n    port: 8080",
        &[app.addr],
    ));
    let good = std::fs::read_to_string(&proxy.config_path).unwrap();
    bytes = [b"# caf\xe9\n".as_slice(), good.as_bytes()].concat();
    std::fs::write(&proxy.config_path, &bytes).unwrap();
    proxy.wait_metrics("the rejected reload", |m| {
        m.sum("edge_proxy_config_reloads_total", &[("result", "failure")]) == 1.0
    });
    assert!(proxy.log().contains("not UTF-8 text"), "{}", proxy.log());
    assert_eq!(curl(&[&proxy.url("/")]).status, 200);
}

/// The text of README.md between `start` and the next "```" after it.
fn readme_block(after: &str) -> String {
    let readme = std::fs::read_to_string(repo_root().join("README.md")).unwrap();
    let at = readme
        .find(after)
        .unwrap_or_else(|| panic!("README has no {after:?}"))
        + after.len();
    let end = readme[at..].find("```").unwrap();
    readme[at..at + end].to_string()
}

#[test]
fn the_readme_check_example_prints_what_readme_shows() {
    let example = readme_block("$ cat bad.yaml\n");
    let (file, expected) = example
        .split_once("$ edge-proxy check bad.yaml\n")
        .expect("the command after the file");
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("bad.yaml"), file).unwrap();
    let out = std::process::Command::new(edge_proxy_bin())
        .args(["check", "bad.yaml"])
        .current_dir(dir.path())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(String::from_utf8_lossy(&out.stderr), expected);
}

#[test]
fn the_readme_configuration_sample_passes_check() {
    let readme = std::fs::read_to_string(repo_root().join("README.md")).unwrap();
    let section = &readme[readme.find("\n## Configuration\n").unwrap()..];
    let fence = section.find("```yaml\n").unwrap() + "```yaml\n".len();
    let sample = section[fence..fence + section[fence..].find("```").unwrap()].to_string();
    // With its certificate files present, as in a pod that mounts the Secret.
    let dir = tempfile::tempdir().unwrap();
    make_cert(dir.path(), "tls", "hello.example.com", "readme");
    let sample = sample
        .replace(
            "/etc/edge-proxy/tls/tls.crt",
            &dir.path().join("tls.crt").display().to_string(),
        )
        .replace(
            "/etc/edge-proxy/tls/tls.key",
            &dir.path().join("tls.key").display().to_string(),
        );
    let file = dir.path().join("proxy.yaml");
    std::fs::write(&file, &sample).unwrap();
    let out = edge_proxy(&["check", file.to_str().unwrap()]);
    assert!(
        out.status.success(),
        "{}\n{sample}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn check_reads_the_certificate_files_it_names() {
    let dir = tempfile::tempdir().unwrap();
    make_cert(dir.path(), "a", "a.test", "one");
    make_cert(dir.path(), "b", "b.test", "two");
    let d = dir.path().display();
    let file = dir.path().join("proxy.yaml");
    // A missing certificate, and a key that belongs to another certificate.
    std::fs::write(
        &file,
        format!(
            "listen:\n  http: \"127.0.0.1:1\"\n  https: \"127.0.0.1:2\"\ndiscovery: static\n\
             tls:\n  - hosts: [a.test]\n    cert: {d}/gone.crt\n    key: {d}/a.key\n\
             \x20 - hosts: [b.test]\n    cert: {d}/b.crt\n    key: {d}/a.key\n\
             routes:\n  - service: a\n    port: 80\nstatic:\n  a: [\"127.0.0.1:1\"]\n"
        ),
    )
    .unwrap();
    let out = edge_proxy(&["check", file.to_str().unwrap()]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    assert!(stderr.contains("2 problems"), "{stderr}");
    assert!(stderr.contains("tls[0].cert: cannot read"), "{stderr}");
    assert!(
        stderr.contains("tls[1].key:") && stderr.contains("does not belong"),
        "{stderr}"
    );
}

#[test]
fn a_file_over_one_mebibyte_is_refused_before_it_is_parsed() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("huge.yaml");
    let mut text = String::from("listen:\n  http: \"127.0.0.1:1\"\ndiscovery: static\nroutes:\n");
    while text.len() <= 1024 * 1024 {
        text.push_str("  - service: a\n    port: 80\n");
    }
    std::fs::write(&file, text).unwrap();
    let out = edge_proxy(&["check", file.to_str().unwrap()]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(stderr.contains("larger than 1048576 bytes"), "{stderr}");
}
