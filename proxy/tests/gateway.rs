//! Gateway API, served by a real edge-proxy against the stand-in API server
//! (utils/kube_api.rs: the Gateway API kinds as CRDs, their status
//! subresources, `metadata.generation`), with echo backends that answer with
//! the request they received.
//!
//! `conformance_cases_of_the_gateway_api_suite` ports cases of the official
//! suite (kubernetes-sigs/gateway-api v1.6.1, `conformance/tests/`): each
//! case applies the suite's own manifests (fixtures/gateway-conformance/,
//! copied unchanged) over its base Gateways and Services, checks what the
//! Go test checks, with the same requests and expectations, then deletes
//! them, as the suite does. Each case names the Go test it ports.

mod utils;

use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;
use utils::kube_api::FakeApiServer;
use utils::*;

const INFRA: &str = "gateway-conformance-infra";
const CONTROLLER: &str = "edge-proxy.io/gateway-controller";

/// The suite's backends: (namespace, Service).
const BACKENDS: &[(&str, &str)] = &[
    (INFRA, "infra-backend-v1"),
    (INFRA, "infra-backend-v2"),
    (INFRA, "infra-backend-v3"),
    ("gateway-conformance-app-backend", "app-backend-v1"),
    ("gateway-conformance-app-backend", "app-backend-v2"),
    ("gateway-conformance-web-backend", "web-backend"),
];

/// A cluster with the suite's base manifests and one edge-proxy serving the
/// GatewayClass `edge-proxy`.
struct Suite {
    api: FakeApiServer,
    proxy: Proxy,
    https: u16,
    _dir: tempfile::TempDir,
    backends: Vec<EchoOrigin>,
}

/// The plural the stand-in API server serves a kind under.
fn plural(kind: &str) -> Option<&'static str> {
    Some(match kind {
        "Namespace" => "namespaces",
        "Service" => "services",
        "Secret" => "secrets",
        "Gateway" => "gateways",
        "GatewayClass" => "gatewayclasses",
        "HTTPRoute" => "httproutes",
        "GRPCRoute" => "grpcroutes",
        "ReferenceGrant" => "referencegrants",
        _ => return None, // Deployments and the like: the echo backends stand in
    })
}

impl Suite {
    fn start() -> Suite {
        let api = FakeApiServer::start();
        api.install_gateway_api();
        let dir = tempfile::tempdir().unwrap();
        let kubeconfig = api.kubeconfig(dir.path());
        let http = SocketAddr::from(([127, 0, 0, 1], free_port()));
        let https = free_port();
        api.put(
            "gatewayclasses",
            json!({"metadata": {"name": "edge-proxy"}, "spec": {"controllerName": CONTROLLER}}),
        );
        let mut backends = Vec::new();
        for (namespace, service) in BACKENDS {
            let echo = EchoOrigin::start(service);
            api.apply(
                namespace,
                &format!("{service}-abcde"),
                service,
                echo.addr.port(),
                &[("127.0.0.1", true, true, false)],
            );
            backends.push(echo);
        }
        let suite = Suite {
            api,
            proxy: Proxy::start_with_env(
                &format!(
                    "listen:\n  http: \"{{http}}\"\n  https: \"127.0.0.1:{https}\"\nadmin: \"{{admin}}\"\ndiscovery: kubernetes\ngateway:\n  publish_addresses: [\"203.0.113.9\"]\n"
                ),
                http,
                &[("KUBECONFIG", &kubeconfig)],
            ),
            https,
            _dir: dir,
            backends,
        };
        let base = suite.manifests("manifests.yaml");
        suite.apply(&base);
        // The suite's namespaces carry this label (Kubernetes adds it).
        for ns in [
            INFRA,
            "gateway-conformance-app-backend",
            "gateway-conformance-web-backend",
        ] {
            let mut object = suite.api.get("namespaces", "", ns).unwrap();
            object["metadata"]["labels"]["kubernetes.io/metadata.name"] = json!(ns);
            suite.api.put("namespaces", object);
        }
        eventually("the proxy ready (/readyz)", Duration::from_secs(15), || {
            curl(&[&format!("http://{}/readyz", suite.proxy.admin)]).status == 200
        });
        suite.gateway_accepted("same-namespace");
        suite
    }

    /// A fixture's documents, with the class name and our ports put in
    /// (the suite's Gateways listen on 80 and 443: here the proxy's ports).
    fn manifests(&self, file: &str) -> Vec<Value> {
        let path = repo_root()
            .join("proxy/tests/fixtures/gateway-conformance")
            .join(file);
        let text = std::fs::read_to_string(&path)
            .unwrap()
            .replace("{GATEWAY_CLASS_NAME}", "edge-proxy");
        repo_documents(&text)
            .into_iter()
            .map(|doc| self.with_our_ports(doc))
            .collect()
    }

    fn with_our_ports(&self, mut doc: Value) -> Value {
        if doc["kind"] == "Gateway" {
            for l in doc["spec"]["listeners"].as_array_mut().unwrap() {
                let port = match l["port"].as_u64() {
                    Some(80) => self.proxy.http.port(),
                    Some(443) => self.https,
                    _ => continue,
                };
                l["port"] = json!(port);
            }
        }
        for parent in doc["spec"]["parentRefs"]
            .as_array_mut()
            .into_iter()
            .flatten()
        {
            match parent["port"].as_u64() {
                Some(80) => parent["port"] = json!(self.proxy.http.port()),
                Some(443) => parent["port"] = json!(self.https),
                _ => {}
            }
        }
        doc
    }

    fn apply(&self, docs: &[Value]) {
        for doc in docs {
            let Some(resource) = doc["kind"].as_str().and_then(plural) else {
                continue;
            };
            self.api.put(resource, doc.clone());
        }
    }

    fn delete(&self, docs: &[Value]) {
        for doc in docs {
            let Some(resource) = doc["kind"].as_str().and_then(plural) else {
                continue;
            };
            let m = &doc["metadata"];
            let ns = if resource == "namespaces" || resource == "gatewayclasses" {
                ""
            } else {
                m["namespace"].as_str().unwrap_or("default")
            };
            self.api.remove(resource, ns, m["name"].as_str().unwrap());
        }
    }

    /// Run one ported case: its manifests applied, `checks`, then deleted.
    fn case(&self, go_test: &str, file: &str, checks: impl FnOnce(&Suite)) {
        eprintln!("conformance: {go_test} ({file})");
        let docs = self.manifests(file);
        self.apply(&docs);
        checks(self);
        self.delete(&docs);
        // Deleted routes leave the router before the next case.
        std::thread::sleep(Duration::from_millis(300));
    }

    fn status(&self, resource: &str, ns: &str, name: &str) -> Value {
        self.api
            .get(resource, ns, name)
            .map(|o| o["status"].clone())
            .unwrap_or(Value::Null)
    }

    /// Wait until `name`'s condition `kind` on the Gateway `gateway` (a
    /// route's parent entry of ours) has this status and reason.
    fn route_condition(
        &self,
        route: (&str, &str),
        gateway: &str,
        kind: &str,
        ok: bool,
        reason: &str,
    ) {
        let (ns, name) = route;
        let what = format!("HTTPRoute {ns}/{name}: {kind}={ok} ({reason}) for Gateway {gateway}");
        eventually(&what, Duration::from_secs(15), || {
            let status = self.status("httproutes", ns, name);
            let generation =
                self.api.get("httproutes", ns, name).unwrap()["metadata"]["generation"].clone();
            status["parents"].as_array().into_iter().flatten().any(|p| {
                p["controllerName"] == CONTROLLER
                    && p["parentRef"]["name"] == gateway
                    && has_condition(&p["conditions"], kind, ok, reason, &generation)
            })
        });
    }

    fn route_accepted(&self, route: (&str, &str), gateway: &str) {
        self.route_condition(route, gateway, "Accepted", true, "Accepted");
        self.route_condition(route, gateway, "ResolvedRefs", true, "ResolvedRefs");
    }

    fn gateway_accepted(&self, name: &str) {
        eventually(
            &format!("Gateway {name} accepted and programmed"),
            Duration::from_secs(15),
            || {
                let gw = self.api.get("gateways", INFRA, name).unwrap();
                let c = &gw["status"]["conditions"];
                has_condition(c, "Accepted", true, "", &gw["metadata"]["generation"])
                    && has_condition(c, "Programmed", true, "", &gw["metadata"]["generation"])
            },
        );
    }

    /// A listener's status entry of a Gateway in the infra namespace.
    fn listener(&self, gateway: &str, listener: &str) -> Value {
        let status = self.status("gateways", INFRA, gateway);
        status["listeners"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|l| l["name"] == listener)
            .cloned()
            .unwrap_or(Value::Null)
    }

    /// A request to the proxy: `host` (no port), `path` (with query),
    /// `headers` as `Name: value`.
    fn request(&self, method: &str, host: &str, path: &str, headers: &[&str]) -> Response {
        let mut args: Vec<String> = vec![
            "-X".into(),
            method.into(),
            "-H".into(),
            format!("Host: {host}"),
        ];
        if method == "HEAD" {
            args = vec!["-I".into(), "-H".into(), format!("Host: {host}")];
        }
        for h in headers {
            args.push("-H".into());
            args.push(h.to_string());
        }
        args.push(self.proxy.url(path));
        curl(&args.iter().map(String::as_str).collect::<Vec<_>>())
    }

