//! A stand-in for the Kubernetes API server that speaks its wire protocol, as
//! kube-rs sees a real one, for the resources edge-proxy uses:
//! EndpointSlices, Ingresses (and their `status` subresource), IngressClasses,
//! Secrets, ConfigMaps, Services, Pods, Nodes and Leases.
//!
//! - LIST: a JSON list with a resourceVersion; WATCH: a chunked stream of JSON
//!   events from a resourceVersion, with BOOKMARK events and `410 Gone` expiry;
//!   label selectors (`k=v`, `k!=v`, `k in (a,b)`, `k`) and field selectors
//!   (`type=`, `metadata.name=`, `metadata.namespace=`);
//! - GET, POST (409 AlreadyExists), PUT (409 Conflict on a stale
//!   resourceVersion, as the optimistic concurrency Leases rely on) and merge
//!   PATCH, on objects and on `/status`.
//!
//! Requests are answered by plain threads on 127.0.0.1, one per connection.

use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

/// (address, ready, serving, terminating)
pub type SliceEndpoint<'a> = (&'a str, bool, bool, bool);

/// The resources served: (plural, apiVersion, kind, namespaced).
const RESOURCES: &[(&str, &str, &str, bool)] = &[
    (
        "endpointslices",
        "discovery.k8s.io/v1",
        "EndpointSlice",
        true,
    ),
    ("ingresses", "networking.k8s.io/v1", "Ingress", true),
    (
        "ingressclasses",
        "networking.k8s.io/v1",
        "IngressClass",
        false,
    ),
    ("secrets", "v1", "Secret", true),
    ("configmaps", "v1", "ConfigMap", true),
    ("services", "v1", "Service", true),
    ("pods", "v1", "Pod", true),
    ("nodes", "v1", "Node", false),
    ("leases", "coordination.k8s.io/v1", "Lease", true),
    ("namespaces", "v1", "Namespace", false),
    // Gateway API: served once `install_gateway_api` is called, as CRDs.
    (
        "gatewayclasses",
        "gateway.networking.k8s.io/v1",
        "GatewayClass",
        false,
    ),
    ("gateways", "gateway.networking.k8s.io/v1", "Gateway", true),
    (
        "httproutes",
        "gateway.networking.k8s.io/v1",
        "HTTPRoute",
        true,
    ),
    (
        "grpcroutes",
        "gateway.networking.k8s.io/v1",
        "GRPCRoute",
        true,
    ),
    (
        "referencegrants",
        "gateway.networking.k8s.io/v1",
        "ReferenceGrant",
        true,
    ),
];

/// The Gateway API kinds, answered 404 until their CRDs are "installed".
const GATEWAY_API: &[&str] = &[
    "gatewayclasses",
    "gateways",
    "httproutes",
    "grpcroutes",
    "referencegrants",
];

fn resource_info(plural: &str) -> Option<(&'static str, &'static str, &'static str, bool)> {
    RESOURCES.iter().copied().find(|r| r.0 == plural)
}

/// (resource, namespace or "", name)
type Key = (String, String, String);

struct Event {
    rv: u64,
    /// "*" for a bookmark sent to every watch.
    resource: String,
    object: Value,
    json: Value,
}

/// One request as the server saw it: method, path, body.
#[derive(Debug, Clone)]
pub struct Request {
    pub method: String,
    pub path: String,
    pub body: Value,
}

#[derive(Default)]
struct State {
    rv: u64,
    objects: BTreeMap<Key, Value>,
    events: Vec<Event>,
    /// Watches started before this generation get a 410 and end.
    expire_generation: u64,
    /// LIST requests wait while this is set.
    hold_lists: bool,
    /// Down: open watches are cut and every new connection is closed unanswered.
    down: bool,
    /// Open watches: (resource, label selector).
    open: Vec<(String, Vec<Requirement>)>,
    /// EndpointSlice LISTs answered.
    lists: usize,
    /// Writes (POST, PUT, PATCH), in order.
    writes: Vec<Request>,
    /// The Gateway API CRDs are installed.
    gateway_api: bool,
}

