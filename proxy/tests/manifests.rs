//! The k8s/ folder: every manifest validates against the Kubernetes 1.33
//! schemas in strict mode (kubernetes-validate, offline), and the properties the
//! design relies on hold. No API server runs here; `kubectl apply` itself is
//! not exercised.

mod utils;

use serde_yaml::Value;
use std::path::PathBuf;
use std::process::Command;
use utils::*;

fn manifest_files() -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(repo_root().join("k8s"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        .collect();
    files.sort();
    assert!(!files.is_empty());
    files
}

fn documents() -> Vec<Value> {
    use serde::Deserialize;
    let mut docs = Vec::new();
    for file in manifest_files() {
        let text = std::fs::read_to_string(&file).unwrap();
        for doc in serde_yaml::Deserializer::from_str(&text) {
            let v = Value::deserialize(doc).unwrap();
            if !v.is_null() {
                docs.push(v);
            }
        }
    }
    docs
}

fn find<'a>(docs: &'a [Value], kind: &str, name: &str) -> &'a Value {
    docs.iter()
        .find(|d| d["kind"] == kind && d["metadata"]["name"] == name)
        .unwrap_or_else(|| panic!("no {kind}/{name} in k8s/"))
}

fn validate(files: &[PathBuf]) -> std::process::Output {
    Command::new("kubernetes-validate")
        .args(["--kubernetes-version", "1.33.0", "--strict", "--quiet"])
        .args(files)
        .output()
        .expect("kubernetes-validate (pip install kubernetes-validate)")
}

