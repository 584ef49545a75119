//! The stand-in API server (tests/utils/kube_api.rs) as a program, for
//! benchmarks that need Ingresses or Gateway API objects (bench/callgrind.py
//! --route regex|canary|httproute...).
//!
//!   cargo run --example fake_api -- DIR OBJECTS.json
//!
//! OBJECTS.json is a list of `{"resource": "ingresses", "object": {...}}`
//! (Gateway API kinds are served as installed CRDs when any is listed);
//! the kubeconfig is written to DIR/kubeconfig, then `ready` is printed. It
//! serves on 127.0.0.1 until killed (at most 10 minutes).

#[path = "../tests/utils/kube_api.rs"]
#[allow(dead_code)]
mod kube_api;

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (dir, objects) = (std::path::Path::new(&args[0]), &args[1]);
    let objects: Vec<serde_json::Value> =
        serde_json::from_str(&std::fs::read_to_string(objects).unwrap()).unwrap();
    let api = kube_api::FakeApiServer::start();
    if objects.iter().any(|o| {
        o["resource"]
            .as_str()
            .is_some_and(|r| r.contains("gateway") || r.ends_with("routes"))
    }) {
        api.install_gateway_api();
    }
    for o in objects {
        api.put(o["resource"].as_str().unwrap(), o["object"].clone());
    }
    api.kubeconfig(dir);
    println!("ready");
    std::thread::sleep(std::time::Duration::from_secs(600));
}
