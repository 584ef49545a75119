//! `edge-proxy ingress-check`, on the examples of ingress-nginx's own
//! documentation (tests/fixtures/ingress-nginx/, each citing its source), as
//! a user about to migrate runs it: files, standard input, a kubectl List.

mod utils;

use std::io::Write;
use std::process::{Command, Output, Stdio};
use utils::*;

fn fixture(name: &str) -> String {
    repo_root()
        .join("proxy/tests/fixtures/ingress-nginx")
        .join(name)
        .display()
        .to_string()
}

fn check(args: &[&str], stdin: Option<&str>) -> (i32, String, String) {
    let mut child = Command::new(edge_proxy_bin())
        .arg("ingress-check")
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut input = child.stdin.take().unwrap();
    input.write_all(stdin.unwrap_or("").as_bytes()).unwrap();
    drop(input);
    let Output {
        status,
        stdout,
        stderr,
    } = child.wait_with_output().unwrap();
    (
        status.code().unwrap(),
        String::from_utf8_lossy(&stdout).into_owned(),
        String::from_utf8_lossy(&stderr).into_owned(),
    )
}

fn has(out: &str, line: &str) {
    assert!(
        out.lines().any(|l| l.trim_start() == line),
        "no line {line:?} in\n{out}"
    );
}

#[test]
fn the_documented_examples_are_reported_as_edge_proxy_serves_them() {
    let (code, out, _) = check(&[&fixture("rewrite.yaml")], None);
    assert_eq!(code, 1, "a regex path differs from nginx's PCRE");
    has(
        &out,
        "default/rewrite (class nginx): served, with differences",
    );
    has(&out, "route rewrite.bar.com /something(/|$)(.*) (Regex) -> default/http-svc:80; path rewritten to /$2");
    has(&out, "default/approot (class nginx): served as written");
    has(
        &out,
        "route approot.bar.com / (Prefix) -> default/http-svc:80; / redirected (302) to /app1",
    );

    let (code, out, _) = check(&[&fixture("backends.yaml")], None);
    assert_eq!(code, 0, "{out}");
    has(&out, "route errors.example.com / (Prefix) -> default/http-svc:80; default backend default/error-pages:80 when no pod is ready, and for error pages 404,415");
    has(&out, "route headers.example.com / (Prefix) -> default/http-svc:80; response headers from its custom-headers ConfigMap (read in the cluster, not here; their names must be in ingress.allowed_response_headers)");
    has(
        &out,
        "route upstream.example.com / (Prefix) -> default/http-svc:80 (its ClusterIP)",
    );
    has(&out, "route secure.example.com / (Prefix) -> default/http-svc:443; to the pods: HTTPS, certificate verified, CA and client certificate from Secret default/backend-ca");
    has(
        &out,
        "4 Ingresses: 4 served as written, 0 served with differences, 0 not served",
    );

    // ingress-nginx's oauth2-proxy example: the auth path's Ingress gives the
    // host TLS, so the app's path redirects to https too; auth-url by $host.
    let (code, out, _) = check(&[&fixture("oauth2-proxy.yaml")], None);
    assert_eq!(code, 0, "{out}");
    has(&out, "route dashboard.example.com / (Prefix) -> kube-system/kubernetes-dashboard:80; plain HTTP redirected to https; authenticated by https://$host/oauth2/auth (sign in at https://$host/oauth2/start?rd=$escaped_request_uri)");

    let (code, out, _) = check(&[&fixture("affinity.yaml")], None);
    assert_eq!(code, 0, "{out}");
    has(&out, "route stickyingress.example.com / (Prefix) -> default/http-svc:80; cookie affinity (route)");
    // Both examples name their Ingress nginx-test: as in a cluster, the later one counts.
    let (code, out, _) = check(
        &[&fixture("affinity.yaml"), &fixture("tls-termination.yaml")],
        None,
    );
    assert_eq!(code, 0, "{out}");
    has(
        &out,
        "note: default/nginx-test is given more than once: the last one is checked",
    );
    has(
        &out,
        "route foo.bar.com / (Prefix) -> default/http-svc:80; plain HTTP redirected to https",
    );
    has(
        &out,
        "tls: foo.bar.com from Secret tls-secret (read in the cluster, not here)",
    );

    let (code, out, _) = check(&[&fixture("external-auth.yaml")], None);
    assert_eq!(code, 0, "{out}");
    has(&out, "route external-auth-01.sample.com / (Prefix) -> default/http-svc:80; authenticated by https://httpbin.org/basic-auth/user/passwd");
    // ingress-nginx's basic auth example: served, its users read in the cluster.
    let (code, out, _) = check(&[&fixture("basic-auth.yaml")], None);
    assert_eq!(code, 0, "{out}");
    has(&out, "route foo.bar.com / (Prefix) -> default/http-svc:80; basic auth, users from Secret default/basic-auth");
    // Rate limits, as ingress-nginx's annotation docs write them.
    let limited = basic_ingress_yaml(
        "limited",
        "limited.test",
        &[
            ("limit-rps", "10"),
            ("limit-connections", "4"),
            ("limit-rate", "100"),
            ("limit-rate-after", "1024"),
        ],
    );
    let (code, out, _) = check(&["-"], Some(&limited));
    assert_eq!(code, 0, "{out}");
    has(&out, "route limited.test / (Prefix) -> default/web:80; per client and node: 10 requests a second (burst 50), 4 requests in flight; responses at 100 KB/s after 1024 KB");
    // A kind of auth not built (digest) is refused, never served open.
    let digest = "apiVersion: networking.k8s.io/v1\nkind: Ingress\nmetadata:\n  name: digest\n  namespace: default\n  annotations:\n    nginx.ingress.kubernetes.io/auth-type: digest\n    nginx.ingress.kubernetes.io/auth-secret: basic-auth\nspec:\n  ingressClassName: nginx\n  rules:\n  - host: digest.test\n    http:\n      paths:\n      - path: /\n        pathType: Prefix\n        backend:\n          service:\n            name: web\n            port:\n              number: 80\n";
    let (code, out, _) = check(&["-"], Some(digest));
    assert_eq!(code, 1);
    has(&out, "default/digest (class nginx): NOT SERVED");
    assert!(
        !out.contains("route "),
        "no route of a refused Ingress: {out}"
    );

    let (_, out, _) = check(
        &[
            &fixture("configuration-snippet.yaml"),
            &fixture("cors.yaml"),
        ],
        None,
    );
    assert!(
        out.lines().any(|l| l
            .trim_start()
            .starts_with("ignored: nginx.ingress.kubernetes.io/configuration-snippet:")),
        "configuration-snippet not reported in\n{out}"
    );
    has(
        &out,
        "route cors.example.com / (Prefix) -> default/http-svc:80; CORS for https://origin-site.com",
    );
    has(
        &out,
        "2 Ingresses: 1 served as written, 1 served with differences, 0 not served",
    );
}

