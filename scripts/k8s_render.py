#!/usr/bin/env python3
"""Render a kustomization offline, without kubectl or kustomize: the small subset k8s/ uses.

Supported: `resources:` (YAML files, and directories holding a kustomization.yaml, rendered recursively) and
`images:` (name, newName, newTag, digest: rewrites matching `image:` fields of pod templates' containers and init
containers). Any other key in a kustomization fails loudly rather than being ignored, so the check never validates
something other than what `kubectl apply -k` would apply; teach this renderer the key before using it.

Like kustomize: resources keep their order; inner kustomizations are fully rendered (their own images applied) before
the outer one's images apply; a resource may be listed only once (the same kind/name twice is an error); no path may
lead back into a directory already being rendered.

Usage: k8s_render.py DIR > rendered.yaml   (needs PyYAML)
"""

import os
import sys

import yaml

KUSTOMIZATION_FILES = ("kustomization.yaml", "kustomization.yml", "Kustomization")
SUPPORTED_KEYS = {"apiVersion", "kind", "resources", "images"}
IMAGE_KEYS = {"name", "newName", "newTag", "digest"}


class RenderError(Exception):
    pass


def kustomization_file(directory):
    found = [f for f in KUSTOMIZATION_FILES if os.path.isfile(os.path.join(directory, f))]
    if len(found) != 1:
        raise RenderError(f"{directory}: expected exactly one of {', '.join(KUSTOMIZATION_FILES)}, found {found or 'none'}")
    return os.path.join(directory, found[0])


def split_image(image):
    """`registry:5000/a/b:tag@sha256:x` -> ("registry:5000/a/b", ":tag", "@sha256:x")."""
    name, digest = (image.split("@", 1) + [""])[:2]
    digest = "@" + digest if digest else ""
    tag = ""
    slash = name.rfind("/")
    colon = name.rfind(":")
    if colon > slash:
        name, tag = name[:colon], name[colon:]
    return name, tag, digest


def pod_specs(doc):
    """The pod specs of a workload (Pod, Deployment, StatefulSet, DaemonSet, ReplicaSet, Job, CronJob)."""
    spec = doc.get("spec") or {}
    kind = doc.get("kind")
    if kind == "Pod":
        return [spec]
    if kind == "CronJob":
        spec = ((spec.get("jobTemplate") or {}).get("spec")) or {}
    template = spec.get("template")
    if isinstance(template, dict) and isinstance(template.get("spec"), dict):
        return [template["spec"]]
    return []


def containers(doc):
    for spec in pod_specs(doc):
        for key in ("initContainers", "containers"):
            for container in spec.get(key) or []:
                yield container


def apply_images(docs, images, where):
    for entry in images:
        unknown = set(entry) - IMAGE_KEYS
        if unknown or "name" not in entry:
            raise RenderError(f"{where}: images entry {entry}: needs `name`, knows only {sorted(IMAGE_KEYS)}")
    for doc in docs:
        for container in containers(doc):
            name, tag, digest = split_image(str(container.get("image", "")))
            for entry in images:
                if entry["name"] != name:
                    continue
                new_name = entry.get("newName", name)
                if "digest" in entry:
                    tag, digest = "", "@" + entry["digest"]
                elif "newTag" in entry:
                    tag, digest = ":" + str(entry["newTag"]), ""
                container["image"] = new_name + tag + digest
                break


def load_yaml_file(path):
    with open(path) as f:
        try:
            return [d for d in yaml.safe_load_all(f) if d is not None]
        except yaml.YAMLError as e:
            raise RenderError(f"{path}: {e}")


def render(directory, visiting=()):
    directory = os.path.realpath(directory)
    for root in visiting:
        if directory == root or root.startswith(directory + os.sep):
            raise RenderError(f"{directory}: cycle with {root} (kustomize refuses a root inside another it builds)")
    visiting = visiting + (directory,)
    path = kustomization_file(directory)
    [k] = load_yaml_file(path) or [{}]
    unknown = set(k) - SUPPORTED_KEYS
    if unknown:
        raise RenderError(f"{path}: unsupported key(s) {sorted(unknown)}: k8s_render.py knows {sorted(SUPPORTED_KEYS)}")
    docs = []
    for resource in k.get("resources") or []:
        target = os.path.normpath(os.path.join(directory, resource))
        if os.path.isdir(target):
            docs.extend(render(target, visiting))
        elif os.path.isfile(target):
            for doc in load_yaml_file(target):
                if not isinstance(doc, dict) or "kind" not in doc or "apiVersion" not in doc:
                    raise RenderError(f"{target}: a document without kind/apiVersion")
                docs.append(doc)
        else:
            raise RenderError(f"{path}: resource {resource} does not exist")
    seen = set()
    for doc in docs:
        key = (doc.get("apiVersion"), doc.get("kind"), (doc.get("metadata") or {}).get("namespace"),
               (doc.get("metadata") or {}).get("name"))
        if key in seen:
            raise RenderError(f"{path}: {key[1]}/{key[3]} defined twice")
        seen.add(key)
    apply_images(docs, k.get("images") or [], path)
    return docs


def dump(docs):
    return yaml.safe_dump_all(docs, sort_keys=False, default_flow_style=False)


def main(argv):
    if len(argv) != 2:
        print(__doc__, file=sys.stderr)
        return 2
    try:
        sys.stdout.write(dump(render(argv[1])))
    except RenderError as e:
        print(f"k8s_render: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