#[derive(Clone)]
pub struct FakeApiServer {
    pub addr: SocketAddr,
    shared: Arc<(Mutex<State>, Condvar)>,
}

impl FakeApiServer {
    pub fn start() -> FakeApiServer {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let server = FakeApiServer {
            addr,
            shared: Arc::default(),
        };
        let s = server.clone();
        std::thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                let s = s.clone();
                std::thread::spawn(move || s.serve(stream));
            }
        });
        server
    }

    /// A kubeconfig naming this server (plain HTTP, no credentials).
    pub fn kubeconfig(&self, dir: &Path) -> PathBuf {
        let path = dir.join("kubeconfig");
        std::fs::write(
            &path,
            format!(
                "apiVersion: v1\nkind: Config\nclusters:\n- name: fake\n  cluster:\n    server: http://{}\ncontexts:\n- name: fake\n  context:\n    cluster: fake\n    user: fake\n    namespace: default\ncurrent-context: fake\nusers:\n- name: fake\n  user: {{}}\n",
                self.addr
            ),
        )
        .unwrap();
        path
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.shared.0.lock().unwrap()
    }

    /// Create or replace an object of `resource` (its metadata names it), as a
    /// controller or `kubectl apply` would: a new resourceVersion, a uid and
    /// creationTimestamp kept from the object it replaces (or set now), and
    /// an ADDED or MODIFIED event.
    pub fn put(&self, resource: &str, mut object: Value) {
        let (_, api_version, kind, namespaced) = resource_info(resource).expect("known resource");
        let st = self.state();
        let ns = if namespaced {
            object["metadata"]["namespace"]
                .as_str()
                .unwrap_or("default")
                .to_string()
        } else {
            String::new()
        };
        let name = object["metadata"]["name"].as_str().unwrap().to_string();
        let key = (resource.to_string(), ns.clone(), name.clone());
        let old = st.objects.get(&key).cloned();
        object["apiVersion"] = json!(api_version);
        object["kind"] = json!(kind);
        if namespaced {
            object["metadata"]["namespace"] = json!(ns);
        }
        let meta = &mut object["metadata"];
        let kept = |field: &str| old.as_ref().map(|o| o["metadata"][field].clone());
        if meta["uid"].is_null() {
            meta["uid"] =
                kept("uid").unwrap_or_else(|| json!(format!("uid-{resource}-{ns}-{name}")));
        }
        if meta["creationTimestamp"].is_null() {
            meta["creationTimestamp"] = kept("creationTimestamp")
                .filter(|v| !v.is_null())
                .unwrap_or_else(|| json!(now_rfc3339()));
        }
        // metadata.generation: 1, then one more per change of the spec.
        let spec_changed = old.as_ref().is_none_or(|o| o["spec"] != object["spec"]);
        let generation = kept("generation").and_then(|g| g.as_i64()).unwrap_or(0);
        object["metadata"]["generation"] = json!(generation + i64::from(spec_changed));
        if let (Some(o), true) = (&old, object.get("status").is_none()) {
            // `kubectl apply` of a spec keeps the status controllers wrote.
            if !o["status"].is_null() {
                object["status"] = o["status"].clone();
            }
        }
        drop(st);
        self.store(key, object, old.is_some());
    }

    fn store(&self, key: Key, mut object: Value, existed: bool) {
        let (lock, cvar) = &*self.shared;
        let mut st = lock.lock().unwrap();
        st.rv += 1;
        let rv = st.rv;
        object["metadata"]["resourceVersion"] = json!(rv.to_string());
        let kind = if existed { "MODIFIED" } else { "ADDED" };
        st.events.push(Event {
            rv,
            resource: key.0.clone(),
            object: object.clone(),
            json: json!({"type": kind, "object": object}),
        });
        st.objects.insert(key, object);
        cvar.notify_all();
    }

    /// Delete an object, with a DELETED event.
    pub fn remove(&self, resource: &str, namespace: &str, name: &str) {
        let (lock, cvar) = &*self.shared;
        let mut st = lock.lock().unwrap();
        let key = (
            resource.to_string(),
            namespace.to_string(),
            name.to_string(),
        );
        let Some(mut object) = st.objects.remove(&key) else {
            return;
        };
        st.rv += 1;
        let rv = st.rv;
        object["metadata"]["resourceVersion"] = json!(rv.to_string());
        st.events.push(Event {
            rv,
            resource: resource.to_string(),
            object: object.clone(),
            json: json!({"type": "DELETED", "object": object}),
        });
        cvar.notify_all();
    }

    /// The object as stored now.
    pub fn get(&self, resource: &str, namespace: &str, name: &str) -> Option<Value> {
        let key = (
            resource.to_string(),
            namespace.to_string(),
            name.to_string(),
        );
        self.state().objects.get(&key).cloned()
    }

    /// Every write (POST, PUT, PATCH) whose path contains `path_part`.
    pub fn writes(&self, path_part: &str) -> Vec<Request> {
        self.state()
            .writes
            .iter()
            .filter(|r| r.path.contains(path_part))
            .cloned()
            .collect()
    }

    /// Create or replace a slice of `service` with one port `http`/`port`.
    pub fn apply(
        &self,
        namespace: &str,
        name: &str,
        service: &str,
        port: u16,
        endpoints: &[SliceEndpoint],
    ) {
        let endpoints: Vec<Value> = endpoints
            .iter()
            .map(|(ip, ready, serving, terminating)| {
                json!({"addresses": [ip], "conditions": {"ready": ready, "serving": serving, "terminating": terminating}, "nodeName": "node-1"})
            })
            .collect();
        self.put(
            "endpointslices",
            json!({
                "metadata": {
                    "name": name,
                    "namespace": namespace,
                    "labels": {"kubernetes.io/service-name": service, "endpointslice.kubernetes.io/managed-by": "endpointslice-controller.k8s.io"},
                },
                "addressType": "IPv4",
                "ports": [{"name": "http", "port": port, "protocol": "TCP"}],
                "endpoints": endpoints,
            }),
        );
    }

    pub fn delete(&self, namespace: &str, name: &str) {
        self.remove("endpointslices", namespace, name);
    }

    /// Send a BOOKMARK to every open watch.
    pub fn bookmark(&self) {
        let (lock, cvar) = &*self.shared;
        let mut st = lock.lock().unwrap();
        st.rv += 1;
        let rv = st.rv;
        let json = json!({"type": "BOOKMARK", "object": {"kind": "EndpointSlice", "apiVersion": "discovery.k8s.io/v1", "metadata": {"resourceVersion": rv.to_string(), "annotations": {"k8s.io/initial-events-end": "true"}}}});
        st.events.push(Event {
            rv,
            resource: "*".into(),
            object: Value::Null,
            json,
        });
        cvar.notify_all();
    }

    /// End every open watch with `410 Gone` (resourceVersion too old), as an
    /// API server does after etcd compaction: watchers must relist.
    pub fn expire_watches(&self) {
        let (lock, cvar) = &*self.shared;
        lock.lock().unwrap().expire_generation += 1;
        cvar.notify_all();
    }

    /// Take the server down (watches cut, connections closed without an
    /// answer, as a restarting API server behind a load balancer) or back up.
    pub fn set_down(&self, down: bool) {
        let (lock, cvar) = &*self.shared;
        lock.lock().unwrap().down = down;
        cvar.notify_all();
    }

    pub fn hold_lists(&self, hold: bool) {
        let (lock, cvar) = &*self.shared;
        lock.lock().unwrap().hold_lists = hold;
        cvar.notify_all();
    }

    /// Open EndpointSlice watches selecting `service`.
    pub fn open_watches(&self, service: &str) -> usize {
        self.state()
            .open
            .iter()
            .filter(|(resource, selector)| {
                resource == "endpointslices"
                    && selector.iter().any(|r| {
                        r.key == "kubernetes.io/service-name"
                            && r.values.iter().any(|v| v == service)
                    })
            })
            .count()
    }

    /// Open EndpointSlice watches, whatever they select.
    pub fn watches(&self) -> usize {
        self.watches_of("endpointslices")
    }

    pub fn watches_of(&self, resource: &str) -> usize {
        self.state()
            .open
            .iter()
            .filter(|(r, _)| r == resource)
            .count()
    }

    /// Serve the Gateway API kinds from now on, as installing their CRDs does.
    pub fn install_gateway_api(&self) {
        self.state().gateway_api = true;
    }

    /// EndpointSlice LISTs answered.
    pub fn lists(&self) -> usize {
        self.state().lists
    }

    fn serve(&self, stream: TcpStream) {
        let mut reader = BufReader::new(stream.try_clone().unwrap());
        let mut request_line = String::new();
        if reader.read_line(&mut request_line).is_err() || self.state().down {
            return;
        }
        let mut content_length = 0usize;
        loop {
            let mut line = String::new();
            match reader.read_line(&mut line) {
                Ok(0) | Err(_) => return,
                Ok(_) if line == "\r\n" => break,
                Ok(_) => {
                    if let Some((name, value)) = line.split_once(':') {
                        if name.eq_ignore_ascii_case("content-length") {
                            content_length = value.trim().parse().unwrap_or(0);
                        }
                    }
                }
            }
        }
        let mut body = vec![0u8; content_length];
        if reader.read_exact(&mut body).is_err() {
            return;
        }
        let body: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
        let mut words = request_line.split_whitespace();
        let method = words.next().unwrap_or("GET").to_string();
        let target = words.next().unwrap_or("/").to_string();
        let (path, query) = target.split_once('?').unwrap_or((&target, ""));
        let params: BTreeMap<String, String> = query
            .split('&')
            .filter_map(|kv| kv.split_once('='))
            .map(|(k, v)| (k.to_string(), percent_decode(v)))
            .collect();
        let gateway_api = self.state().gateway_api;
        // API discovery of the Gateway API group, as kube-rs asks it.
        if method == "GET" && path.trim_end_matches('/') == "/apis/gateway.networking.k8s.io/v1" {
            if !gateway_api {
                return respond(
                    stream,
                    404,
                    &status(
                        404,
                        "NotFound",
                        "the server could not find the requested resource",
                    ),
                );
            }
            let resources: Vec<Value> = RESOURCES
                .iter()
                .filter(|r| GATEWAY_API.contains(&r.0))
                .flat_map(|(plural, _, kind, namespaced)| {
                    [
                        json!({"name": plural, "singularName": kind.to_lowercase(), "namespaced": namespaced, "kind": kind, "verbs": ["get", "list", "watch", "create", "update", "patch", "delete"]}),
                        json!({"name": format!("{plural}/status"), "singularName": "", "namespaced": namespaced, "kind": kind, "verbs": ["get", "patch", "update"]}),
                    ]
                })
                .collect();
            let list = json!({"kind": "APIResourceList", "apiVersion": "v1", "groupVersion": "gateway.networking.k8s.io/v1", "resources": resources});
            return respond(stream, 200, &list);
        }
        let target = Target::parse(path)
            .filter(|t| gateway_api || !GATEWAY_API.contains(&t.resource.as_str()));
        let Some(target) = target else {
            return respond(
                stream,
                404,
                &status(404, "NotFound", &format!("no handler for {path}")),
            );
        };
        if method != "GET" {
            self.state().writes.push(Request {
                method: method.clone(),
                path: path.to_string(),
                body: body.clone(),
            });
        }
        let selector = Selector {
            namespace: target.namespace.clone(),
            labels: parse_labels(
                params
                    .get("labelSelector")
                    .map(String::as_str)
                    .unwrap_or(""),
            ),
            fields: parse_fields(
                params
                    .get("fieldSelector")
                    .map(String::as_str)
                    .unwrap_or(""),
            ),
        };
        match (method.as_str(), &target.name) {
            ("GET", None) if params.get("watch").map(String::as_str) == Some("true") => {
                let from = params
                    .get("resourceVersion")
                    .and_then(|v| v.parse().ok())
                    .unwrap_or(0);
                self.watch(stream, reader, &target.resource, &selector, from)
            }
            ("GET", None) => self.list(stream, &target.resource, &selector),
            ("GET", Some(name)) => match self.get(&target.resource, target.ns(), name) {
                Some(object) => respond(stream, 200, &object),
                None => respond(
                    stream,
                    404,
                    &status(404, "NotFound", &format!("{name} not found")),
                ),
            },
            ("POST", None) => {
                let name = body["metadata"]["name"]
                    .as_str()
                    .unwrap_or_default()
                    .to_string();
                if self.get(&target.resource, target.ns(), &name).is_some() {
                    return respond(
                        stream,
                        409,
                        &status(409, "AlreadyExists", &format!("{name} already exists")),
                    );
                }
                let mut object = body;
                if target.namespace.is_some() {
                    object["metadata"]["namespace"] = json!(target.ns());
                }
                self.put(&target.resource, object);
                let created = self.get(&target.resource, target.ns(), &name).unwrap();
                respond(stream, 201, &created)
            }
            ("PUT" | "PATCH", Some(name)) => {
                let Some(current) = self.get(&target.resource, target.ns(), name) else {
                    return respond(
                        stream,
                        404,
                        &status(404, "NotFound", &format!("{name} not found")),
                    );
                };
                let stale = body["metadata"]["resourceVersion"]
                    .as_str()
                    .is_some_and(|rv| Some(rv) != current["metadata"]["resourceVersion"].as_str());
                if method == "PUT" && stale {
                    return respond(
                        stream,
                        409,
                        &status(409, "Conflict", "the object has been modified"),
                    );
                }
                let mut next = current.clone();
                match (method.as_str(), target.subresource.as_deref()) {
                    ("PUT", Some("status")) => next["status"] = body["status"].clone(),
                    ("PUT", _) => {
                        next = body;
                        next["metadata"]["uid"] = current["metadata"]["uid"].clone();
                        next["metadata"]["creationTimestamp"] =
                            current["metadata"]["creationTimestamp"].clone();
                    }
                    (_, Some("status")) => merge(&mut next["status"], &body["status"]),
                    _ => merge(&mut next, &body),
                }
                if GATEWAY_API.contains(&target.resource.as_str()) {
                    as_crds_store(&mut next["status"]);
                }
                let key = (
                    target.resource.clone(),
                    target.ns().to_string(),
                    name.clone(),
                );
                self.store(key, next, true);
                respond(
                    stream,
                    200,
                    &self.get(&target.resource, target.ns(), name).unwrap(),
                )
            }
            _ => respond(stream, 405, &status(405, "MethodNotAllowed", &method)),
        }
    }

    fn list(&self, stream: TcpStream, resource: &str, selector: &Selector) {
        let (lock, cvar) = &*self.shared;
        let mut st = lock.lock().unwrap();
        while st.hold_lists && resource == "endpointslices" {
            st = cvar.wait(st).unwrap();
        }
        if resource == "endpointslices" {
            st.lists += 1;
        }
        let items: Vec<Value> = st
            .objects
            .iter()
            .filter(|((r, _, _), obj)| r == resource && selector.selects(obj))
            .map(|(_, obj)| obj.clone())
            .collect();
        let (_, api_version, kind, _) = resource_info(resource).unwrap();
        let body = json!({"apiVersion": api_version, "kind": format!("{kind}List"), "metadata": {"resourceVersion": st.rv.to_string()}, "items": items});
        drop(st);
        respond(stream, 200, &body);
    }

    fn watch(
        &self,
        mut stream: TcpStream,
        mut reader: BufReader<TcpStream>,
        resource: &str,
        selector: &Selector,
        from: u64,
    ) {
        let head = "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ntransfer-encoding: chunked\r\n\r\n";
        if stream.write_all(head.as_bytes()).is_err() {
            return;
        }
        let (lock, cvar) = &*self.shared;
        let mut st = lock.lock().unwrap();
        let generation = st.expire_generation;
        let me = (resource.to_string(), selector.labels.clone());
        st.open.push(me.clone());
        let mut sent = from;
        let _ = reader
            .get_ref()
            .set_read_timeout(Some(Duration::from_millis(1)));
        loop {
            if st.down {
                break; // cut mid-stream, no final chunk
            }
            if st.expire_generation != generation {
                let gone = json!({"type": "ERROR", "object": status(410, "Expired", "too old resource version")});
                let _ = write_chunk(&mut stream, &gone);
                let _ = stream.write_all(b"0\r\n\r\n");
                break;
            }
            let pending: Vec<Value> = st
                .events
                .iter()
                .filter(|e| {
                    e.rv > sent
                        && (e.resource == "*"
                            || (e.resource == resource && selector.selects(&e.object)))
                })
                .map(|e| e.json.clone())
                .collect();
            sent = st.rv;
            if pending.iter().any(|e| write_chunk(&mut stream, e).is_err()) {
                break;
            }
            let (next, _) = cvar.wait_timeout(st, Duration::from_millis(100)).unwrap();
            st = next;
            // The client hung up (its watch was dropped)?
            let mut probe = [0u8; 1];
            if matches!(reader.read(&mut probe), Ok(0)) {
                break;
            }
        }
        if let Some(i) = st.open.iter().position(|w| *w == me) {
            st.open.remove(i);
        }
    }
}