    /// Wait until the request is answered by `backend` (the suite's
    /// MakeRequestAndExpectEventuallyConsistentResponse); the response.
    fn expect_backend(
        &self,
        method: &str,
        host: &str,
        path: &str,
        headers: &[&str],
        backend: &str,
    ) -> Response {
        let what = format!("{method} {host}{path} {headers:?} served by {backend}");
        let last = std::cell::RefCell::new(None);
        eventually(&what, Duration::from_secs(15), || {
            let r = self.request(method, host, path, headers);
            let ok = r.status == 200 && r.header("x-origin") == Some(backend);
            *last.borrow_mut() = Some(r);
            ok
        });
        last.into_inner().unwrap()
    }

    fn expect_status(
        &self,
        method: &str,
        host: &str,
        path: &str,
        headers: &[&str],
        status: u16,
    ) -> Response {
        let what = format!("{method} {host}{path} {headers:?} answered {status}");
        let last = std::cell::RefCell::new(None);
        eventually(&what, Duration::from_secs(15), || {
            let r = self.request(method, host, path, headers);
            let ok = r.status == status && r.header("x-origin").is_none();
            *last.borrow_mut() = Some(r);
            ok
        });
        last.into_inner().unwrap()
    }

    /// How many requests for `path` (exactly) the echo backend `name` received.
    fn received_by(&self, name: &str, path: &str) -> usize {
        let backend = self.backends.iter().find(|b| b.name == name).unwrap();
        let line = format!(" {path} HTTP/1.1");
        backend
            .received()
            .iter()
            .filter(|head| head.lines().next().is_some_and(|l| l.ends_with(&line)))
            .count()
    }

    /// The last request head for `path` the echo backend `name` received.
    fn last_received_by(&self, name: &str, path: &str) -> String {
        let backend = self.backends.iter().find(|b| b.name == name).unwrap();
        let line = format!(" {path} HTTP/1.1");
        backend
            .received()
            .into_iter()
            .rev()
            .find(|head| head.lines().next().is_some_and(|l| l.ends_with(&line)))
            .unwrap_or_default()
            .to_ascii_lowercase()
    }

    fn get(&self, path: &str, backend: &str) -> Response {
        self.expect_backend("GET", "example.com", path, &[], backend)
    }

    /// A redirect answer: its status and Location.
    fn expect_redirect(&self, host: &str, path: &str, status: u16, location: &str) {
        let what = format!("{host}{path} redirected {status} to {location}");
        eventually(&what, Duration::from_secs(15), || {
            let r = self.request("GET", host, path, &[]);
            r.status == status && r.header("location") == Some(location)
        });
    }
}

fn has_condition(
    conditions: &Value,
    kind: &str,
    ok: bool,
    reason: &str,
    generation: &Value,
) -> bool {
    conditions.as_array().into_iter().flatten().any(|c| {
        c["type"] == kind
            && c["status"] == if ok { "True" } else { "False" }
            && (reason.is_empty() || c["reason"] == reason)
            && (generation.is_null() || c["observedGeneration"] == *generation)
            && c["lastTransitionTime"].is_string()
    })
}

/// The request head an echo backend received, from its answer.
fn received(r: &Response) -> String {
    r.body.to_ascii_lowercase()
}

/// Whether the received head has the header line `name: value`.
fn has_line(r: &Response, name: &str, value: &str) -> bool {
    received(r).lines().any(|l| {
        l.trim_end()
            == format!(
                "{}: {}",
                name.to_ascii_lowercase(),
                value.to_ascii_lowercase()
            )
    })
}

fn absent(r: &Response, name: &str) -> bool {
    let prefix = format!("{}:", name.to_ascii_lowercase());
    !received(r).lines().any(|l| l.starts_with(&prefix))
}

fn request_line(r: &Response) -> String {
    r.body.lines().next().unwrap_or("").to_string()
}

