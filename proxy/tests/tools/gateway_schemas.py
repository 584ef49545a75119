#!/usr/bin/env python3
"""Extract the v1 OpenAPI schemas of Gateway API CRDs for the manifest tests.

Usage: gateway_schemas.py CRD_DIR OUT_DIR
CRD_DIR holds kubernetes-sigs/gateway-api's config/crd/experimental/*.yaml
(v1.6.1); OUT_DIR gets KIND.schema.json per kind, descriptions dropped (the
structure, types, enums, patterns and limits stay). CEL rules
(x-kubernetes-validations) are kept but not evaluated by the tests.
"""
import json
import pathlib
import sys

import yaml


def strip(node):
    if isinstance(node, dict):
        # A `description` that is text documents; one that is a schema is a field.
        return {k: strip(v) for k, v in node.items() if not (k == "description" and isinstance(v, str))}
    if isinstance(node, list):
        return [strip(v) for v in node]
    return node


def main(crd_dir, out_dir):
    out = pathlib.Path(out_dir)
    for kind in ["gatewayclasses", "gateways", "httproutes", "grpcroutes", "referencegrants"]:
        crd = yaml.safe_load(pathlib.Path(crd_dir, f"gateway.networking.k8s.io_{kind}.yaml").read_text())
        version = next(v for v in crd["spec"]["versions"] if v["name"] == "v1")
        schema = strip(version["schema"]["openAPIV3Schema"])
        (out / f"{kind}.schema.json").write_text(json.dumps(schema, indent=1, sort_keys=True) + "\n")


if __name__ == "__main__":
    main(*sys.argv[1:])
