"""Runs `socket-bridge --check-config` on what a rendered chart gives the container: the
ConfigMap's socket-bridge.toml as the config file, and the Deployment's environment with
every secretKeyRef resolved from the rendered Secret (or from --secret, the manifest of a
Secret the operator creates). Mounted secret files (the JWT public key) are written to a
temporary directory and the config's path rewritten to it.

Usage: chart_config_check.py BRIDGE_BIN RENDERED.yaml [--secret SECRET.yaml]
Exits with the bridge's status; prints its output.
"""

import argparse
import base64
import os
import subprocess
import sys
import tempfile

import yaml


def secret_data(secret):
    data = {k: base64.b64decode(v).decode() for k, v in (secret.get("data") or {}).items()}
    data.update(secret.get("stringData") or {})
    return data


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("bridge")
    parser.add_argument("rendered")
    parser.add_argument("--secret")
    args = parser.parse_args()
    with open(args.rendered) as f:
        docs = [d for d in yaml.safe_load_all(f) if d]
    if args.secret:
        with open(args.secret) as f:
            docs += [d for d in yaml.safe_load_all(f) if d]
    secrets = {d["metadata"]["name"]: secret_data(d) for d in docs if d["kind"] == "Secret"}
    configmaps = [d for d in docs if d["kind"] == "ConfigMap" and "socket-bridge.toml" in d.get("data", {})]
    (deployment,) = [d for d in docs if d["kind"] == "Deployment"]
    (configmap,) = configmaps
    pod = deployment["spec"]["template"]["spec"]
    (container,) = pod["containers"]

    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin")}
    for var in container.get("env", []):
        if "value" in var:
            env[var["name"]] = var["value"]
            continue
        ref = var["valueFrom"]["secretKeyRef"]
        value = secrets.get(ref["name"], {}).get(ref["key"])
        if value is None:
            if ref.get("optional"):
                continue
            print(f"env {var['name']}: Secret {ref['name']} has no key {ref['key']}")
            return 1
        env[var["name"]] = value

    with tempfile.TemporaryDirectory() as tmp:
        config = configmap["data"]["socket-bridge.toml"]
        # Mounted Secret volumes: write their files and point the config at them.
        volumes = {v["name"]: v for v in pod.get("volumes", [])}
        for mount in container.get("volumeMounts", []):
            source = volumes[mount["name"]].get("secret")
            if not source:
                continue
            data = secrets.get(source["secretName"], {})
            local = os.path.join(tmp, mount["name"])
            os.makedirs(local)
            for item in source.get("items", [{"key": k, "path": k} for k in data]):
                with open(os.path.join(local, item["path"]), "w") as f:
                    f.write(data[item["key"]])
            config = config.replace(mount["mountPath"], local)
        path = os.path.join(tmp, "socket-bridge.toml")
        with open(path, "w") as f:
            f.write(config)
        env["SOCKET_BRIDGE_CONFIG"] = path
        result = subprocess.run([args.bridge, "--check-config"], env=env, capture_output=True, text=True)
        sys.stdout.write(result.stdout)
        sys.stdout.write(result.stderr)
        return result.returncode


if __name__ == "__main__":
    sys.exit(main())
