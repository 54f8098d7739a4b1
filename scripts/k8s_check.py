#!/usr/bin/env python3
"""The part of `make k8s-check` (scripts/k8s-check.sh) that needs the binaries: checks the rendered manifests
against what the issue requires of them, and the environment every pod would get against the binaries' own
configuration parsing (`reinado-node check-config`, `reinado-proxy check-config`).

  k8s_check.py images K1 K2 ...             the `images:` lists of these kustomization files are equal
  k8s_check.py check RENDERED [RENDERED...]  structure + environment of each rendered file
  k8s_check.py selftest RENDERED            deliberate mistakes must fail the check (its teeth)

The environment is built the way the kubelet builds it: service links (unless enableServiceLinks is false),
then envFrom (ConfigMaps), then env in order, expanding $(VAR) from what is defined so far (`$$` escapes, an
unknown reference stays as written), with the downward API's metadata.name and metadata.namespace; HOSTNAME is
the pod name. Each pod's environment is then run, alone (`env -i`), through `check-config`.

Options (before the subcommand's arguments): --node-bin PATH, --proxy-bin PATH (default target/debug/...),
--verbose (print each environment and parsed configuration). Needs PyYAML (scripts/k8s-check.sh provides a venv).
"""

import copy
import os
import re
import subprocess
import sys

import yaml

NAMESPACE = "default"
PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
NODE = "reinado-node"  # the StatefulSet, its headless Service and its PDB
PROXY = "reinado-proxy"  # the Deployment and its Service
UID = 65532
# Pods whose environment is checked, as ordinals beyond the initial ones: replicas (the first scale-up) must join.
EXTRA_ORDINALS = 1


# Off while the self-test runs the check on mutated copies: only its verdicts are printed.
QUIET = False


class CheckError(Exception):
    pass


def say(msg):
    if not QUIET:
        print(msg)


def fail(msg):
    raise CheckError(msg)


def expect(cond, msg):
    if not cond:
        fail(msg)


# ---------------------------------------------------------------------------------------------------------------
# Looking things up in the rendered documents.


def find(docs, kind, name):
    found = [d for d in docs if d.get("kind") == kind and (d.get("metadata") or {}).get("name") == name]
    expect(len(found) == 1, f"expected exactly one {kind}/{name}, found {len(found)}")
    return found[0]


def matches(selector, labels):
    """A Service selector (a map) or a LabelSelector's matchLabels against labels (no matchExpressions here)."""
    if selector is None:
        return False
    if "matchLabels" in selector or "matchExpressions" in selector:
        expect(not selector.get("matchExpressions"), "matchExpressions are not supported by the check")
        selector = selector.get("matchLabels") or {}
    return bool(selector) and all(labels.get(k) == v for k, v in selector.items())


def pod_template(workload):
    return workload["spec"]["template"]


def only_container(workload):
    containers = pod_template(workload)["spec"]["containers"]
    expect(len(containers) == 1, f"{workload['kind']}/{workload['metadata']['name']}: expected one container")
    return containers[0]


def container_port(container, port):
    """A Service targetPort or probe port (a number or a port name) as a number, checking it is declared."""
    ports = container.get("ports") or []
    if isinstance(port, str):
        named = [p["containerPort"] for p in ports if p.get("name") == port]
        expect(len(named) == 1, f"container {container['name']}: no port named {port}")
        return named[0]
    expect(any(p["containerPort"] == port for p in ports), f"container {container['name']}: port {port} not declared")
    return port


# ---------------------------------------------------------------------------------------------------------------
# The kubelet's environment.


def expand(value, env):
    """Kubernetes' $(VAR) expansion: `$$` is `$`, `$(NAME)` is NAME's value if defined, else kept as written."""
    out, i = [], 0
    while i < len(value):
        c = value[i]
        if c == "$" and i + 1 < len(value):
            nxt = value[i + 1]
            if nxt == "$":
                out.append("$")
                i += 2
                continue
            if nxt == "(":
                end = value.find(")", i + 2)
                if end != -1:
                    name = value[i + 2:end]
                    out.append(env[name] if name in env else value[i:end + 1])
                    i = end + 1
                    continue
        out.append(c)
        i += 1
    return "".join(out)