#[test]
fn conformance_cases_of_the_gateway_api_suite() {
    let s = Suite::start();
    let infra = |name: &'static str| (INFRA, name);

    s.case(
        "HTTPRouteSimpleSameNamespace",
        "httproute-simple-same-namespace.yaml",
        |s| {
            s.route_accepted(infra("gateway-conformance-infra-test"), "same-namespace");
            s.get("/", "infra-backend-v1");
        },
    );

    s.case("HTTPRouteMatching", "httproute-matching.yaml", |s| {
        s.route_accepted(infra("matching"), "same-namespace");
        for (path, headers, backend) in [
            ("/", vec![], "infra-backend-v1"),
            ("/example", vec![], "infra-backend-v1"),
            ("/", vec!["Version: one"], "infra-backend-v1"),
            ("/v2", vec![], "infra-backend-v2"),
            ("/v2/example", vec![], "infra-backend-v2"),
            ("/", vec!["Version: two"], "infra-backend-v2"),
            ("/v2/", vec![], "infra-backend-v2"),
            ("/v2example", vec![], "infra-backend-v1"),
            ("/foo/v2/example", vec![], "infra-backend-v1"),
        ] {
            s.expect_backend("GET", "example.com", path, &headers, backend);
        }
    });

    s.case(
        "HTTPRouteMatchingAcrossRoutes",
        "httproute-matching-across-routes.yaml",
        |s| {
            s.route_accepted(infra("matching-part1"), "same-namespace");
            s.route_accepted(infra("matching-part2"), "same-namespace");
            for (host, path, headers, backend) in [
                ("example.com", "/", vec![], "infra-backend-v1"),
                ("example.com", "/example", vec![], "infra-backend-v1"),
                ("example.net", "/example", vec![], "infra-backend-v1"),
                (
                    "example.com",
                    "/example",
                    vec!["Version: one"],
                    "infra-backend-v1",
                ),
                ("example.com", "/v2", vec![], "infra-backend-v2"),
                ("example.net", "/v2", vec![], "infra-backend-v1"),
                ("example.com", "/v2/example", vec![], "infra-backend-v2"),
                ("example.com", "/", vec!["Version: two"], "infra-backend-v2"),
            ] {
                s.expect_backend("GET", host, path, &headers, backend);
            }
        },
    );

    s.case(
        "HTTPRouteHeaderMatching",
        "httproute-header-matching.yaml",
        |s| {
            s.route_accepted(infra("header-matching"), "same-namespace");
            for (headers, backend) in [
                (vec!["Version: one"], Some("infra-backend-v1")),
                (vec!["Version: two"], Some("infra-backend-v2")),
                (
                    vec!["Version: two", "Color: orange"],
                    Some("infra-backend-v1"),
                ),
                (
                    vec!["Version: two", "Color: blue"],
                    Some("infra-backend-v2"),
                ),
                (vec!["Color: orange"], None),
                (vec!["Some-Other-Header: one"], None),
                (vec!["Color: blue"], Some("infra-backend-v1")),
                (vec!["Color: green"], Some("infra-backend-v1")),
                (vec!["Color: red"], Some("infra-backend-v2")),
                (vec!["Color: yellow"], Some("infra-backend-v2")),
                (vec!["Color: purple"], None),
            ] {
                match backend {
                    Some(b) => drop(s.expect_backend("GET", "example.com", "/", &headers, b)),
                    None => drop(s.expect_status("GET", "example.com", "/", &headers, 404)),
                }
            }
        },
    );

    s.case(
        "HTTPRouteQueryParamMatching",
        "httproute-query-param-matching.yaml",
        |s| {
            s.route_accepted(infra("query-param-matching"), "same-namespace");
            for (path, headers, backend) in [
                ("/?animal=whale", vec![], Some("infra-backend-v1")),
                ("/?animal=dolphin", vec![], Some("infra-backend-v2")),
                (
                    "/?animal=dolphin&color=blue",
                    vec![],
                    Some("infra-backend-v3"),
                ),
                ("/?ANIMAL=Whale", vec![], Some("infra-backend-v3")),
                (
                    "/?animal=whale&otherparam=irrelevant",
                    vec![],
                    Some("infra-backend-v1"),
                ),
                (
                    "/?animal=dolphin&color=yellow",
                    vec![],
                    Some("infra-backend-v2"),
                ),
                ("/?color=blue", vec![], None),
                ("/?animal=dog", vec![], None),
                ("/?animal=whaledolphin", vec![], None),
                ("/", vec![], None),
                ("/path1?animal=whale", vec![], Some("infra-backend-v1")),
                (
                    "/?animal=whale",
                    vec!["version: one"],
                    Some("infra-backend-v2"),
                ),
                (
                    "/path2?animal=whale",
                    vec!["version: two"],
                    Some("infra-backend-v3"),
                ),
                ("/path3?animal=shark", vec![], Some("infra-backend-v1")),
                (
                    "/path4?animal=kraken",
                    vec!["version: three"],
                    Some("infra-backend-v1"),
                ),
                ("/?animal=shark", vec![], None),
                ("/path4?animal=kraken", vec![], None),
                ("/path5?animal=hydra", vec![], Some("infra-backend-v1")),
                (
                    "/?animal=hydra",
                    vec!["version: four"],
                    Some("infra-backend-v3"),
                ),
            ] {
                match backend {
                    Some(b) => drop(s.expect_backend("GET", "example.com", path, &headers, b)),
                    None => drop(s.expect_status("GET", "example.com", path, &headers, 404)),
                }
            }
        },
    );

    s.case(
        "HTTPRouteMethodMatching",
        "httproute-method-matching.yaml",
        |s| {
            s.route_accepted(infra("method-matching"), "same-namespace");
            for (method, path, headers, backend) in [
                ("POST", "/", vec![], Some("infra-backend-v1")),
                ("GET", "/", vec![], Some("infra-backend-v2")),
                ("HEAD", "/", vec![], None),
                ("GET", "/path1", vec![], Some("infra-backend-v1")),
                ("PUT", "/", vec!["version: one"], Some("infra-backend-v2")),
                (
                    "POST",
                    "/path2",
                    vec!["version: two"],
                    Some("infra-backend-v3"),
                ),
                ("PATCH", "/path3", vec![], Some("infra-backend-v1")),
                (
                    "DELETE",
                    "/path4",
                    vec!["version: three"],
                    Some("infra-backend-v1"),
                ),
                ("PUT", "/", vec![], None),
                ("DELETE", "/path4", vec![], None),
                ("PATCH", "/path5", vec![], Some("infra-backend-v1")),
                (
                    "PATCH",
                    "/",
                    vec!["version: four"],
                    Some("infra-backend-v2"),
                ),
            ] {
                match backend {
                    Some(b) => drop(s.expect_backend(method, "example.com", path, &headers, b)),
                    None => drop(s.expect_status(method, "example.com", path, &headers, 404)),
                }
            }
        },
    );

    s.case(
        "HTTPRouteExactPathMatching",
        "httproute-exact-path-matching.yaml",
        |s| {
            s.route_accepted(infra("exact-matching"), "same-namespace");
            s.get("/one", "infra-backend-v1");
            s.get("/two", "infra-backend-v2");
            for path in ["/", "/one/example", "/two/", "/Two"] {
                s.expect_status("GET", "example.com", path, &[], 404);
            }
        },
    );

    s.case(
        "HTTPRoutePathMatchOrder",
        "httproute-path-match-order.yaml",
        |s| {
            s.route_accepted(infra("path-matching-order"), "same-namespace");
            for (path, backend) in [
                ("/match/exact/one", "infra-backend-v3"),
                ("/match/exact", "infra-backend-v2"),
                ("/match", "infra-backend-v1"),
                ("/match/prefix/one/any", "infra-backend-v2"),
                ("/match/prefix/any", "infra-backend-v1"),
                ("/match/any", "infra-backend-v3"),
            ] {
                s.get(path, backend);
            }
        },
    );

    s.case(
        "HTTPRouteHostnameIntersection",
        "httproute-hostname-intersection.yaml",
        |s| {
            let gw = "httproute-hostname-intersection";
            s.gateway_accepted(gw);
            for (host, path, backend) in [
                ("very.specific.com", "/s1", Some("infra-backend-v1")),
                ("very.specific.com:1234", "/s1", Some("infra-backend-v1")),
                ("non.matching.com", "/s1", None),
                ("foo.nonmatchingwildcard.io", "/s1", None),
                ("foo.wildcard.io", "/s1", None),
                ("very.specific.com", "/non-matching-prefix", None),
                ("foo.wildcard.io", "/s2", Some("infra-backend-v2")),
                ("bar.wildcard.io", "/s2", Some("infra-backend-v2")),
                ("foo.bar.wildcard.io", "/s2", Some("infra-backend-v2")),
                ("non.matching.com", "/s2", None),
                ("wildcard.io", "/s2", None),
                ("very.specific.com", "/s2", None),
                ("foo.wildcard.io", "/non-matching-prefix", None),
                ("very.specific.com", "/s3", Some("infra-backend-v3")),
                ("non.matching.com", "/s3", None),
                ("foo.specific.com", "/s3", None),
                ("foo.wildcard.io", "/s3", None),
                ("foo.anotherwildcard.io", "/s4", Some("infra-backend-v1")),
                ("bar.anotherwildcard.io", "/s4", Some("infra-backend-v1")),
                (
                    "foo.bar.anotherwildcard.io",
                    "/s4",
                    Some("infra-backend-v1"),
                ),
                ("anotherwildcard.io", "/s4", None),
                ("foo.wildcard.io", "/s4", None),
                ("very.specific.com", "/s4", None),
                ("foo.anotherwildcard.io", "/non-matching-prefix", None),
                ("specific.but.wrong.com", "/s5", None),
                ("wildcard.io", "/s5", None),
            ] {
                match backend {
                    Some(b) => drop(s.expect_backend("GET", host, path, &[], b)),
                    None => drop(s.expect_status("GET", host, path, &[], 404)),
                }
            }
            s.route_condition(
                infra("no-intersecting-hosts"),
                gw,
                "Accepted",
                false,
                "NoMatchingListenerHostname",
            );
        },
    );

    s.case(
        "HTTPRouteListenerHostnameMatching",
        "httproute-listener-hostname-matching.yaml",
        |s| {
            s.route_accepted(infra("backend-v1"), "httproute-listener-hostname-matching");
            s.route_accepted(infra("backend-v3"), "httproute-listener-hostname-matching");
            for (host, backend) in [
                ("bar.com", Some("infra-backend-v1")),
                ("foo.bar.com", Some("infra-backend-v2")),
                ("baz.bar.com", Some("infra-backend-v3")),
                ("boo.bar.com", Some("infra-backend-v3")),
                ("multiple.prefixes.bar.com", Some("infra-backend-v3")),
                ("multiple.prefixes.foo.com", Some("infra-backend-v3")),
                ("foo.com", None),
                ("no.matching.host", None),
            ] {
                match backend {
                    Some(b) => drop(s.expect_backend("GET", host, "/", &[], b)),
                    None => drop(s.expect_status("GET", host, "/", &[], 404)),
                }
            }
        },
    );

    s.case(
        "HTTPRouteCrossNamespace",
        "httproute-cross-namespace.yaml",
        |s| {
            s.route_accepted(
                ("gateway-conformance-web-backend", "cross-namespace"),
                "backend-namespaces",
            );
            s.get("/", "web-backend");
        },
    );

    s.case(
        "HTTPRouteReferenceGrant",
        "httproute-reference-grant.yaml",
        |s| {
            s.route_accepted(infra("reference-grant"), "same-namespace");
            s.get("/", "web-backend");
        },
    );

    s.case(
        "HTTPRouteInvalidCrossNamespaceBackendRef",
        "httproute-invalid-cross-namespace-backend-ref.yaml",
        |s| {
            let route = infra("invalid-cross-namespace-backend-ref");
            s.route_condition(route, "same-namespace", "Accepted", true, "Accepted");
            s.route_condition(
                route,
                "same-namespace",
                "ResolvedRefs",
                false,
                "RefNotPermitted",
            );
            s.expect_status("GET", "example.com", "/", &[], 500);
        },
    );

    s.case(
        "HTTPRouteInvalidNonExistentBackendRef",
        "httproute-invalid-nonexistent-backendref.yaml",
        |s| {
            let route = infra("invalid-nonexistent-backend-ref");
            s.route_condition(
                route,
                "same-namespace",
                "ResolvedRefs",
                false,
                "BackendNotFound",
            );
            s.expect_status("GET", "example.com", "/", &[], 500);
        },
    );

    s.case(
        "HTTPRouteInvalidBackendRefUnknownKind",
        "httproute-invalid-backendref-unknown-kind.yaml",
        |s| {
            let route = infra("invalid-backend-ref-unknown-kind");
            s.route_condition(
                route,
                "same-namespace",
                "ResolvedRefs",
                false,
                "InvalidKind",
            );
            s.expect_status("GET", "example.com", "/v2", &[], 500);
        },
    );

    s.case(
        "HTTPRouteInvalidReferenceGrant",
        "httproute-invalid-reference-grant.yaml",
        |s| {
            let route = infra("reference-grant");
            s.route_condition(
                route,
                "same-namespace",
                "ResolvedRefs",
                false,
                "RefNotPermitted",
            );
            s.expect_status("GET", "example.com", "/", &[], 500);
        },
    );

    s.case(
        "HTTPRoutePartiallyInvalidViaInvalidReferenceGrant",
        "httproute-partially-invalid-via-invalid-reference-grant.yaml",
        |s| {
            let route = infra("invalid-reference-grant");
            s.route_condition(
                route,
                "same-namespace",
                "ResolvedRefs",
                false,
                "RefNotPermitted",
            );
            s.expect_status("GET", "example.com", "/v2", &[], 500);
            s.get("/", "app-backend-v1");
        },
    );

    s.case(
        "HTTPRouteInvalidCrossNamespaceParentRef",
        "httproute-invalid-cross-namespace-parent-ref.yaml",
        |s| {
            let route = (
                "gateway-conformance-web-backend",
                "invalid-cross-namespace-parent-ref",
            );
            s.route_condition(
                route,
                "same-namespace",
                "Accepted",
                false,
                "NotAllowedByListeners",
            );
            s.route_condition(
                route,
                "same-namespace",
                "ResolvedRefs",
                true,
                "ResolvedRefs",
            );
        },
    );

    s.case(
        "HTTPRouteInvalidParentRefNotMatchingListenerPort",
        "httproute-invalid-parentref-not-matching-listener-port.yaml",
        |s| {
            let route = infra("httproute-listener-not-matching-route-port");
            s.route_condition(
                route,
                "same-namespace",
                "Accepted",
                false,
                "NoMatchingParent",
            );
        },
    );

    s.case(
        "HTTPRouteInvalidParentRefNotMatchingSectionName",
        "httproute-invalid-parentref-not-matching-section-name.yaml",
        |s| {
            let route = infra("httproute-listener-not-matching-section-name");
            s.route_condition(
                route,
                "same-namespace",
                "Accepted",
                false,
                "NoMatchingParent",
            );
        },
    );

    s.case(
        "HTTPRouteDisallowedKind",
        "httproute-disallowed-kind.yaml",
        |s| {
            s.route_condition(
                infra("disallowed-kind"),
                "tlsroutes-only",
                "Accepted",
                false,
                "NotAllowedByListeners",
            );
            let listener = s.listener("tlsroutes-only", "tls");
            assert_eq!(listener["attachedRoutes"], 0, "{listener}");
        },
    );

    s.case(
        "GatewayInvalidRouteKind",
        "gateway-invalid-route-kind.yaml",
        |s| {
            for gw in [
                "gateway-only-invalid-route-kind",
                "gateway-supported-and-invalid-route-kind",
            ] {
                eventually(
                    &format!("{gw}: InvalidRouteKinds"),
                    Duration::from_secs(15),
                    || {
                        let l = s.listener(gw, "http");
                        has_condition(
                            &l["conditions"],
                            "ResolvedRefs",
                            false,
                            "InvalidRouteKinds",
                            &Value::Null,
                        ) && l["attachedRoutes"] == 0
                    },
                );
            }
            let mixed = s.listener("gateway-supported-and-invalid-route-kind", "http");
            assert_eq!(
                mixed["supportedKinds"],
                json!([{"group": "gateway.networking.k8s.io", "kind": "HTTPRoute"}])
            );
            assert_eq!(
                s.listener("gateway-only-invalid-route-kind", "http")["supportedKinds"],
                json!([])
            );
        },
    );

    s.case(
        "GatewayWithAttachedRoutes",
        "gateway-with-attached-routes.yaml",
        |s| {
            eventually("attachedRoutes 1 and 2", Duration::from_secs(15), || {
                s.listener("gateway-with-one-attached-route", "http")["attachedRoutes"] == 1
                    && s.listener("gateway-with-two-attached-routes", "http")["attachedRoutes"] == 2
            });
            s.route_condition(
                infra("http-route-not-accepted"),
                "gateway-with-two-attached-routes",
                "Accepted",
                false,
                "NoMatchingListenerHostname",
            );
        },
    );

    s.case(
        "HTTPRouteRequestHeaderModifier",
        "httproute-request-header-modifier.yaml",
        |s| {
            s.route_accepted(infra("request-header-modifier"), "same-namespace");
            let r = s.expect_backend(
                "GET",
                "example.com",
                "/set",
                &["Some-Other-Header: val", "X-Header-Set: some-other-value"],
                "infra-backend-v1",
            );
            assert!(
                has_line(&r, "X-Header-Set", "set-overwrites-values")
                    && has_line(&r, "Some-Other-Header", "val"),
                "{}",
                r.body
            );
            assert!(
                !has_line(&r, "X-Header-Set", "some-other-value"),
                "{}",
                r.body
            );
            let r = s.expect_backend(
                "GET",
                "example.com",
                "/add",
                &["X-Header-Add: some-other-value"],
                "infra-backend-v1",
            );
            assert!(
                has_line(&r, "X-Header-Add", "some-other-value")
                    && has_line(&r, "X-Header-Add", "add-appends-values"),
                "{}",
                r.body
            );
            let r = s.expect_backend(
                "GET",
                "example.com",
                "/remove",
                &["X-Header-Remove: val"],
                "infra-backend-v1",
            );
            assert!(absent(&r, "X-Header-Remove"), "{}", r.body);
            let r = s.expect_backend(
                "GET",
                "example.com",
                "/multiple",
                &[
                    "X-Header-Set-2: set-val-2",
                    "X-Header-Add-2: add-val-2",
                    "X-Header-Remove-2: remove-val-2",
                    "Another-Header: another-header-val",
                ],
                "infra-backend-v1",
            );
            for (n, v) in [
                ("X-Header-Set-1", "header-set-1"),
                ("X-Header-Set-2", "header-set-2"),
                ("X-Header-Add-1", "header-add-1"),
                ("X-Header-Add-2", "add-val-2"),
                ("X-Header-Add-2", "header-add-2"),
                ("X-Header-Add-3", "header-add-3"),
                ("Another-Header", "another-header-val"),
            ] {
                assert!(has_line(&r, n, v), "{n}: {v} in {}", r.body);
            }
            assert!(
                absent(&r, "X-Header-Remove-1") && absent(&r, "X-Header-Remove-2"),
                "{}",
                r.body
            );
            let r = s.expect_backend(
                "GET",
                "example.com",
                "/case-insensitivity",
                &[
                    "x-header-set: original-val-set",
                    "x-header-add: original-val-add",
                    "x-header-remove: original-val-remove",
                ],
                "infra-backend-v1",
            );
            assert!(
                has_line(&r, "X-Header-Set", "header-set")
                    && has_line(&r, "X-Header-Add", "original-val-add")
                    && has_line(&r, "X-Header-Add", "header-add"),
                "{}",
                r.body
            );
            assert!(absent(&r, "X-Header-Remove"), "{}", r.body);
        },
    );

    s.case(
        "HTTPRouteResponseHeaderModifier",
        "httproute-response-header-modifier.yaml",
        |s| {
            s.route_accepted(infra("response-header-modifier"), "same-namespace");
            let r = s.expect_backend(
                "GET",
                "example.com",
                "/set",
                &["X-Echo-Set-Header: Some-Other-Header:val,X-Header-Set:some-other-value"],
                "infra-backend-v1",
            );
            assert_eq!(r.header("x-header-set"), Some("set-overwrites-values"));
            assert_eq!(r.header("some-other-header"), Some("val"));
            let r = s.expect_backend(
                "GET",
                "example.com",
                "/add",
                &["X-Echo-Set-Header: X-Header-Add:some-other-value"],
                "infra-backend-v1",
            );
            let added: Vec<&str> = r
                .headers
                .iter()
                .filter(|(n, _)| n.eq_ignore_ascii_case("x-header-add"))
                .map(|(_, v)| v.as_str())
                .collect();
            assert_eq!(added, ["some-other-value", "add-appends-values"]);
            let r = s.expect_backend(
                "GET",
                "example.com",
                "/remove",
                &["X-Echo-Set-Header: X-Header-Remove:val"],
                "infra-backend-v1",
            );
            assert_eq!(r.header("x-header-remove"), None);
        },
    );

    s.case(
        "HTTPRouteRedirectHostAndStatus",
        "httproute-redirect-host-and-status.yaml",
        |s| {
            s.route_accepted(infra("redirect-host-and-status"), "same-namespace");
            s.expect_redirect(
                "example.com",
                "/hostname-redirect",
                302,
                &format!(
                    "http://example.org:{}/hostname-redirect",
                    s.proxy.http.port()
                ),
            );
            s.expect_redirect(
                "example.com",
                "/host-and-status",
                301,
                &format!("http://example.org:{}/host-and-status", s.proxy.http.port()),
            );
        },
    );

    s.case(
        "HTTPRouteRedirectPath",
        "httproute-redirect-path.yaml",
        |s| {
            s.route_accepted(infra("redirect-path"), "same-namespace");
            let port = s.proxy.http.port();
            for (path, status, host, location) in [
                (
                    "/original-prefix/lemon",
                    302,
                    "example.com",
                    "/replacement-prefix/lemon",
                ),
                (
                    "/full/path/original",
                    302,
                    "example.com",
                    "/full-path-replacement",
                ),
                ("/path-and-host", 302, "example.org", "/replacement-prefix"),
                (
                    "/path-and-status",
                    301,
                    "example.com",
                    "/replacement-prefix",
                ),
                (
                    "/full-path-and-host",
                    302,
                    "example.org",
                    "/replacement-full",
                ),
                (
                    "/full-path-and-status",
                    301,
                    "example.com",
                    "/replacement-full",
                ),
            ] {
                s.expect_redirect(
                    "example.com",
                    path,
                    status,
                    &format!("http://{host}:{port}{location}"),
                );
            }
        },
    );

    s.case(
        "HTTPRouteRedirectPort",
        "httproute-redirect-port.yaml",
        |s| {
            s.route_accepted(infra("redirect-port"), "same-namespace");
            s.expect_redirect("example.com", "/port", 302, "http://example.com:8083/port");
            s.expect_redirect(
                "example.com",
                "/port-and-host",
                302,
                "http://example.org:8083/port-and-host",
            );
            s.expect_redirect(
                "example.com",
                "/port-and-status",
                301,
                "http://example.com:8083/port-and-status",
            );
        },
    );

    s.case(
        "HTTPRouteRedirectScheme",
        "httproute-redirect-scheme.yaml",
        |s| {
            s.route_accepted(infra("redirect-scheme"), "same-namespace");
            s.expect_redirect("example.com", "/scheme", 302, "https://example.com/scheme");
            s.expect_redirect(
                "example.com",
                "/scheme-and-host",
                302,
                "https://example.org/scheme-and-host",
            );
            s.expect_redirect(
                "example.com",
                "/scheme-and-status",
                301,
                "https://example.com/scheme-and-status",
            );
        },
    );

    for (go_test, file, code) in [
        ("HTTPRoute303Redirect", "httproute-303-redirect.yaml", 303),
        ("HTTPRoute307Redirect", "httproute-307-redirect.yaml", 307),
        ("HTTPRoute308Redirect", "httproute-308-redirect.yaml", 308),
    ] {
        s.case(go_test, file, |s| {
            let docs = s.manifests(file);
            let name = docs[0]["metadata"]["name"].as_str().unwrap().to_string();
            let route = (INFRA, name.as_str());
            s.route_accepted(route, "same-namespace");
            let path = docs[0]["spec"]["rules"][0]["matches"][0]["path"]["value"]
                .as_str()
                .unwrap_or("/")
                .to_string();
            eventually(
                &format!("{go_test}: {code}"),
                Duration::from_secs(15),
                || s.request("GET", "example.com", &path, &[]).status == code,
            );
        });
    }

    s.case("HTTPRouteRewriteHost", "httproute-rewrite-host.yaml", |s| {
        s.route_accepted(infra("rewrite-host"), "same-namespace");
        let r = s.expect_backend("GET", "rewrite.example", "/one", &[], "infra-backend-v1");
        assert!(has_line(&r, "host", "one.example.org"), "{}", r.body);
        let r = s.expect_backend("GET", "rewrite.example", "/two", &[], "infra-backend-v2");
        assert!(has_line(&r, "host", "example.org"), "{}", r.body);
    });

    s.case("HTTPRouteRewritePath", "httproute-rewrite-path.yaml", |s| {
        s.route_accepted(infra("rewrite-path"), "same-namespace");
        for (path, upstream) in [
            ("/prefix/one/two", "/one/two"),
            ("/strip-prefix/three", "/three"),
            ("/strip-prefix", "/"),
            ("/full/one/two", "/one"),
            ("/full/rewrite-path-and-modify-headers/test", "/test"),
            ("/prefix/rewrite-path-and-modify-headers/one", "/prefix/one"),
        ] {
            let r = s.get(path, "infra-backend-v1");
            assert_eq!(
                request_line(&r),
                format!("GET {upstream} HTTP/1.1"),
                "{path}"
            );
        }
    });

    s.case("HTTPRouteWeight", "httproute-weight.yaml", |s| {
        s.route_accepted(infra("weighted-backends"), "same-namespace");
        // The suite sends 500 requests and allows 5% off each weight; the
        // split here is exact per turn.
        s.get("/", "infra-backend-v1");
        let mut counts: BTreeMap<String, usize> = BTreeMap::new();
        for _ in 0..100 {
            let r = s.request("GET", "example.com", "/", &[]);
            *counts
                .entry(r.header("x-origin").unwrap_or("none").to_string())
                .or_default() += 1;
        }
        let docs = s.manifests("httproute-weight.yaml");
        let refs = docs[0]["spec"]["rules"][0]["backendRefs"]
            .as_array()
            .unwrap()
            .clone();
        let total: u64 = refs.iter().map(|b| b["weight"].as_u64().unwrap()).sum();
        for b in refs {
            let expected = 100 * b["weight"].as_u64().unwrap() / total;
            let got = counts
                .get(b["name"].as_str().unwrap())
                .copied()
                .unwrap_or(0) as u64;
            assert!(got.abs_diff(expected) <= 1, "{counts:?}");
        }
    });

    s.case(
        "HTTPRouteRequestMirror",
        "httproute-request-mirror.yaml",
        |s| {
            s.route_accepted(infra("request-mirror"), "same-namespace");
            for path in ["/mirror", "/mirror-and-modify-headers"] {
                let before = s.received_by("infra-backend-v2", path);
                s.get(path, "infra-backend-v1");
                eventually(
                    &format!("{path} mirrored to v2"),
                    Duration::from_secs(5),
                    || s.received_by("infra-backend-v2", path) > before,
                );
            }
            // A request with a body is served, not copied (the body streams once).
            let before = s.received_by("infra-backend-v2", "/mirror");
            let posted = curl(&[
                "-d",
                "order=1",
                "-H",
                "Host: example.com",
                &s.proxy.url("/mirror"),
            ]);
            assert_eq!(posted.header("x-origin"), Some("infra-backend-v1"));
            assert!(posted.body.starts_with("POST /mirror "), "{}", posted.body);
            std::thread::sleep(Duration::from_millis(500));
            assert_eq!(s.received_by("infra-backend-v2", "/mirror"), before);
            let copy = s.last_received_by("infra-backend-v2", "/mirror-and-modify-headers");
            assert!(
                copy.contains("\r\nx-header-set: set-overwrites-values\r\n"),
                "{copy}"
            );
            assert!(copy.contains("\r\nhost: example.com\r\n"), "{copy}");
        },
    );

    s.case(
        "HTTPRouteRequestMultipleMirrors",
        "httproute-request-multiple-mirrors.yaml",
        |s| {
            s.route_accepted(infra("request-multiple-mirrors"), "same-namespace");
            let path = "/multi-mirror";
            let before = (
                s.received_by("infra-backend-v2", path),
                s.received_by("infra-backend-v3", path),
            );
            s.get(path, "infra-backend-v1");
            eventually("mirrored to v2 and v3", Duration::from_secs(5), || {
                s.received_by("infra-backend-v2", path) > before.0
                    && s.received_by("infra-backend-v3", path) > before.1
            });
        },
    );

    s.case(
        "HTTPRouteRequestPercentageMirror",
        "httproute-request-percentage-mirror.yaml",
        |s| {
            s.route_accepted(infra("request-percentage-mirror"), "same-namespace");
            // The suite checks the share over many requests, within a margin;
            // here it is exact per cycle: 20 of 100, 25 of 50.
            for (path, sent, share) in [
                ("/percent-mirror", 100, 20),
                ("/percent-mirror-fraction", 50, 25),
            ] {
                s.get(path, "infra-backend-v1");
                std::thread::sleep(Duration::from_millis(300));
                let before = s.received_by("infra-backend-v2", path);
                let origins: Vec<String> = (0..sent)
                    .map(|_| {
                        s.request("GET", "example.com", path, &[])
                            .header("x-origin")
                            .unwrap_or("")
                            .to_string()
                    })
                    .collect();
                assert!(origins.iter().all(|o| o == "infra-backend-v1"));
                eventually(
                    &format!("{path}: {share} of {sent} mirrored"),
                    Duration::from_secs(5),
                    || s.received_by("infra-backend-v2", path) - before == share,
                );
            }
        },
    );

    s.case(
        "HTTPRouteTimeoutRequest",
        "httproute-timeout-request.yaml",
        |s| {
            s.route_accepted(infra("request-timeout"), "same-namespace");
            s.get("/request-timeout", "infra-backend-v1");
            s.expect_status("GET", "example.com", "/request-timeout?delay=1s", &[], 504);
            s.get("/disable-request-timeout?delay=1s", "infra-backend-v1");
        },
    );

    s.case(
        "HTTPRouteTimeoutBackendRequest",
        "httproute-timeout-backend-request.yaml",
        |s| {
            s.route_accepted(infra("backend-request-timeout"), "same-namespace");
            s.get("/backend-timeout", "infra-backend-v1");
            s.expect_status("GET", "example.com", "/backend-timeout?delay=1s", &[], 504);
            s.get("/disable-backend-timeout?delay=1s", "infra-backend-v1");
        },
    );

    s.case(
        "HTTPRouteObservedGenerationBump",
        "httproute-observed-generation-bump.yaml",
        |s| {
            let route = infra("observed-generation-bump");
            s.route_accepted(route, "same-namespace");
            let mut object = s
                .api
                .get("httproutes", INFRA, "observed-generation-bump")
                .unwrap();
            let before = object["metadata"]["generation"].as_i64().unwrap();
            object["spec"]["rules"][0]["backendRefs"][0]["name"] = json!("infra-backend-v2");
            object.as_object_mut().unwrap().remove("status");
            s.api.put("httproutes", object);
            let after = s
                .api
                .get("httproutes", INFRA, "observed-generation-bump")
                .unwrap()["metadata"]["generation"]
                .as_i64()
                .unwrap();
            assert_eq!(after, before + 1);
            // route_accepted checks observedGeneration against the new generation.
            s.route_accepted(route, "same-namespace");
        },
    );

    s.case(
        "GatewayObservedGenerationBump",
        "gateway-observed-generation-bump.yaml",
        |s| {
            let gw = "gateway-observed-generation-bump";
            s.gateway_accepted(gw);
            let mut object = s.api.get("gateways", INFRA, gw).unwrap();
            let mut second = object["spec"]["listeners"][0].clone();
            second["name"] = json!("http-2");
            second["hostname"] = json!("second.example.com");
            object["spec"]["listeners"]
                .as_array_mut()
                .unwrap()
                .push(second);
            object.as_object_mut().unwrap().remove("status");
            s.api.put("gateways", object);
            s.gateway_accepted(gw);
            eventually(
                "both listeners in the status",
                Duration::from_secs(15),
                || s.listener(gw, "http-2")["name"] == "http-2",
            );
        },
    );

    s.case(
        "GatewayClassObservedGenerationBump",
        "gatewayclass-observed-generation-bump.yaml",
        |s| {
            eventually(
                "the GatewayClass accepted at its generation",
                Duration::from_secs(15),
                || {
                    let class = s.api.get("gatewayclasses", "", "edge-proxy").unwrap();
                    has_condition(
                        &class["status"]["conditions"],
                        "Accepted",
                        true,
                        "Accepted",
                        &class["metadata"]["generation"],
                    )
                },
            );
        },
    );
}

