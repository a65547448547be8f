"""Validates rendered Kubernetes manifests offline, strictly (unknown fields are errors).

Built-in kinds are checked against the Kubernetes API JSON schemas bundled in the
kubernetes-validate package (for each --k8s-version); custom resources against the
openAPIV3Schema of the CustomResourceDefinitions given with --crd. A kind with no schema is
an error, never a silent pass.

Usage: validate_manifests.py --k8s-version 1.25.0 [--k8s-version ...] [--crd CRD.yaml ...]
       MANIFEST.yaml ...
Prints one line per resource and version; exits 1 if any resource fails.
"""

import argparse
import copy
import sys

import jsonschema
import kubernetes_validate
import yaml
from kubernetes_validate.utils import SchemaNotFoundError


def strict_openapi(schema):
    """An openAPIV3Schema as JSON Schema, with the API server's strictness: objects with
    declared properties refuse unknown fields (unless marked to keep them), int-or-string and
    nullable are spelled out."""
    schema = copy.deepcopy(schema)

    def walk(node):
        if not isinstance(node, dict):
            return
        if node.pop("x-kubernetes-int-or-string", False):
            node.pop("type", None)
            node["anyOf"] = [{"type": "integer"}, {"type": "string"}]
        if node.pop("nullable", False) and "type" in node:
            node["type"] = [node["type"], "null"]
        preserve = node.get("x-kubernetes-preserve-unknown-fields", False)
        if "properties" in node and "additionalProperties" not in node and not preserve:
            node["additionalProperties"] = False
        for key in ("properties", "patternProperties"):
            for child in node.get(key, {}).values():
                walk(child)
        for key in ("items", "additionalProperties", "not"):
            walk(node.get(key))
        for key in ("allOf", "anyOf", "oneOf"):
            for child in node.get(key, []):
                walk(child)

    walk(schema)
    return schema


def load_crds(paths):
    """(apiVersion, kind) -> JSON schema, from CRD manifests."""
    schemas = {}
    for path in paths:
        with open(path) as f:
            for crd in yaml.safe_load_all(f):
                if not crd or crd.get("kind") != "CustomResourceDefinition":
                    continue
                group, kind = crd["spec"]["group"], crd["spec"]["names"]["kind"]
                for version in crd["spec"]["versions"]:
                    schema = strict_openapi(version["schema"]["openAPIV3Schema"])
                    # apiVersion, kind and metadata are checked by the API server itself.
                    schema.setdefault("properties", {})
                    schema["properties"]["metadata"] = {"type": "object"}
                    schemas[(f"{group}/{version['name']}", kind)] = schema
    return schemas


def resources(paths):
    for path in paths:
        with open(path) as f:
            for doc in yaml.safe_load_all(f):
                if doc:
                    yield path, doc


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--k8s-version", action="append", required=True)
    parser.add_argument("--crd", action="append", default=[])
    parser.add_argument("manifests", nargs="+")
    args = parser.parse_args()
    crds = load_crds(args.crd)
    failures = checked = 0
    for path, doc in resources(args.manifests):
        name = f"{path}: {doc.get('kind')}/{doc.get('metadata', {}).get('name')}"
        key = (doc.get("apiVersion"), doc.get("kind"))
        if key in crds:
            errors = sorted(
                jsonschema.Draft202012Validator(crds[key]).iter_errors(doc),
                key=lambda e: list(e.path),
            )
            checked += 1
            for e in errors:
                failures += 1
                print(f"FAIL {name} (CRD {key[0]}): {'.'.join(map(str, e.path))}: {e.message}")
            if not errors:
                print(f"ok   {name} (CRD {key[0]})")
            continue
        for version in args.k8s_version:
            checked += 1
            try:
                kubernetes_validate.validate(doc, version, strict=True)
                print(f"ok   {name} (Kubernetes {version})")
            except kubernetes_validate.ValidationError as e:
                failures += 1
                print(f"FAIL {name} (Kubernetes {version}): {'.'.join(map(str, e.path))}: {e.message}")
            except SchemaNotFoundError as e:
                failures += 1
                print(f"FAIL {name}: no schema: {e.message}")
    print(f"{checked} checks, {failures} failed")
    return 1 if failures or not checked else 0


if __name__ == "__main__":
    sys.exit(main())