/// A request path: `/api/v1/...` or `/apis/GROUP/VERSION/...`, then
/// `[namespaces/NS/]RESOURCE[/NAME[/SUBRESOURCE]]`.
struct Target {
    namespace: Option<String>,
    resource: String,
    name: Option<String>,
    subresource: Option<String>,
}

impl Target {
    fn parse(path: &str) -> Option<Target> {
        let parts: Vec<&str> = path.trim_matches('/').split('/').collect();
        let rest = match parts.as_slice() {
            ["api", "v1", rest @ ..] => rest,
            ["apis", _, _, rest @ ..] => rest,
            _ => return None,
        };
        let (namespace, rest) = match rest {
            ["namespaces", ns, rest @ ..] if !rest.is_empty() => (Some(ns.to_string()), rest),
            _ => (None, rest),
        };
        let (resource, name, subresource) = match rest {
            [r] => (r, None, None),
            [r, n] => (r, Some(n.to_string()), None),
            [r, n, s] => (r, Some(n.to_string()), Some(s.to_string())),
            _ => return None,
        };
        resource_info(resource)?;
        Some(Target {
            namespace,
            resource: resource.to_string(),
            name,
            subresource,
        })
    }

    fn ns(&self) -> &str {
        self.namespace.as_deref().unwrap_or("")
    }
}

