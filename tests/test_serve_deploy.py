"""deploy/: the Kubernetes manifest probes /health, and the container's command line is
one `hearthlm serve` accepts (the files themselves need Docker / a cluster to run)."""
import argparse
import json
import os
import re

import yaml

from hearthlm.serve import command

DEPLOY = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "deploy")


def test_container_and_kubernetes_command_lines_parse():
    with open(os.path.join(DEPLOY, "Dockerfile")) as f:
        entrypoint = json.loads(re.search(r"^ENTRYPOINT (\[.*\])$", f.read(), re.M).group(1))
    with open(os.path.join(DEPLOY, "kubernetes.yaml")) as f:
        docs = {d["kind"]: d for d in yaml.safe_load_all(f)}
    container = docs["Deployment"]["spec"]["template"]["spec"]["containers"][0]
    assert entrypoint[:2] == ["hearthlm", "serve"]
    p = argparse.ArgumentParser()
    command.add_arguments(p)
    args = p.parse_args(entrypoint[2:] + container["args"])
    assert args.host == "0.0.0.0" and args.model == "/models/model"
    assert container["readinessProbe"]["httpGet"]["path"] == "/health"
    assert container["env"][0]["name"] == command.API_KEY_ENV
    annotations = docs["Ingress"]["metadata"]["annotations"]
    assert annotations["nginx.ingress.kubernetes.io/upstream-hash-by"] == "$http_x_session_id"
