//! A stand-in for the Kubernetes API server that speaks its wire protocol for
//! EndpointSlices: LIST (a JSON list with a resourceVersion) and WATCH (a
//! chunked stream of JSON events from a resourceVersion), with BOOKMARK events
//! and `410 Gone` expiry, as kube-rs's watcher sees a real one. Requests are
//! answered by plain threads on 127.0.0.1.

use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

/// (address, ready, serving, terminating)
pub type SliceEndpoint<'a> = (&'a str, bool, bool, bool);

#[derive(Default)]
struct State {
    rv: u64,
    /// (namespace, name) -> slice object
    slices: BTreeMap<(String, String), Value>,
    /// (resourceVersion, namespace, service, event JSON)
    events: Vec<(u64, String, String, Value)>,
    /// Watches started before this generation get a 410 and end.
    expire_generation: u64,
    /// LIST requests wait while this is set.
    hold_lists: bool,
    /// Down: open watches are cut and every new connection is closed unanswered.
    down: bool,
    /// Open watch streams selecting each service name.
    open_watches: BTreeMap<String, usize>,
    /// Open watch streams in all.
    watches: usize,
    lists: usize,
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

    /// Create or replace a slice of `service` with one port `http`/`port`.
    pub fn apply(
        &self,
        namespace: &str,
        name: &str,
        service: &str,
        port: u16,
        endpoints: &[SliceEndpoint],
    ) {
        let (lock, cvar) = &*self.shared;
        let mut st = lock.lock().unwrap();
        st.rv += 1;
        let rv = st.rv;
        let endpoints: Vec<Value> = endpoints
            .iter()
            .map(|(ip, ready, serving, terminating)| {
                json!({"addresses": [ip], "conditions": {"ready": ready, "serving": serving, "terminating": terminating}, "nodeName": "node-1"})
            })
            .collect();
        let object = json!({
            "apiVersion": "discovery.k8s.io/v1",
            "kind": "EndpointSlice",
            "metadata": {
                "name": name,
                "namespace": namespace,
                "resourceVersion": rv.to_string(),
                "uid": format!("uid-{name}"),
                "labels": {"kubernetes.io/service-name": service, "endpointslice.kubernetes.io/managed-by": "endpointslice-controller.k8s.io"},
            },
            "addressType": "IPv4",
            "ports": [{"name": "http", "port": port, "protocol": "TCP"}],
            "endpoints": endpoints,
        });
        let key = (namespace.to_string(), name.to_string());
        let kind = if st.slices.contains_key(&key) {
            "MODIFIED"
        } else {
            "ADDED"
        };
        st.slices.insert(key, object.clone());
        st.events.push((
            rv,
            namespace.into(),
            service.into(),
            json!({"type": kind, "object": object}),
        ));
        cvar.notify_all();
    }

    pub fn delete(&self, namespace: &str, name: &str) {
        let (lock, cvar) = &*self.shared;
        let mut st = lock.lock().unwrap();
        let Some(mut object) = st.slices.remove(&(namespace.into(), name.into())) else {
            return;
        };
        st.rv += 1;
        let rv = st.rv;
        object["metadata"]["resourceVersion"] = json!(rv.to_string());
        let service = object["metadata"]["labels"]["kubernetes.io/service-name"]
            .as_str()
            .unwrap()
            .to_string();
        st.events.push((
            rv,
            namespace.into(),
            service,
            json!({"type": "DELETED", "object": object}),
        ));
        cvar.notify_all();
    }