/// What the stand-in API server holds of a route's status, for the tests below.
fn parent_conditions(api: &FakeApiServer, ns: &str, name: &str) -> Vec<(String, String, String)> {
    api.get("httproutes", ns, name).map_or(Vec::new(), |r| {
        r["status"]["parents"]
            .as_array()
            .into_iter()
            .flatten()
            .flat_map(|p| p["conditions"].as_array().cloned().unwrap_or_default())
            .map(|c| {
                (
                    c["type"].as_str().unwrap_or("").to_string(),
                    c["status"].as_str().unwrap_or("").to_string(),
                    c["reason"].as_str().unwrap_or("").to_string(),
                )
            })
            .collect()
    })
}

fn gateway(name: &str, listeners: Value) -> Value {
    json!({"metadata": {"name": name, "namespace": "default"}, "spec": {"gatewayClassName": "edge-proxy", "listeners": listeners}})
}

fn http_route(name: &str, spec: Value) -> Value {
    json!({"metadata": {"name": name, "namespace": "default"}, "spec": spec})
}

fn ready_gateway_proxy(api: &FakeApiServer, dir: &Path, extra_listen: &str) -> Proxy {
    let kubeconfig = api.kubeconfig(dir);
    let http = SocketAddr::from(([127, 0, 0, 1], free_port()));
    let proxy = Proxy::start_with_env(
        &format!("listen:\n  http: \"{{http}}\"\n{extra_listen}admin: \"{{admin}}\"\ndiscovery: kubernetes\ngateway:\n  publish_addresses: [\"203.0.113.9\"]\n"),
        http,
        &[("KUBECONFIG", &kubeconfig)],
    );
    eventually("/readyz", Duration::from_secs(15), || {
        curl(&[&format!("http://{}/readyz", proxy.admin)]).status == 200
    });
    proxy
}