#[test]
fn a_canary_from_standard_input_joins_its_main_ingress() {
    let text = std::fs::read_to_string(fixture("canary.yaml")).unwrap();
    let (code, out, _) = check(&["-"], Some(&text));
    assert_eq!(code, 1, "the weight differs (exact shares)");
    has(
        &out,
        "route echo.prod.mydomain.com / (Prefix) -> default/production:80 + default/canary:80; canary (header -, cookie -, weight 50/100)",
    );
    has(
        &out,
        "canary: its backends join the main Ingress's route for the same host and path",
    );
}

#[test]
fn a_kubectl_list_with_a_conflict_and_other_kinds_and_input_that_is_not_yaml() {
    // What `kubectl get ingress,svc -A -o yaml` prints: a List of kinds.
    let list = r#"
apiVersion: v1
kind: List
items:
- apiVersion: networking.k8s.io/v1
  kind: Ingress
  metadata: {name: old, namespace: shop, creationTimestamp: "2025-01-01T00:00:00Z"}
  spec:
    ingressClassName: nginx
    rules: [{host: a.test, http: {paths: [{path: /, pathType: Prefix, backend: {service: {name: old, port: {number: 80}}}}]}}]
- apiVersion: networking.k8s.io/v1
  kind: Ingress
  metadata:
    name: new
    namespace: shop
    creationTimestamp: "2025-06-01T00:00:00Z"
    annotations: {kubernetes.io/ingress.class: nginx}
  spec:
    rules: [{host: a.test, http: {paths: [{path: /, pathType: Prefix, backend: {service: {name: new, port: {number: 80}}}}]}}]
- apiVersion: v1
  kind: Service
  metadata: {name: old, namespace: shop}
"#;
    let (code, out, _) = check(&["-"], Some(list));
    assert_eq!(code, 1);
    has(&out, "shop/old (class nginx): served as written");
    assert!(
        out.lines().any(|l| l.trim_start().starts_with("conflict: ingress:shop/new:rules[0].paths[0]: host a.test path / (Prefix) is already served by Ingress shop/old (older): not served from Ingress shop/new")),
        "{out}"
    );
    has(&out, "skipped: 1 Service (not an Ingress)");

    let (code, _, err) = check(&["-"], Some("kind: Ingress\nmetadata: [\n"));
    assert_eq!(code, 2);
    assert!(err.contains("not YAML"), "{err}");
    let (code, _, err) = check(&["/nonexistent.yaml"], None);
    assert_eq!(code, 2);
    assert!(err.contains("/nonexistent.yaml"), "{err}");
}

#[test]
fn the_readme_example_prints_what_readme_shows() {
    let readme = std::fs::read_to_string(repo_root().join("README.md")).unwrap();
    let command = "   $ edge-proxy ingress-check proxy/tests/fixtures/ingress-nginx/rewrite.yaml\n";
    let at = readme.find(command).expect("README shows the command") + command.len();
    let shown: String = readme[at..]
        .lines()
        .take_while(|l| !l.trim_start().starts_with("```"))
        .map(|l| format!("{}\n", l.strip_prefix("   ").unwrap_or(l)))
        .collect();
    let (_, out, _) = check(&[&fixture("rewrite.yaml")], None);
    assert_eq!(out, shown);
}

/// An Ingress of class nginx for `host` `/` with these annotations.
fn basic_ingress_yaml(name: &str, host: &str, annotations: &[(&str, &str)]) -> String {
    let notes: String = annotations
        .iter()
        .map(|(k, v)| format!("    nginx.ingress.kubernetes.io/{k}: \"{v}\"\n"))
        .collect();
    format!("apiVersion: networking.k8s.io/v1\nkind: Ingress\nmetadata:\n  name: {name}\n  namespace: default\n  annotations:\n{notes}spec:\n  ingressClassName: nginx\n  rules:\n  - host: {host}\n    http:\n      paths:\n      - path: /\n        pathType: Prefix\n        backend:\n          service:\n            name: web\n            port:\n              number: 80\n")
}