/// One label requirement: `key=v`, `key!=v`, `key in (a,b)` or `key` (exists).
#[derive(Debug, Clone, PartialEq)]
struct Requirement {
    key: String,
    values: Vec<String>,
    negated: bool,
    /// Any value will do (`key` alone).
    exists: bool,
}

struct Selector {
    namespace: Option<String>,
    labels: Vec<Requirement>,
    /// (field path, value)
    fields: Vec<(String, String)>,
}

impl Selector {
    fn selects(&self, object: &Value) -> bool {
        let meta = &object["metadata"];
        let ns_ok = self
            .namespace
            .as_deref()
            .is_none_or(|ns| meta["namespace"].as_str() == Some(ns));
        let labels_ok = self.labels.iter().all(|r| {
            let value = meta["labels"][&r.key].as_str();
            let listed = value.is_some_and(|v| r.exists || r.values.iter().any(|x| x == v));
            listed != r.negated
        });
        let fields_ok = self.fields.iter().all(|(path, want)| {
            let got = path.split('.').fold(object, |v, part| &v[part]);
            got.as_str() == Some(want.as_str())
        });
        ns_ok && labels_ok && fields_ok
    }
}

fn parse_labels(selector: &str) -> Vec<Requirement> {
    let mut out = Vec::new();
    let mut rest = selector.trim();
    while !rest.is_empty() {
        // A requirement ends at a comma outside parentheses.
        let mut depth = 0;
        let end = rest
            .char_indices()
            .find(|&(_, c)| {
                match c {
                    '(' => depth += 1,
                    ')' => depth -= 1,
                    _ => {}
                }
                c == ',' && depth == 0
            })
            .map_or(rest.len(), |(i, _)| i);
        let req = rest[..end].trim();
        rest = rest[end..].trim_start_matches(',').trim();
        if let Some((key, list)) = req.split_once(" in ") {
            let list = list.trim().trim_start_matches('(').trim_end_matches(')');
            out.push(Requirement {
                key: key.trim().into(),
                values: list.split(',').map(|s| s.trim().to_string()).collect(),
                negated: false,
                exists: false,
            });
        } else if let Some((key, value)) = req.split_once("!=") {
            out.push(Requirement {
                key: key.trim().into(),
                values: vec![value.trim().into()],
                negated: true,
                exists: false,
            });
        } else if let Some((key, value)) = req.split_once('=') {
            out.push(Requirement {
                key: key.trim().trim_end_matches('=').into(),
                values: vec![value.trim_start_matches('=').trim().into()],
                negated: false,
                exists: false,
            });
        } else if !req.is_empty() {
            out.push(Requirement {
                key: req.into(),
                values: Vec::new(),
                negated: false,
                exists: true,
            });
        }
    }
    out
}