#[test]
fn without_the_crds_the_proxy_serves_and_picks_them_up_once_installed() {
    let api = FakeApiServer::start();
    let dir = tempfile::tempdir().unwrap();
    let app = EchoOrigin::start("app");
    api.apply(
        "default",
        "app-abcde",
        "app",
        app.addr.port(),
        &[("127.0.0.1", true, true, false)],
    );
    api.put("services", json!({"metadata": {"name": "app", "namespace": "default"}, "spec": {"ports": [{"port": 80}]}}));
    // Not installed: ready at once, says so once.
    let proxy = ready_gateway_proxy(&api, dir.path(), "");
    assert_eq!(
        proxy
            .log()
            .matches("Gateway API CRDs are not installed")
            .count(),
        1
    );
    // Installed later: objects are served within the poll.
    api.install_gateway_api();
    api.put(
        "gatewayclasses",
        json!({"metadata": {"name": "edge-proxy"}, "spec": {"controllerName": CONTROLLER}}),
    );
    let port = proxy.http.port();
    api.put("gateways", gateway("web", json!([{"name": "http", "port": port, "protocol": "HTTP", "allowedRoutes": {"namespaces": {"from": "Same"}}}])));
    api.put("httproutes", http_route("app", json!({"parentRefs": [{"name": "web"}], "hostnames": ["app.test"], "rules": [{"backendRefs": [{"name": "app", "port": 80}]}]})));
    eventually(
        "the route served after the CRDs appear",
        Duration::from_secs(30),
        || curl(&["-H", "Host: app.test", &proxy.url("/")]).header("x-origin") == Some("app"),
    );
    assert_eq!(
        proxy
            .log()
            .matches("Gateway API CRDs are not installed")
            .count(),
        1,
        "said once"
    );
    // Status: the GatewayClass accepted, the Gateway with its address and
    // one attached route, the route's parent entry; written once each.
    eventually("status written", Duration::from_secs(15), || {
        parent_conditions(&api, "default", "app").contains(&(
            "Accepted".into(),
            "True".into(),
            "Accepted".into(),
        ))
    });
    let writes = || api.writes("/status").len();
    let settled = writes();
    std::thread::sleep(Duration::from_secs(5));
    assert_eq!(
        writes(),
        settled,
        "an unchanged status is not written again: {:?}",
        api.writes("/status")
    );
}

