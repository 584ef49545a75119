#!/usr/bin/env python3
"""Validate Gateway API objects against the v1.6.1 CRD schemas (fixtures/gateway-crds).

Usage: validate_gateway.py FILE...  (YAML; several documents each)
Exit 0 when every Gateway API object validates, else print each error and
exit 1. As `kubectl apply --validate=strict` does, a field the schema does
not know is an error (the API server would drop it). CEL rules
(x-kubernetes-validations) are not evaluated. Other kinds are skipped.
"""
import json
import pathlib
import sys

import jsonschema
import yaml

SCHEMAS = pathlib.Path(__file__).resolve().parent.parent / "fixtures" / "gateway-crds"
PLURAL = {
    "GatewayClass": "gatewayclasses",
    "Gateway": "gateways",
    "HTTPRoute": "httproutes",
    "GRPCRoute": "grpcroutes",
    "ReferenceGrant": "referencegrants",
}


def strict(node):
    """Known fields only, where the schema lists them."""
    if isinstance(node, dict):
        node = {k: strict(v) for k, v in node.items()}
        if "properties" in node and "additionalProperties" not in node and not node.get(
            "x-kubernetes-preserve-unknown-fields"
        ):
            node["additionalProperties"] = False
        return node
    if isinstance(node, list):
        return [strict(v) for v in node]
    return node


def main(files):
    errors = 0
    checked = 0
    for name in files:
        for doc in yaml.safe_load_all(pathlib.Path(name).read_text()):
            if not doc or doc.get("apiVersion") != "gateway.networking.k8s.io/v1":
                continue
            schema = json.loads((SCHEMAS / f"{PLURAL[doc['kind']]}.schema.json").read_text())
            # metadata is typed `object` only; the API server checks it apart.
            schema["properties"]["metadata"] = {"type": "object"}
            validator = jsonschema.Draft7Validator(strict(schema))
            checked += 1
            for e in validator.iter_errors(doc):
                path = ".".join(str(p) for p in e.absolute_path)
                print(f"{name}: {doc['kind']} {doc['metadata'].get('name')}: {path}: {e.message}")
                errors += 1
    if checked == 0:
        print("no Gateway API object found")
        return 1
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