#[test]
fn every_manifest_validates_strictly_against_kubernetes_1_33() {
    let out = validate(&manifest_files());
    assert!(
        out.status.success(),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    // The validator does reject an unknown field (strict mode works here).
    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("bad.yaml");
    let text = std::fs::read_to_string(repo_root().join("k8s/edge-proxy.yaml")).unwrap();
    std::fs::write(
        &bad,
        text.replace(
            "hostNetwork: true",
            "hostNetwork: true\n      hostNetwrk: true",
        ),
    )
    .unwrap();
    assert!(!validate(&[bad]).status.success());
}

#[test]
fn hello_app_deployment_rolls_without_losing_capacity() {
    let docs = documents();
    let d = find(&docs, "Deployment", "hello-app");
    assert_eq!(d["spec"]["replicas"], 3);
    let ru = &d["spec"]["strategy"]["rollingUpdate"];
    assert_eq!(
        (ru["maxSurge"].as_i64(), ru["maxUnavailable"].as_i64()),
        (Some(1), Some(0))
    );
    let c = &d["spec"]["template"]["spec"]["containers"][0];
    assert!(c["readinessProbe"]["httpGet"]["path"].is_string());
    assert!(c["livenessProbe"]["httpGet"]["path"].is_string());
    assert!(
        c["resources"]["requests"]["cpu"].is_string()
            && c["resources"]["limits"]["memory"].is_string()
    );
    assert!(
        c["lifecycle"]["preStop"].is_mapping(),
        "a preStop pause keeps new requests away"
    );
    let pod_name = c["env"]
        .as_sequence()
        .unwrap()
        .iter()
        .find(|e| e["name"] == "POD_NAME")
        .unwrap();
    assert_eq!(
        pod_name["valueFrom"]["fieldRef"]["fieldPath"],
        "metadata.name"
    );
    let svc = find(&docs, "Service", "hello-app");
    assert_eq!(
        svc["spec"]["selector"],
        d["spec"]["selector"]["matchLabels"]
    );
}

#[test]
fn edge_proxy_daemonset_runs_on_the_host_network_and_surges_per_node() {
    let docs = documents();
    let ds = find(&docs, "DaemonSet", "edge-proxy");
    let pod = &ds["spec"]["template"]["spec"];
    assert_eq!(pod["hostNetwork"], true);
    assert_eq!(pod["dnsPolicy"], "ClusterFirstWithHostNet");
    let ru = &ds["spec"]["updateStrategy"]["rollingUpdate"];
    assert_eq!(
        (ru["maxSurge"].as_i64(), ru["maxUnavailable"].as_i64()),
        (Some(1), Some(0))
    );
    let c = &pod["containers"][0];
    // Declared ports would be hostPorts and block the surge pod (see the comment there).
    assert!(
        c.get("ports").is_none(),
        "container ports block the surge pod with hostNetwork"
    );
    assert_eq!(c["readinessProbe"]["httpGet"]["path"], "/readyz");
    assert_eq!(c["readinessProbe"]["httpGet"]["port"], 9901);
    let ann = &ds["spec"]["template"]["metadata"]["annotations"];
    assert_eq!(ann["prometheus.io/scrape"], "true");
    assert_eq!(ann["prometheus.io/port"], "9901");

    // The ConfigMap's proxy.yaml passes `edge-proxy check`, and the pod's
    // grace period exceeds the proxy's own drain.
    let cm = find(&docs, "ConfigMap", "edge-proxy");
    let proxy_yaml = cm["data"]["proxy.yaml"].as_str().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("proxy.yaml");
    std::fs::write(&file, proxy_yaml).unwrap();
    let out = edge_proxy(&["check", file.to_str().unwrap()]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let config: Value = serde_yaml::from_str(proxy_yaml).unwrap();
    assert_eq!(config["discovery"], "kubernetes");
    assert!(config["routes"][0]["affinity"]["cookie"].is_string());
    let drain = humantime::parse_duration(config["drain_timeout"].as_str().unwrap()).unwrap();
    let grace = pod["terminationGracePeriodSeconds"].as_u64().unwrap();
    assert!(
        grace > drain.as_secs() + 5,
        "grace {grace}s vs drain {drain:?}"
    );
    let mount = &c["volumeMounts"][0];
    assert_eq!(mount["mountPath"], "/etc/edge-proxy");
    assert_eq!(c["args"][1], "/etc/edge-proxy/proxy.yaml");
}

/// A role's rules as (apiGroups, resources, resourceNames, verbs) strings.
fn grants(role: &Value) -> Vec<String> {
    let list = |v: &Value| {
        v.as_sequence()
            .map(|s| {
                s.iter()
                    .map(|x| x.as_str().unwrap().to_string())
                    .collect::<Vec<_>>()
                    .join(",")
            })
            .unwrap_or_default()
    };
    role["rules"]
        .as_sequence()
        .unwrap()
        .iter()
        .map(|r| {
            format!(
                "{} {} [{}] {}",
                list(&r["apiGroups"]),
                list(&r["resources"]),
                list(&r["resourceNames"]),
                list(&r["verbs"])
            )
        })
        .collect()
}

#[test]
fn rbac_grants_exactly_what_discovery_ingresses_and_their_status_need() {
    let docs = documents();
    let cluster = find(&docs, "ClusterRole", "edge-proxy");
    assert_eq!(
        grants(cluster),
        [
            "discovery.k8s.io endpointslices [] get,list,watch",
            "networking.k8s.io ingresses,ingressclasses [] get,list,watch",
            "networking.k8s.io ingresses/status [] update,patch",
            " secrets,configmaps,services [] get,list,watch",
            " nodes [] get",
            "gateway.networking.k8s.io gatewayclasses,gateways,httproutes,grpcroutes,referencegrants [] get,list,watch",
            "gateway.networking.k8s.io gatewayclasses/status,gateways/status,httproutes/status,grpcroutes/status [] update,patch",
            " namespaces [] list,watch",
        ]
    );
    let own = find(&docs, "Role", "edge-proxy");
    assert_eq!(own["metadata"]["namespace"], "edge-proxy");
    assert_eq!(
        grants(own),
        [
            " pods [] list",
            "coordination.k8s.io leases [] create",
            "coordination.k8s.io leases [edge-proxy-status] get,update",
        ]
    );
    let ds = find(&docs, "DaemonSet", "edge-proxy");
    let account = &ds["spec"]["template"]["spec"]["serviceAccountName"];
    for (kind, name) in [
        ("ClusterRoleBinding", "edge-proxy"),
        ("RoleBinding", "edge-proxy"),
    ] {
        let binding = find(&docs, kind, name);
        assert_eq!(&binding["subjects"][0]["name"], account);
        assert_eq!(binding["roleRef"]["name"], "edge-proxy");
    }
    // The Lease's holder and the status's pods: who the pod is.
    let env = &ds["spec"]["template"]["spec"]["containers"][0]["env"];
    for (var, field) in [
        ("POD_NAME", "metadata.name"),
        ("POD_NAMESPACE", "metadata.namespace"),
    ] {
        let e = env
            .as_sequence()
            .unwrap()
            .iter()
            .find(|e| e["name"] == var)
            .unwrap_or_else(|| panic!("no {var}"));
        assert_eq!(e["valueFrom"]["fieldRef"]["fieldPath"], field);
    }
}

#[test]
fn the_ingress_class_and_the_example_ingress() {
    let docs = documents();
    let class = find(&docs, "IngressClass", "edge-proxy");
    assert_eq!(
        class["spec"]["controller"],
        "edge-proxy.io/ingress-controller"
    );
    let example = find(&docs, "Ingress", "hello-app");
    assert_eq!(example["spec"]["ingressClassName"], "edge-proxy");
}

/// Validate Gateway API objects against the v1.6.1 CRD schemas
/// (tests/tools/validate_gateway.py; strict: unknown fields are errors).
fn validate_gateway(files: &[PathBuf]) -> std::process::Output {
    Command::new("python3")
        .arg(repo_root().join("proxy/tests/tools/validate_gateway.py"))
        .args(files)
        .output()
        .expect("python3 with jsonschema and yaml")
}

#[test]
fn the_gateway_folder_and_readmes_routes_validate_against_the_gateway_api_schemas() {
    let gateway = repo_root().join("k8s/gateway/gateway.yaml");
    let out = validate_gateway(std::slice::from_ref(&gateway));
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    // The shipped class and Gateway are what the proxy's ConfigMap serves.
    let text = std::fs::read_to_string(&gateway).unwrap();
    let docs: Vec<Value> = serde_yaml::Deserializer::from_str(&text)
        .map(|d| serde::Deserialize::deserialize(d).unwrap())
        .collect();
    assert_eq!(docs[0]["kind"], "GatewayClass");
    assert_eq!(
        docs[0]["spec"]["controllerName"],
        "edge-proxy.io/gateway-controller"
    );
    assert_eq!(
        docs[1]["spec"]["gatewayClassName"],
        docs[0]["metadata"]["name"]
    );
    let ports: Vec<(String, u64)> = docs[1]["spec"]["listeners"]
        .as_sequence()
        .unwrap()
        .iter()
        .map(|l| {
            (
                l["protocol"].as_str().unwrap().to_string(),
                l["port"].as_u64().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        ports,
        [("HTTP".to_string(), 80), ("HTTPS".to_string(), 443)]
    );
    let config = documents()
        .into_iter()
        .find(|d| d["kind"] == "ConfigMap" && d["metadata"]["name"] == "edge-proxy")
        .unwrap();
    assert!(config["data"]["proxy.yaml"]
        .as_str()
        .unwrap()
        .contains("gateway:\n  class: edge-proxy"));
    // README's Gateway API examples.
    let blocks = readme_yaml_blocks("apiVersion: gateway.networking.k8s.io/v1");
    assert!(
        blocks.len() >= 2,
        "README shows an HTTPRoute and a GRPCRoute"
    );
    let dir = tempfile::tempdir().unwrap();
    let examples = dir.path().join("readme.yaml");
    std::fs::write(&examples, blocks.join("\n---\n")).unwrap();
    let out = validate_gateway(std::slice::from_ref(&examples));
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    // Strictness holds: a misspelt field is an error.
    let bad = dir.path().join("bad.yaml");
    std::fs::write(&bad, text.replace("protocol: HTTPS", "protocl: HTTPS")).unwrap();
    assert!(!validate_gateway(&[bad]).status.success());
}

#[test]
fn every_container_is_locked_down() {
    let docs = documents();
    let mut containers = 0;
    for d in docs
        .iter()
        .filter(|d| d["kind"] == "Deployment" || d["kind"] == "DaemonSet")
    {
        let pod = &d["spec"]["template"]["spec"];
        assert_eq!(
            pod["securityContext"]["runAsNonRoot"],
            true,
            "{}",
            d["metadata"]["name"].as_str().unwrap()
        );
        assert_eq!(
            pod["securityContext"]["seccompProfile"]["type"],
            "RuntimeDefault"
        );
        for c in pod["containers"].as_sequence().unwrap() {
            containers += 1;
            let sc = &c["securityContext"];
            assert_eq!(sc["allowPrivilegeEscalation"], false);
            assert_eq!(sc["readOnlyRootFilesystem"], true);
            assert_eq!(
                sc["capabilities"]["drop"],
                serde_yaml::from_str::<Value>("[ALL]").unwrap()
            );
            let added = &sc["capabilities"]["add"];
            if d["kind"] == "DaemonSet" {
                assert_eq!(
                    *added,
                    serde_yaml::from_str::<Value>("[NET_BIND_SERVICE]").unwrap()
                );
            } else {
                assert!(added.is_null(), "only the proxy adds a capability");
            }
            // Images are the ones the Dockerfiles build.
            let image = c["image"].as_str().unwrap();
            let dockerfile = if image.contains("/edge-proxy:") {
                "Dockerfile.proxy"
            } else {
                "Dockerfile.app"
            };
            assert!(
                repo_root().join(dockerfile).exists(),
                "{image}: no {dockerfile}"
            );
        }
    }
    assert_eq!(containers, 2);
}

#[test]
fn docker_compose_file_follows_the_compose_spec() {
    let out = Command::new("check-jsonschema")
        .args(["--builtin-schema", "vendor.compose-spec"])
        .arg(repo_root().join("docker-compose.yaml"))
        .output()
        .expect("check-jsonschema (pip install check-jsonschema)");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    let compose: Value = serde_yaml::from_str(
        &std::fs::read_to_string(repo_root().join("docker-compose.yaml")).unwrap(),
    )
    .unwrap();
    let proxy = &compose["services"]["edge-proxy"];
    assert_eq!(proxy["build"]["dockerfile"], "Dockerfile.proxy");
    assert_eq!(
        compose["services"]["hello-app"]["build"]["dockerfile"],
        "Dockerfile.app"
    );
    // The mounted config is a checked example using DNS discovery by service name.
    let mount = proxy["volumes"][0].as_str().unwrap();
    let local = mount.split(':').next().unwrap().trim_start_matches("./");
    let config: Value =
        serde_yaml::from_str(&std::fs::read_to_string(repo_root().join(local)).unwrap()).unwrap();
    assert_eq!(config["discovery"], "dns");
    assert_eq!(config["dns_name"], "{service}");
}

#[test]
fn the_prometheus_rule_carries_exactly_the_alert_rules_file() {
    let read = |file: &str| -> Value {
        let text = std::fs::read_to_string(repo_root().join(file)).unwrap();
        serde_yaml::from_str(&text).unwrap()
    };
    let rules = read("k8s/monitoring/alerts.yaml");
    let operator = read("k8s/monitoring/prometheusrule.yaml");
    assert_eq!(operator["apiVersion"], "monitoring.coreos.com/v1");
    assert_eq!(operator["kind"], "PrometheusRule");
    assert_eq!(operator["metadata"]["namespace"], "edge-proxy");
    assert!(rules["groups"].as_sequence().is_some_and(|g| !g.is_empty()));
    assert_eq!(
        operator["spec"]["groups"], rules["groups"],
        "prometheusrule.yaml's spec.groups differ from alerts.yaml: change both together"
    );
}

#[test]
fn the_proxy_knows_its_memory_limit_for_the_memory_alert() {
    let docs = documents();
    let ds = find(&docs, "DaemonSet", "edge-proxy");
    let container = &ds["spec"]["template"]["spec"]["containers"][0];
    let env = container["env"].as_sequence().unwrap();
    let limit = env
        .iter()
        .find(|e| e["name"] == "EDGE_PROXY_MEMORY_LIMIT")
        .expect("EDGE_PROXY_MEMORY_LIMIT in the DaemonSet");
    let field = &limit["valueFrom"]["resourceFieldRef"];
    assert_eq!(field["resource"], "limits.memory");
    assert_eq!(field["containerName"], container["name"]);
    assert!(container["resources"]["limits"]["memory"].is_string());
}