fn parse_fields(selector: &str) -> Vec<(String, String)> {
    selector
        .split(',')
        .filter_map(|f| f.split_once('='))
        .map(|(k, v)| {
            (
                k.trim().to_string(),
                v.trim_start_matches('=').trim().to_string(),
            )
        })
        .collect()
}

/// JSON merge patch (RFC 7386).
/// What the API server does to a CRD's status before storing it: nulls of
/// fields that are not nullable pruned, and the schema's defaults filled in
/// (here the ones edge-proxy's status meets: a route parentRef's group and kind).
fn as_crds_store(status: &mut Value) {
    fn prune(v: &mut Value) {
        match v {
            Value::Object(map) => {
                map.retain(|_, x| !x.is_null());
                map.values_mut().for_each(prune);
            }
            Value::Array(list) => list.iter_mut().for_each(prune),
            _ => {}
        }
    }
    prune(status);
    let parents = status.get_mut("parents").and_then(Value::as_array_mut);
    for parent in parents.into_iter().flatten() {
        let r = &mut parent["parentRef"];
        if r["group"].is_null() {
            r["group"] = json!("gateway.networking.k8s.io");
        }
        if r["kind"].is_null() {
            r["kind"] = json!("Gateway");
        }
    }
}

fn merge(target: &mut Value, patch: &Value) {
    match patch {
        Value::Object(fields) => {
            if !target.is_object() {
                *target = json!({});
            }
            for (k, v) in fields {
                if v.is_null() {
                    target.as_object_mut().unwrap().remove(k);
                } else {
                    merge(&mut target[k], v);
                }
            }
        }
        _ => *target = patch.clone(),
    }
}

fn status(code: u16, reason: &str, message: &str) -> Value {
    json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure", "code": code, "reason": reason, "message": message})
}

fn now_rfc3339() -> String {
    let out = std::process::Command::new("date")
        .args(["-u", "+%Y-%m-%dT%H:%M:%SZ"])
        .output()
        .unwrap();
    String::from_utf8(out.stdout).unwrap().trim().to_string()
}

fn write_chunk(stream: &mut TcpStream, event: &Value) -> std::io::Result<()> {
    let line = format!("{event}\n");
    write!(stream, "{:x}\r\n{line}\r\n", line.len())?;
    stream.flush()
}

fn respond(mut stream: TcpStream, status: u16, body: &Value) {
    let body = body.to_string();
    let _ = write!(
        stream,
        "HTTP/1.1 {status} X\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
        body.len()
    );
}

fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' && i + 2 < bytes.len() {
            if let Ok(b) = u8::from_str_radix(&s[i + 1..i + 3], 16) {
                out.push(b);
                i += 3;
                continue;
            }
        }
        out.push(if bytes[i] == b'+' { b' ' } else { bytes[i] });
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}