#[test]
fn a_plain_http_redirect_and_the_https_route_share_host_and_path() {
    // The most common Gateway: an HTTP listener whose route redirects to
    // https, and an HTTPS listener (certificate from a Secret) whose route
    // serves the app, both for the same host and path.
    let api = FakeApiServer::start();
    api.install_gateway_api();
    let dir = tempfile::tempdir().unwrap();
    make_cert(dir.path(), "shop", "shop.test", "Gateway Test");
    let https = free_port();
    let app = EchoOrigin::start("shop");
    api.apply(
        "default",
        "shop-abcde",
        "shop",
        app.addr.port(),
        &[("127.0.0.1", true, true, false)],
    );
    api.put("services", json!({"metadata": {"name": "shop", "namespace": "default"}, "spec": {"ports": [{"port": 80}]}}));
    api.put(
        "secrets",
        json!({"metadata": {"name": "shop-tls", "namespace": "default"}, "type": "kubernetes.io/tls", "data": {
            "tls.crt": base64_file(&dir.path().join("shop.crt")), "tls.key": base64_file(&dir.path().join("shop.key"))}}),
    );
    api.put(
        "gatewayclasses",
        json!({"metadata": {"name": "edge-proxy"}, "spec": {"controllerName": CONTROLLER}}),
    );
    let proxy = ready_gateway_proxy(
        &api,
        dir.path(),
        &format!("  https: \"127.0.0.1:{https}\"\n"),
    );
    let port = proxy.http.port();
    api.put("gateways", gateway("web", json!([
        {"name": "http", "port": port, "protocol": "HTTP"},
        {"name": "https", "port": https, "protocol": "HTTPS", "hostname": "shop.test", "tls": {"certificateRefs": [{"name": "shop-tls"}]}},
    ])));
    api.put("httproutes", http_route("to-https", json!({"parentRefs": [{"name": "web", "sectionName": "http"}], "hostnames": ["shop.test"],
        "rules": [{"filters": [{"type": "RequestRedirect", "requestRedirect": {"scheme": "https", "port": https, "statusCode": 301}}]}]})));
    api.put("httproutes", http_route("shop", json!({"parentRefs": [{"name": "web", "sectionName": "https"}], "hostnames": ["shop.test"],
        "rules": [{"backendRefs": [{"name": "shop", "port": 80}]}]})));
    eventually("http redirects to https", Duration::from_secs(15), || {
        let r = curl(&["-H", "Host: shop.test", &proxy.url("/cart?x=1")]);
        r.status == 301
            && r.header("location") == Some(format!("https://shop.test:{https}/cart?x=1").as_str())
    });
    let ca = dir.path().join("shop.crt");
    let resolve = format!("shop.test:{https}:127.0.0.1");
    eventually(
        "https serves the app with the Secret's certificate",
        Duration::from_secs(15),
        || {
            let out = std::process::Command::new("curl")
                .args(["-sS", "-i", "--max-time", "5", "--cacert"])
                .arg(&ca)
                .args([
                    "--resolve",
                    &resolve,
                    &format!("https://shop.test:{https}/cart"),
                ])
                .output()
                .unwrap();
            let r = parse_response(&out.stdout);
            r.status == 200 && r.header("x-origin") == Some("shop")
        },
    );
    // The listeners' status: both programmed, one route each.
    eventually("listener status", Duration::from_secs(15), || {
        let gw = api.get("gateways", "default", "web").unwrap();
        let listeners = gw["status"]["listeners"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        listeners.len() == 2
            && listeners.iter().all(|l| {
                l["attachedRoutes"] == 1
                    && has_condition(
                        &l["conditions"],
                        "Programmed",
                        true,
                        "Programmed",
                        &Value::Null,
                    )
            })
            && gw["status"]["addresses"] == json!([{"type": "IPAddress", "value": "203.0.113.9"}])
    });
    // A certificate reference to another namespace without a ReferenceGrant.
    api.put("gateways", gateway("other", json!([
        {"name": "https", "port": https, "protocol": "HTTPS", "hostname": "other.test", "tls": {"certificateRefs": [{"name": "shop-tls", "namespace": "elsewhere"}]}},
    ])));
    eventually("RefNotPermitted", Duration::from_secs(15), || {
        let gw = api.get("gateways", "default", "other").unwrap();
        gw["status"]["listeners"][0]["conditions"]
            .as_array()
            .is_some_and(|c| {
                c.iter()
                    .any(|c| c["type"] == "ResolvedRefs" && c["reason"] == "RefNotPermitted")
            })
    });
}

#[test]
fn session_persistence_holds_across_two_proxies_and_a_restart() {
    // Two proxies (two nodes) serving one HTTPRoute with sessionPersistence:
    // a cookie from either is honoured by the other and after a restart.
    let api = FakeApiServer::start();
    api.install_gateway_api();
    let dir = tempfile::tempdir().unwrap();
    let pods: Vec<HelloApp> = (0..3)
        .map(|i| HelloApp::start(&format!("pod-{i}")))
        .collect();
    let endpoints: Vec<(String, u16)> = pods
        .iter()
        .map(|p| (p.addr.ip().to_string(), p.addr.port()))
        .collect();
    let _ = endpoints;
    // hello-apps on distinct 127.0.0.x addresses share one port per slice:
    // one slice per pod, each with its own port.
    for (i, p) in pods.iter().enumerate() {
        api.apply(
            "default",
            &format!("hello-{i}"),
            "hello",
            p.addr.port(),
            &[(&p.addr.ip().to_string(), true, true, false)],
        );
    }
    api.put("services", json!({"metadata": {"name": "hello", "namespace": "default"}, "spec": {"ports": [{"port": 8080}]}}));
    api.put(
        "gatewayclasses",
        json!({"metadata": {"name": "edge-proxy"}, "spec": {"controllerName": CONTROLLER}}),
    );
    let port = free_port();
    let kubeconfig = api.kubeconfig(dir.path());
    let start = |http: SocketAddr| {
        let p = Proxy::start_with_env(
            "listen:\n  http: \"{http}\"\nadmin: \"{admin}\"\ndiscovery: kubernetes\ngateway: {}\n",
            http,
            &[("KUBECONFIG", &kubeconfig)],
        );
        eventually("/readyz", Duration::from_secs(15), || {
            curl(&[&format!("http://{}/readyz", p.admin)]).status == 200
        });
        p
    };
    // Both proxies serve the same port number on their own address, as
    // nodes do: the Gateway's listener names it once.
    let a = start(SocketAddr::from(([127, 0, 0, 1], port)));
    let b = start(SocketAddr::from(([127, 0, 0, 2], port)));
    api.put(
        "gateways",
        gateway(
            "web",
            json!([{"name": "http", "port": port, "protocol": "HTTP"}]),
        ),
    );
    api.put("httproutes", http_route("hello", json!({"parentRefs": [{"name": "web"}], "hostnames": ["hello.test"],
        "rules": [{"backendRefs": [{"name": "hello", "port": 8080}],
                   "sessionPersistence": {"sessionName": "hello-session", "absoluteTimeout": "1h", "cookieConfig": {"lifetimeType": "Permanent"}}}]})));
    let get = |proxy: &Proxy, cookie: Option<&str>| {
        let mut args = vec!["-H".to_string(), "Host: hello.test".to_string()];
        if let Some(c) = cookie {
            args.push("-H".into());
            args.push(format!("Cookie: hello-session={c}"));
        }
        args.push(proxy.url("/"));
        curl(&args.iter().map(String::as_str).collect::<Vec<_>>())
    };
    eventually("served on both", Duration::from_secs(15), || {
        get(&a, None).status == 200 && get(&b, None).status == 200
    });
    let first = get(&a, None);
    let cookie = first
        .cookie_value("hello-session")
        .expect("a session cookie");
    assert!(
        first
            .set_cookie("hello-session")
            .unwrap()
            .contains("Max-Age=3600"),
        "{:?}",
        first.set_cookie("hello-session")
    );
    let pod = first.served_by().to_string();
    for proxy in [&a, &b, &a, &b] {
        let r = get(proxy, Some(&cookie));
        assert_eq!(r.served_by(), pod, "the cookie holds on every proxy");
        assert!(
            r.set_cookie("hello-session").is_none(),
            "a held session is not re-pinned"
        );
    }
    // A proxy restarted keeps honouring it.
    drop(a);
    let a = start(SocketAddr::from(([127, 0, 0, 1], port)));
    eventually(
        "the restarted proxy serves the route",
        Duration::from_secs(15),
        || get(&a, None).status == 200,
    );
    assert_eq!(get(&a, Some(&cookie)).served_by(), pod);
    // Its pod terminating (a rolling update): held sessions stay, new ones
    // go elsewhere.
    let i: usize = pod.trim_start_matches("pod-").parse().unwrap();
    let p = &pods[i];
    api.apply(
        "default",
        &format!("hello-{i}"),
        "hello",
        p.addr.port(),
        &[(&p.addr.ip().to_string(), false, true, true)],
    );
    eventually(
        "new sessions avoid the terminating pod",
        Duration::from_secs(15),
        || (0..6).all(|_| get(&b, None).served_by() != pod),
    );
    assert_eq!(
        get(&b, Some(&cookie)).served_by(),
        pod,
        "the held session drains on its pod"
    );
}

fn grpc_call(addr: &str, authority: &str) -> Value {
    let out = std::process::Command::new("python3")
        .arg(repo_root().join("proxy/tests/tools/grpc_check.py"))
        .args(["call", addr, authority])
        .output()
        .unwrap();
    serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|_| json!({"error": String::from_utf8_lossy(&out.stderr).to_string()}))
}

