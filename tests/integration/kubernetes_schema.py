"""Kubernetes objects checked against the Kubernetes API's own schema, with no cluster.

scripts/setup fetches the official OpenAPI (swagger 2.0) spec of one Kubernetes release,
pinned by version and checksum, into .cache/kubernetes/. Its definitions are JSON Schema
(draft 4) plus Kubernetes extensions; this module validates with Debian's python3-jsonschema
after two adjustments, the same ones kubeconform's strict schemas make:
  - strict: an object schema that declares its properties accepts no other
    (additionalProperties: false). The API server would silently drop a misspelled or
    misplaced field; here it is an error.
  - IntOrString (`port: admin` or `port: 9901`) accepts both, and Quantity (`cpu: 1` or
    `cpu: 250m`) a string or a number, as the API server does.

A missing spec or library raises AssertionError naming scripts/setup: the manifest test
fails on a machine that cannot validate, it never skips.
"""

import json
import os

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HERE))
SPEC_VERSION = "v1.22.3"
SPEC_PATH = os.path.join(REPO, ".cache", "kubernetes", f"swagger-{SPEC_VERSION}.json")

QUANTITY = "io.k8s.apimachinery.pkg.api.resource.Quantity"
INT_OR_STRING = {"oneOf": [{"type": "string"}, {"type": "integer"}]}


def _strict(node):
    """A copy of one swagger schema node with the adjustments above (recursive)."""
    if isinstance(node, list):
        return [_strict(n) for n in node]
    if not isinstance(node, dict):
        return node
    if node.get("format") == "int-or-string":
        return dict(INT_OR_STRING)
    out = {}
    for key, value in node.items():
        if key == "properties":
            # A map of field name -> schema: recurse into the schemas only, so that a field
            # that happens to be called "properties" (CRD schemas) is not taken for a keyword.
            out[key] = {name: _strict(schema) for name, schema in value.items()}
        elif key in ("items", "additionalProperties", "allOf", "anyOf", "oneOf", "not"):
            out[key] = _strict(value)
        else:
            out[key] = value
    if "properties" in out and "additionalProperties" not in out:
        out["additionalProperties"] = False
    return out


def _api_version(gvk):
    return f"{gvk['group']}/{gvk['version']}" if gvk["group"] else gvk["version"]


class KubernetesValidator:
    """Validates decoded manifests (dicts) by their apiVersion and kind."""

    def __init__(self, spec):
        from jsonschema import Draft4Validator  # checked importable by load_validator
        self._draft4 = Draft4Validator
        defs = {name: _strict(schema) for name, schema in spec["definitions"].items()}
        defs[QUANTITY] = {"oneOf": [{"type": "string"}, {"type": "number"}]}
        self._defs = defs
        self._by_kind = {}
        for name, schema in spec["definitions"].items():
            for gvk in schema.get("x-kubernetes-group-version-kind", []):
                self._by_kind.setdefault((_api_version(gvk), gvk["kind"]), name)
        self._validators = {}
        self.version = spec.get("info", {}).get("version", "?")

    def definition_of(self, api_version, kind):
        return self._by_kind.get((api_version, kind))

    def errors(self, obj):
        """Every schema violation of `obj` as 'path: message'; empty when valid."""
        if not isinstance(obj, dict):
            return [f"(root): expected an object, got {type(obj).__name__}"]
        api_version, kind = obj.get("apiVersion"), obj.get("kind")
        name = self.definition_of(api_version, kind)
        if name is None:
            return [f"(root): apiVersion {api_version!r} kind {kind!r} is no object of Kubernetes {self.version}"]
        validator = self._validators.get(name)
        if validator is None:
            validator = self._draft4({"$ref": f"#/definitions/{name}", "definitions": self._defs})
            self._validators[name] = validator
        found = sorted(validator.iter_errors(obj), key=lambda e: [str(p) for p in e.absolute_path])
        return [f"{'.'.join(str(p) for p in e.absolute_path) or '(root)'}: {e.message}" for e in found]


def load_validator(path=SPEC_PATH):
    try:
        import jsonschema  # noqa: F401
    except ImportError as e:
        raise AssertionError(f"python3-jsonschema is missing ({e}): run scripts/setup") from e
    if not os.path.isfile(path):
        raise AssertionError(f"{path} is missing: run scripts/setup (it fetches the Kubernetes {SPEC_VERSION} spec)")
    with open(path) as f:
        spec = json.load(f)
    validator = KubernetesValidator(spec)
    if validator.version != SPEC_VERSION:
        raise AssertionError(f"{path} is Kubernetes {validator.version}, expected {SPEC_VERSION}: run scripts/setup")
    return validator