def service_links(docs):
    """The variables the kubelet adds for each Service with a cluster IP in the namespace (docker-link style)."""
    env = {}
    ip = 1
    services = [("kubernetes", [{"port": 443, "protocol": "TCP", "name": "https"}])]
    for d in docs:
        if d.get("kind") == "Service" and (d.get("spec") or {}).get("clusterIP") != "None":
            services.append((d["metadata"]["name"], d["spec"].get("ports") or []))
    for name, ports in services:
        prefix = name.upper().replace("-", "_")
        host = f"10.96.0.{ip}"
        ip += 1
        if not ports:
            continue
        first = ports[0]
        env[f"{prefix}_SERVICE_HOST"] = host
        env[f"{prefix}_SERVICE_PORT"] = str(first["port"])
        env[f"{prefix}_PORT"] = f"{first.get('protocol', 'TCP').lower()}://{host}:{first['port']}"
        for p in ports:
            proto = p.get("protocol", "TCP")
            if p.get("name"):
                env[f"{prefix}_SERVICE_PORT_{p['name'].upper().replace('-', '_')}"] = str(p["port"])
            base = f"{prefix}_PORT_{p['port']}_{proto}"
            env[base] = f"{proto.lower()}://{host}:{p['port']}"
            env[f"{base}_PROTO"] = proto.lower()
            env[f"{base}_PORT"] = str(p["port"])
            env[f"{base}_ADDR"] = host
    return env


def kubernetes_only(links):
    return {k: v for k, v in links.items() if k.startswith("KUBERNETES_")}


def config_map(docs, name, optional):
    found = [d for d in docs if d.get("kind") == "ConfigMap" and d["metadata"]["name"] == name]
    if not found:
        expect(optional, f"ConfigMap {name} is referenced but not defined (the pod would not start)")
        return {}
    return {k: str(v) for k, v in (found[0].get("data") or {}).items()}


def field_ref(path, pod_name):
    values = {"metadata.name": pod_name, "metadata.namespace": NAMESPACE}
    expect(path in values, f"fieldRef {path}: not modelled by the check (teach scripts/k8s_check.py)")
    return values[path]