#[test]
fn grpc_routes_match_service_and_method_and_carry_trailers_end_to_end() {
    use std::io::BufRead;
    let api = FakeApiServer::start();
    api.install_gateway_api();
    let dir = tempfile::tempdir().unwrap();
    // A real gRPC server (h2c) plays the pod.
    let port = free_port();
    let mut server = std::process::Command::new("python3")
        .arg(repo_root().join("proxy/tests/tools/grpc_check.py"))
        .args(["serve", &port.to_string()])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("python3 with grpcio (scripts/ci-deps.sh installs it)");
    let mut ready = String::new();
    std::io::BufReader::new(server.stdout.take().unwrap())
        .read_line(&mut ready)
        .unwrap();
    assert_eq!(ready.trim(), "ready");
    api.apply(
        "default",
        "grpc-abcde",
        "grpc",
        port,
        &[("127.0.0.1", true, true, false)],
    );
    api.put("services", json!({"metadata": {"name": "grpc", "namespace": "default"}, "spec": {"ports": [{"port": 9000}]}}));
    api.put(
        "gatewayclasses",
        json!({"metadata": {"name": "edge-proxy"}, "spec": {"controllerName": CONTROLLER}}),
    );
    let proxy = ready_gateway_proxy(&api, dir.path(), "");
    api.put(
        "gateways",
        gateway(
            "web",
            json!([{"name": "http", "port": proxy.http.port(), "protocol": "HTTP"}]),
        ),
    );
    let route = |methods: &[&str]| {
        let matches: Vec<Value> = methods
            .iter()
            .map(|m| json!({"method": {"service": "test.Echo", "method": m}, "headers": [{"name": "x-tenant", "value": "a"}]}))
            .collect();
        // The header match is on a header the client does not send: that
        // rule never matches, the second (methods only) does.
        let plain: Vec<Value> = methods
            .iter()
            .map(|m| json!({"method": {"service": "test.Echo", "method": m}}))
            .collect();
        json!({"metadata": {"name": "echo", "namespace": "default"}, "spec": {
        "parentRefs": [{"name": "web"}], "hostnames": ["grpc.test"],
        "rules": [
            {"matches": matches, "backendRefs": [{"name": "missing", "port": 9000}]},
            {"matches": plain, "backendRefs": [{"name": "grpc", "port": 9000}]},
        ]}})
    };
    api.put("grpcroutes", route(&["Unary", "Stream", "Fail"]));
    let addr = proxy.http.to_string();
    let all = json!({
        "unary": "olleh", "unary_trailer": "done",
        "stream": ["item-0", "item-1", "item-2"], "stream_trailer": "streamed",
        "fail": "NOT_FOUND", "fail_details": "no such thing"
    });
    eventually(
        "every method served with trailers and statuses",
        Duration::from_secs(15),
        || grpc_call(&addr, "grpc.test") == all,
    );
    // Fail no longer matched: the proxy's 404, which gRPC reads as UNIMPLEMENTED.
    api.put("grpcroutes", route(&["Unary", "Stream"]));
    eventually(
        "an unmatched method is not forwarded",
        Duration::from_secs(15),
        || {
            let got = grpc_call(&addr, "grpc.test");
            got["unary"] == "olleh" && got["fail"] == "UNIMPLEMENTED"
        },
    );
    eventually("the GRPCRoute's status", Duration::from_secs(15), || {
        let status = api.get("grpcroutes", "default", "echo").unwrap()["status"].clone();
        let conditions = &status["parents"][0]["conditions"];
        has_condition(conditions, "Accepted", true, "Accepted", &Value::Null)
            && has_condition(
                conditions,
                "ResolvedRefs",
                false,
                "BackendNotFound",
                &Value::Null,
            )
    });
    let _ = server.kill();
    let _ = server.wait();
}