    /// Send a BOOKMARK to every open watch.
    pub fn bookmark(&self) {
        let (lock, cvar) = &*self.shared;
        let mut st = lock.lock().unwrap();
        st.rv += 1;
        let rv = st.rv;
        let event = json!({"type": "BOOKMARK", "object": {"kind": "EndpointSlice", "apiVersion": "discovery.k8s.io/v1", "metadata": {"resourceVersion": rv.to_string(), "annotations": {"k8s.io/initial-events-end": "true"}}}});
        st.events.push((rv, "*".into(), "*".into(), event));
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

    pub fn open_watches(&self, service: &str) -> usize {
        self.shared
            .0
            .lock()
            .unwrap()
            .open_watches
            .get(service)
            .copied()
            .unwrap_or(0)
    }

    /// Open watch streams, whatever they select.
    pub fn watches(&self) -> usize {
        self.shared.0.lock().unwrap().watches
    }

    pub fn lists(&self) -> usize {
        self.shared.0.lock().unwrap().lists
    }

    fn serve(&self, stream: TcpStream) {
        let mut reader = BufReader::new(stream.try_clone().unwrap());
        let mut request_line = String::new();
        if reader.read_line(&mut request_line).is_err() || self.shared.0.lock().unwrap().down {
            return;
        }
        loop {
            let mut line = String::new();
            match reader.read_line(&mut line) {
                Ok(0) | Err(_) => return,
                Ok(_) if line == "\r\n" => break,
                Ok(_) => {}
            }
        }
        let target = request_line
            .split_whitespace()
            .nth(1)
            .unwrap_or("/")
            .to_string();
        let (path, query) = target.split_once('?').unwrap_or((&target, ""));
        let params: BTreeMap<String, String> = query
            .split('&')
            .filter_map(|kv| kv.split_once('='))
            .map(|(k, v)| (k.to_string(), percent_decode(v)))
            .collect();
        let parts: Vec<&str> = path.trim_matches('/').split('/').collect();
        // apis/discovery.k8s.io/v1/endpointslices (every namespace) or
        // apis/discovery.k8s.io/v1/namespaces/{ns}/endpointslices
        let namespace = match parts.as_slice() {
            ["apis", "discovery.k8s.io", "v1", "endpointslices"] => None,
            ["apis", "discovery.k8s.io", "v1", "namespaces", ns, "endpointslices"] => {
                Some(ns.to_string())
            }
            _ => {
                return respond(
                    stream,
                    404,
                    &json!({"kind": "Status", "apiVersion": "v1", "status": "Failure", "code": 404, "reason": "NotFound", "message": format!("no handler for {path}")}),
                )
            }
        };
        let selector = Selector {
            namespace,
            services: services_selected(params.get("labelSelector").map(String::as_str)),
        };
        if params.get("watch").map(String::as_str) == Some("true") {
            let from: u64 = params
                .get("resourceVersion")
                .and_then(|v| v.parse().ok())
                .unwrap_or(0);
            self.watch(stream, reader, &selector, from);
        } else {
            self.list(stream, &selector);
        }
    }

    fn list(&self, stream: TcpStream, selector: &Selector) {
        let (lock, cvar) = &*self.shared;
        let mut st = lock.lock().unwrap();
        while st.hold_lists {
            st = cvar.wait(st).unwrap();
        }
        st.lists += 1;
        let items: Vec<Value> = st
            .slices
            .iter()
            .filter(|((ns, _), obj)| {
                let service = obj["metadata"]["labels"]["kubernetes.io/service-name"]
                    .as_str()
                    .unwrap_or_default();
                selector.selects(ns, service)
            })
            .map(|(_, obj)| obj.clone())
            .collect();
        let body = json!({"apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSliceList", "metadata": {"resourceVersion": st.rv.to_string()}, "items": items});
        drop(st);
        respond(stream, 200, &body);
    }

    fn watch(
        &self,
        mut stream: TcpStream,
        mut reader: BufReader<TcpStream>,
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
        for service in &selector.services {
            *st.open_watches.entry(service.clone()).or_default() += 1;
        }
        st.watches += 1;
        let mut sent = from;
        let _ = reader
            .get_ref()
            .set_read_timeout(Some(Duration::from_millis(1)));
        loop {
            if st.down {
                break; // cut mid-stream, no final chunk
            }
            if st.expire_generation != generation {
                let gone = json!({"type": "ERROR", "object": {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure", "message": "too old resource version", "reason": "Expired", "code": 410}});
                let _ = write_chunk(&mut stream, &gone);
                let _ = stream.write_all(b"0\r\n\r\n");
                break;
            }
            let pending: Vec<Value> = st
                .events
                .iter()
                .filter(|(rv, ns, svc, _)| *rv > sent && (selector.selects(ns, svc) || ns == "*"))
                .map(|(_, _, _, e)| e.clone())
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
        for service in &selector.services {
            *st.open_watches.entry(service.clone()).or_default() -= 1;
        }
        st.watches -= 1;
    }
}

/// What a LIST or WATCH asked for: a namespace (or all) and the Services named
/// by `kubernetes.io/service-name=NAME` or `kubernetes.io/service-name in (A,B)`.
struct Selector {
    namespace: Option<String>,
    services: Vec<String>,
}

impl Selector {
    fn selects(&self, namespace: &str, service: &str) -> bool {
        self.namespace.as_deref().is_none_or(|ns| ns == namespace)
            && self.services.iter().any(|s| s == service)
    }
}

fn services_selected(selector: Option<&str>) -> Vec<String> {
    let Some(selector) = selector else {
        return Vec::new();
    };
    if let Some(name) = selector.strip_prefix("kubernetes.io/service-name=") {
        return vec![name.to_string()];
    }
    selector
        .strip_prefix("kubernetes.io/service-name in (")
        .and_then(|rest| rest.strip_suffix(')'))
        .map(|list| list.split(',').map(|s| s.trim().to_string()).collect())
        .unwrap_or_default()
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