def pod_env(docs, workload, pod_name):
    """The environment of the workload's (only) container in pod `pod_name`, in the kubelet's order."""
    spec = pod_template(workload)["spec"]
    container = only_container(workload)
    links = service_links(docs)
    links = links if spec.get("enableServiceLinks", True) is not False else kubernetes_only(links)
    env = {}
    for source in container.get("envFrom") or []:
        expect(set(source) <= {"configMapRef", "prefix"}, f"envFrom {source}: only configMapRef is modelled")
        ref = source["configMapRef"]
        for k, v in config_map(docs, ref["name"], ref.get("optional", False)).items():
            key = source.get("prefix", "") + k
            expect(re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", key), f"ConfigMap {ref['name']}: `{key}` is no variable")
            env[key] = v
    for entry in container.get("env") or []:
        name = entry["name"]
        if "value" in entry:
            env[name] = expand(str(entry["value"]), {**links, **env})
        elif "valueFrom" in entry:
            source = entry["valueFrom"]
            if "fieldRef" in source:
                env[name] = field_ref(source["fieldRef"]["fieldPath"], pod_name)
            elif "configMapKeyRef" in source:
                ref = source["configMapKeyRef"]
                data = config_map(docs, ref["name"], ref.get("optional", False))
                expect(ref["key"] in data or ref.get("optional"), f"{name}: ConfigMap {ref['name']} has no {ref['key']}")
                if ref["key"] in data:
                    env[name] = data[ref["key"]]
            else:
                fail(f"{name}: valueFrom {sorted(source)} is not modelled by the check")
        else:
            env[name] = ""
    for k, v in links.items():
        env.setdefault(k, v)
    return env


def run_check_config(binary, hostname, env):
    """`env -i PATH=... HOSTNAME=... VARS... BINARY check-config`: (exit code, stdout, stderr)."""
    args = ["env", "-i", f"PATH={PATH}", f"HOSTNAME={hostname}"] + [f"{k}={v}" for k, v in env.items()]
    p = subprocess.run(args + [os.path.abspath(binary), "check-config"], capture_output=True, text=True)
    return p.returncode, p.stdout, p.stderr


def accepted_config(binary, pod, env, verbose):
    """The configuration `binary check-config` prints for `pod`'s environment, which it must accept."""
    code, out, err = run_check_config(binary, pod, env)
    if verbose:
        print(f"--- {pod}: {env}\n{out}{err}")
    program = os.path.basename(binary)
    expect(code == 0, f"{pod}: `{program} check-config` refused its environment (exit {code}): {err.strip()}")
    return out


def debug_field(out, name):
    """A scalar field of `{:#?}` output: `name: value,` (quotes removed)."""
    m = re.search(rf"^\s*{name}: (.*?),?$", out, re.M)
    expect(m, f"no `{name}` in the printed configuration:\n{out}")
    return m.group(1).strip().strip('"')


# ---------------------------------------------------------------------------------------------------------------
# The checks.


def check_security(workload, uid=None):
    what = f"{workload['kind']}/{workload['metadata']['name']}"
    pod_sc = pod_template(workload)["spec"].get("securityContext") or {}
    for c in pod_template(workload)["spec"]["containers"]:
        sc = {**pod_sc, **(c.get("securityContext") or {})}
        where = f"{what} container {c['name']}"
        expect(sc.get("runAsNonRoot") is True, f"{where}: runAsNonRoot must be true")
        expect((sc.get("seccompProfile") or {}).get("type") == "RuntimeDefault", f"{where}: seccomp RuntimeDefault")
        csc = c.get("securityContext") or {}
        expect(csc.get("readOnlyRootFilesystem") is True, f"{where}: readOnlyRootFilesystem must be true")
        expect(csc.get("allowPrivilegeEscalation") is False, f"{where}: allowPrivilegeEscalation must be false")
        expect((csc.get("capabilities") or {}).get("drop") == ["ALL"], f"{where}: must drop ALL capabilities")
        expect(not (csc.get("capabilities") or {}).get("add"), f"{where}: adds capabilities")
        if uid is not None:
            for key in ("runAsUser", "runAsGroup"):
                expect(sc.get(key) == uid, f"{where}: {key} must be {uid}")
            expect(pod_sc.get("fsGroup") == uid, f"{what}: fsGroup must be {uid}")
        res = c.get("resources") or {}
        for kind in ("requests", "limits"):
            for r in ("cpu", "memory"):
                expect(r in (res.get(kind) or {}), f"{where}: resources.{kind}.{r} missing")


def check_pdb(docs, workload, max_unavailable):
    labels = pod_template(workload)["metadata"]["labels"]
    pdbs = [d for d in docs if d.get("kind") == "PodDisruptionBudget" and matches(d["spec"].get("selector"), labels)]
    expect(len(pdbs) == 1, f"{workload['metadata']['name']}: expected one PodDisruptionBudget for its pods")
    expect(pdbs[0]["spec"].get("maxUnavailable") == max_unavailable,
           f"PodDisruptionBudget {pdbs[0]['metadata']['name']}: maxUnavailable must be {max_unavailable}")


def grpc_probe(container, kind):
    probe = container.get(kind)
    expect(probe and "grpc" in probe, f"container {container['name']}: {kind} must be a native gRPC probe")
    return probe["grpc"].get("port"), probe["grpc"].get("service", "")


def check_nodes(docs, verbose):
    sts = find(docs, "StatefulSet", NODE)
    spec = sts["spec"]
    replicas = spec.get("replicas")
    expect(replicas == 3, f"StatefulSet {NODE}: replicas must be 3, not {replicas}")
    expect(spec.get("podManagementPolicy") == "Parallel", f"StatefulSet {NODE}: podManagementPolicy must be Parallel")
    labels = pod_template(sts)["metadata"]["labels"]
    expect(matches(spec["selector"], labels), f"StatefulSet {NODE}: its selector does not match its pods")
    svc = find(docs, "Service", spec["serviceName"])
    expect(svc["spec"].get("clusterIP") == "None", f"Service {svc['metadata']['name']}: must be headless")
    expect(svc["spec"].get("publishNotReadyAddresses") is True,
           f"Service {svc['metadata']['name']}: publishNotReadyAddresses must be true")
    expect(matches(svc["spec"].get("selector"), labels), f"Service {svc['metadata']['name']}: selects no node pod")
    c = only_container(sts)
    svc_ports = {p["port"]: container_port(c, p.get("targetPort", p["port"])) for p in svc["spec"]["ports"]}
    check_pdb(docs, sts, 1)
    check_security(sts, UID)

    # Probes: started and alive on "", ready on the Kv service, all on the client port.
    client_port = None
    for kind, service in (("startupProbe", ""), ("livenessProbe", ""), ("readinessProbe", "reinado.v1.Kv")):
        port, got = grpc_probe(c, kind)
        expect(got == service, f"{NODE} {kind}: service must be {service!r}, not {got!r}")
        port = container_port(c, port)
        expect(client_port in (None, port), f"{NODE}: the probes use different ports")
        client_port = port

    # The data volume: a claim template, mounted where REINADO_DATA_DIR points.
    claims = {t["metadata"]["name"] for t in spec.get("volumeClaimTemplates") or []}
    mounts = {m["mountPath"]: m["name"] for m in c.get("volumeMounts") or []}

    for ordinal in range(replicas + EXTRA_ORDINALS):
        pod = f"{NODE}-{ordinal}"
        env = pod_env(docs, sts, pod)
        out = accepted_config(NODE_BIN, pod, env, verbose)
        node_id = int(debug_field(out, "node_id"))
        expect(node_id == ordinal + 1, f"{pod}: node id {node_id}, expected {ordinal + 1}")
        client_listen = debug_field(out, "client_listen")
        peer_listen = debug_field(out, "peer_listen")
        expect(client_listen == f"0.0.0.0:{client_port}", f"{pod}: listens for clients on {client_listen}")
        peer_port = int(peer_listen.rsplit(":", 1)[1])
        expect(peer_listen == f"0.0.0.0:{peer_port}", f"{pod}: listens for peers on {peer_listen}")
        dns = f"{pod}.{svc['metadata']['name']}"
        for field, port in (("advertise_client_addr", client_port), ("advertise_peer_addr", peer_port)):
            got = debug_field(out, field)
            expect(got == f"{dns}:{port}", f"{pod}: {field} is {got}, expected {dns}:{port}")
            expect(svc_ports.get(port) == port, f"{pod}: the headless Service does not expose port {port}")
        data_dir = debug_field(out, "data_dir")
        expect(mounts.get(data_dir) in claims, f"{pod}: data dir {data_dir} is not a volumeClaimTemplate's mount")
        start = re.search(r"^\s*start: (Bootstrap|Join)\(\s*(.*?)^\s*\),$", out, re.M | re.S)
        expect(start, f"{pod}: no `start` in the printed configuration:\n{out}")
        if ordinal < replicas:
            expect(start.group(1) == "Bootstrap", f"{pod}: an initial member must bootstrap, not {start.group(1)}")
            ids = sorted(int(i) for i in re.findall(r"^\s*(\d+): ", start.group(2), re.M))
            expect(ids == list(range(1, replicas + 1)),
                   f"{pod}: bootstraps members {ids}, but the StatefulSet starts {replicas} (REINADO_PEERS)")
        else:
            expect(start.group(1) == "Join", f"{pod}: a scaled-up pod (id {node_id}) must join, not {start.group(1)}")
            target = start.group(2).strip().strip('",\n ')
            host, port = target.rsplit(":", 1)
            proxy_svc = find(docs, "Service", host)
            expect(any(p["port"] == int(port) for p in proxy_svc["spec"]["ports"]),
                   f"{pod}: joins through {target}, but Service {host} has no port {port}")
        say(f"k8s-check: {pod}: node {node_id}, {start.group(1).lower()}, data in {data_dir}")
    return sts, client_port


def check_proxies(docs, sts, node_client_port, verbose):
    dep = find(docs, "Deployment", PROXY)
    expect(dep["spec"].get("replicas") == 2, f"Deployment {PROXY}: replicas must be 2")
    labels = pod_template(dep)["metadata"]["labels"]
    expect(matches(dep["spec"]["selector"], labels), f"Deployment {PROXY}: its selector does not match its pods")
    svc = find(docs, "Service", PROXY)
    expect(matches(svc["spec"].get("selector"), labels), f"Service {PROXY}: selects no proxy pod")
    c = only_container(dep)
    ports = {p["port"]: container_port(c, p.get("targetPort", p["port"])) for p in svc["spec"]["ports"]}
    expect(7000 in ports, f"Service {PROXY}: must expose port 7000")
    check_security(dep, UID)
    check_pdb(docs, dep, 1)
    port, service = grpc_probe(c, "readinessProbe")
    expect(service == "" and container_port(c, port) == ports[7000],
           f"{PROXY} readinessProbe: must be the proxy's health (service \"\") on its port")
    expect(c.get("livenessProbe"), f"{PROXY}: no livenessProbe")

    pod = f"{PROXY}-5d8f7c9b6-x2x7q"
    env = pod_env(docs, dep, pod)
    out = accepted_config(PROXY_BIN, pod, env, verbose)
    listen = debug_field(out, "listen")
    expect(listen == f"0.0.0.0:{ports[7000]}", f"{PROXY}: listens on {listen}, the Service sends to {ports[7000]}")
    nodes = re.findall(r'^\s*"([^"]+)",$', out.split("nodes:", 1)[1].split("]", 1)[0], re.M)
    headless = sts["spec"]["serviceName"]
    expected = [f"{NODE}-{i}.{headless}:{node_client_port}" for i in range(sts["spec"]["replicas"])]
    expect(nodes == expected, f"{PROXY}: REINADO_NODES is {nodes}, expected the initial members {expected}")
    say(f"k8s-check: {PROXY}: listens on {listen}, seeds {len(nodes)} nodes")


def check_rendered(docs, verbose=False):
    sts, client_port = check_nodes(docs, verbose)
    check_proxies(docs, sts, client_port, verbose)
    for d in docs:
        if d.get("kind") in ("Deployment", "StatefulSet") and d["metadata"]["name"] not in (NODE, PROXY):
            check_security(d)  # Jaeger: restricted too, with its image's own uid


def load(path):
    with open(path) as f:
        return [d for d in yaml.safe_load_all(f) if d is not None]


def cmd_images(paths):
    lists = [load(p)[0].get("images") for p in paths]
    for p, images in zip(paths[1:], lists[1:]):
        expect(images == lists[0], f"the images: of {p} differ from {paths[0]}'s: keep them equal")
    print(f"k8s-check: images: equal in {', '.join(paths)}")


def cmd_check(paths, verbose):
    for path in paths:
        print(f"k8s-check: {path}")
        check_rendered(load(path), verbose)


def must_fail(what, fn):
    try:
        fn()
    except CheckError as e:
        print(f"k8s-check: self-test: {what}: rejected ({str(e).splitlines()[0][:160]})")
        return
    fail(f"self-test: {what}: the check accepted it; it has lost its teeth")


def cmd_selftest(path):
    global QUIET
    QUIET = True
    docs = load(path)
    sts = find(docs, "StatefulSet", NODE)

    # A typo in a variable's name, in a copy of the rendered environment: the binary itself must refuse it.
    env = pod_env(docs, sts, f"{NODE}-0")
    expect("REINADO_DATA_DIR" in env, "self-test: pod 0 has no REINADO_DATA_DIR to misspell")
    typo = {("REINADO_DATA_DIRR" if k == "REINADO_DATA_DIR" else k): v for k, v in env.items()}
    code, _, err = run_check_config(NODE_BIN, f"{NODE}-0", typo)
    expect(code == 2 and "REINADO_DATA_DIRR" in err,
           f"self-test: REINADO_DATA_DIRR was not refused naming it (exit {code}): {err.strip()}")
    print(f"k8s-check: self-test: REINADO_DATA_DIRR: refused ({err.strip()[:120]})")

    def mutated(change):
        copy_ = copy.deepcopy(docs)
        change(copy_)
        return lambda: check_rendered(copy_)

    def service_links_on(d):
        del pod_template(find(d, "StatefulSet", NODE))["spec"]["enableServiceLinks"]

    def peers_short(d):
        cm = find(d, "ConfigMap", "reinado-node-config")["data"]
        cm["REINADO_PEERS"] = cm["REINADO_PEERS"].rsplit(",", 1)[0]  # reinado-node-2 would join, not bootstrap

    def peers_typo(d):
        cm = find(d, "ConfigMap", "reinado-node-config")["data"]
        cm["REINADO_PEERS"] = cm["REINADO_PEERS"].replace("reinado-node-1.", "reinado-node1.")

    def data_elsewhere(d):
        c = only_container(find(d, "StatefulSet", NODE))
        next(e for e in c["env"] if e["name"] == "REINADO_DATA_DIR")["value"] = "/var/lib/reinado"

    def env_before_pod_name(d):
        c = only_container(find(d, "StatefulSet", NODE))
        c["env"].append(c["env"].pop(0))  # POD_NAME last: $(POD_NAME) no longer expands

    def readiness_on_empty(d):
        del only_container(find(d, "StatefulSet", NODE))["readinessProbe"]["grpc"]["service"]

    def root_filesystem(d):
        only_container(find(d, "Deployment", PROXY))["securityContext"]["readOnlyRootFilesystem"] = False

    for what, change in (
        ("service links injected (REINADO_PROXY_SERVICE_HOST...)", service_links_on),
        ("REINADO_PEERS without reinado-node-2", peers_short),
        ("a typo in a REINADO_PEERS host", peers_typo),
        ("REINADO_DATA_DIR outside the volume", data_elsewhere),
        ("POD_NAME defined after its use", env_before_pod_name),
        ("node readiness on service \"\"", readiness_on_empty),
        ("a writable root filesystem", root_filesystem),
    ):
        must_fail(what, mutated(change))


def main(argv):
    global NODE_BIN, PROXY_BIN
    args = argv[1:]
    verbose = False
    NODE_BIN, PROXY_BIN = "target/debug/reinado-node", "target/debug/reinado-proxy"
    while args and args[0].startswith("--"):
        opt = args.pop(0)
        if opt == "--verbose":
            verbose = True
        elif opt in ("--node-bin", "--proxy-bin") and args:
            value = args.pop(0)
            if opt == "--node-bin":
                NODE_BIN = value
            else:
                PROXY_BIN = value
        else:
            print(__doc__, file=sys.stderr)
            return 2
    if len(args) < 2 or args[0] not in ("images", "check", "selftest"):
        print(__doc__, file=sys.stderr)
        return 2
    try:
        if args[0] == "images":
            cmd_images(args[1:])
        elif args[0] == "check":
            cmd_check(args[1:], verbose)
        else:
            cmd_selftest(args[1])
    except CheckError as e:
        print(f"k8s-check: FAILED: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