/// The documents of a YAML text (empty ones left out), as JSON.
fn repo_documents(text: &str) -> Vec<Value> {
    serde_yaml::Deserializer::from_str(text)
        .map(|d| serde::Deserialize::deserialize(d).unwrap())
        .filter(|v: &Value| !v.is_null())
        .collect()
}

/// README's promise, end to end: the shipped ConfigMap, k8s/gateway/ and
/// README's HTTPRoutes on two nodes: plain HTTP redirected to https, the
/// shop served over TLS with the listener's Secret, its weights and its
/// session cookie holding on both nodes, the Gateway's addresses the nodes'.
#[test]
fn the_shipped_gateway_serves_the_readmes_routes_on_every_node() {
    let api = FakeApiServer::start();
    api.install_gateway_api();
    let dir = tempfile::tempdir().unwrap();
    let kubeconfig = api.kubeconfig(dir.path());
    let (http, https) = (free_port(), free_port());
    // k8s/gateway/ as shipped, but for the listeners' ports (a test cannot
    // bind 80 and 443).
    let shipped = std::fs::read_to_string(repo_root().join("k8s/gateway/gateway.yaml")).unwrap();
    for mut doc in repo_documents(&shipped) {
        if doc["kind"] == "Gateway" {
            doc["spec"]["listeners"][0]["port"] = json!(http);
            doc["spec"]["listeners"][1]["port"] = json!(https);
        }
        let resource = if doc["kind"] == "Gateway" {
            "gateways"
        } else {
            "gatewayclasses"
        };
        api.put(resource, doc);
    }
    make_cert(dir.path(), "shop", "shop.example.com", "Shop");
    api.put(
        "secrets",
        json!({"metadata": {"name": "edge-proxy-tls", "namespace": "edge-proxy"}, "type": "kubernetes.io/tls", "data": {
            "tls.crt": base64_file(&dir.path().join("shop.crt")), "tls.key": base64_file(&dir.path().join("shop.key"))}}),
    );
    // An Ingress with a certificate of its own for another host: the
    // listener without a hostname still serves every other name.
    make_cert(dir.path(), "other", "other.example.com", "Other");
    api.put(
        "secrets",
        json!({"metadata": {"name": "other-tls", "namespace": "default"}, "type": "kubernetes.io/tls", "data": {
            "tls.crt": base64_file(&dir.path().join("other.crt")), "tls.key": base64_file(&dir.path().join("other.key"))}}),
    );
    api.put("ingressclasses", json!({"metadata": {"name": "edge-proxy"}, "spec": {"controller": "edge-proxy.io/ingress-controller"}}));
    api.put("ingresses", json!({"metadata": {"name": "other", "namespace": "default"}, "spec": {
        "ingressClassName": "edge-proxy", "tls": [{"hosts": ["other.example.com"], "secretName": "other-tls"}],
        "rules": [{"host": "other.example.com", "http": {"paths": [{"path": "/", "pathType": "Prefix",
            "backend": {"service": {"name": "shop-v2", "port": {"number": 8080}}}}]}}]}}));
    for block in readme_yaml_blocks("kind: HTTPRoute") {
        for doc in repo_documents(&block) {
            api.put("httproutes", doc);
        }
    }
    // shop-v1 (two pods) and shop-v2 (one), as the example's weights name them.
    let port = free_port();
    let pods: Vec<HelloApp> = (1..=3)
        .map(|i| {
            HelloApp::start_on(
                &format!("shop-{i}"),
                SocketAddr::from(([127, 0, 0, i as u8], port)),
            )
        })
        .collect();
    for (service, members) in [("shop-v1", &pods[..2]), ("shop-v2", &pods[2..])] {
        let endpoints: Vec<String> = members.iter().map(|p| p.addr.ip().to_string()).collect();
        let list: Vec<_> = endpoints
            .iter()
            .map(|ip| (ip.as_str(), true, true, false))
            .collect();
        api.apply("default", &format!("{service}-abcde"), service, port, &list);
        api.put("services", json!({"metadata": {"name": service, "namespace": "default"}, "spec": {"ports": [{"port": 8080}]}}));
    }
    for i in 1..=2 {
        api.put("nodes", json!({"metadata": {"name": format!("node-{i}")}, "status": {"addresses": [
            {"type": "InternalIP", "address": format!("10.0.0.{i}")}, {"type": "ExternalIP", "address": format!("198.51.100.{i}")}]}}));
        api.put("pods", json!({"metadata": {"name": format!("edge-proxy-{i}"), "namespace": "edge-proxy", "labels": {"app.kubernetes.io/name": "edge-proxy"}},
            "spec": {"nodeName": format!("node-{i}")}, "status": {"conditions": [{"type": "Ready", "status": "True"}]}}));
    }
    let config_map: Value = {
        let text = std::fs::read_to_string(repo_root().join("k8s/edge-proxy.yaml")).unwrap();
        repo_documents(&text)
            .into_iter()
            .find(|d| d["kind"] == "ConfigMap")
            .unwrap()
    };
    let nodes: Vec<Proxy> = (1..=2u8)
        .map(|i| {
            let config = config_map["data"]["proxy.yaml"]
                .as_str()
                .unwrap()
                .replace("0.0.0.0:80\"", "{http}\"")
                .replace("0.0.0.0:443", &format!("127.0.0.{i}:{https}"))
                .replace("0.0.0.0:9901", "{admin}");
            let name = format!("edge-proxy-{i}");
            let p = Proxy::start_with_env(
                &config,
                SocketAddr::from(([127, 0, 0, i], http)),
                &[
                    ("KUBECONFIG", &kubeconfig),
                    ("POD_NAMESPACE", Path::new("edge-proxy")),
                    ("POD_NAME", Path::new(&name)),
                ],
            );
            eventually("/readyz", Duration::from_secs(15), || {
                curl(&[&format!("http://{}/readyz", p.admin)]).status == 200
            });
            p
        })
        .collect();
    let ca = dir.path().join("shop.crt");
    let https_get = |node: u8, path: &str, cookie: Option<&str>| {
        let resolve = format!("shop.example.com:{https}:127.0.0.{node}");
        let mut args = vec![
            "--cacert".to_string(),
            ca.display().to_string(),
            "--resolve".into(),
            resolve,
        ];
        if let Some(c) = cookie {
            args.push("-b".into());
            args.push(format!("shop={c}"));
        }
        args.push(format!("https://shop.example.com:{https}{path}"));
        curl(&args.iter().map(String::as_str).collect::<Vec<_>>())
    };
    for (i, node) in nodes.iter().enumerate() {
        eventually(
            "plain HTTP redirected to https",
            Duration::from_secs(15),
            || {
                let r = curl(&["-H", "Host: shop.example.com", &node.url("/api/cart")]);
                r.status == 301 && r.header("location") == Some("https://shop.example.com/api/cart")
            },
        );
        eventually("the shop over TLS", Duration::from_secs(15), || {
            https_get(i as u8 + 1, "/api/cart", None).status == 200
        });
    }
    // Weights 90:10 over new sessions: exactly 10 of any 100.
    let mut v2 = 0;
    for _ in 0..100 {
        if https_get(1, "/api/x", None).served_by() == "shop-3" {
            v2 += 1;
        }
    }
    assert_eq!(v2, 10, "10% of new sessions to shop-v2");
    // The session cookie holds on both nodes.
    let first = https_get(1, "/api/x", None);
    let set = first
        .set_cookie("shop")
        .expect("the session cookie")
        .to_string();
    assert!(
        set.contains("Max-Age=86400") && set.contains("Secure"),
        "{set}"
    );
    let cookie = first.cookie_value("shop").unwrap();
    for node in [2, 1, 2] {
        assert_eq!(
            https_get(node, "/api/x", Some(&cookie)).served_by(),
            first.served_by()
        );
    }
    // The Ingress's host has its own certificate.
    let other = curl(&[
        "--cacert",
        &dir.path().join("other.crt").display().to_string(),
        "--resolve",
        &format!("other.example.com:{https}:127.0.0.1"),
        &format!("https://other.example.com:{https}/"),
    ]);
    assert_eq!(other.served_by(), "shop-3");
    // Outside /api: not routed (the example serves /api only).
    assert_eq!(https_get(2, "/", None).status, 404);
    eventually(
        "the Gateway's status: the nodes' addresses, two routes",
        Duration::from_secs(20),
        || {
            let gw = api.get("gateways", "edge-proxy", "edge-proxy").unwrap();
            gw["status"]["addresses"]
                == json!([{"type": "IPAddress", "value": "198.51.100.1"}, {"type": "IPAddress", "value": "198.51.100.2"}])
                && gw["status"]["listeners"][0]["attachedRoutes"] == 1
                && gw["status"]["listeners"][1]["attachedRoutes"] == 1
                && has_condition(
                    &gw["status"]["conditions"],
                    "Programmed",
                    true,
                    "Programmed",
                    &gw["metadata"]["generation"],
                )
        },
    );
    for node in &nodes {
        assert_eq!(
            node.metrics().sum("edge_proxy_ingress_problems", &[]),
            0.0,
            "{}",
            node.log()
        );
    }
}
