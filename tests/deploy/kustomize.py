"""A small `kustomize build` for our k8s/ tree, so the tests do not need kubectl.

It implements what k8s/ uses: ``resources`` (files and directories), ``components``, ``namespace``, ``labels``
(``includeSelectors: false``: metadata only), ``images`` (name -> newName/newTag) and ``patches`` with a ``path``
(strategic merge: maps merged, ``null`` deletes a key, lists of containers/volumes/env merged by name, ports by
containerPort, volumeMounts by mountPath, every other list replaced). Anything else raises, so a kustomization
that grows a feature this renderer lacks fails loudly instead of rendering wrongly.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import yaml

SUPPORTED = {"apiVersion", "kind", "resources", "components", "namespace", "labels", "images", "patches"}
MERGE_KEYS = {"containers": "name", "initContainers": "name", "volumes": "name", "env": "name",
              "volumeMounts": "mountPath", "ports": "containerPort"}
CLUSTER_SCOPED = {"Namespace", "ClusterRole", "ClusterRoleBinding", "PersistentVolume", "StorageClass",
                  "CustomResourceDefinition"}


def load_documents(path: Path) -> list[dict]:
    return [doc for doc in yaml.safe_load_all(path.read_text()) if doc]


def key(obj: dict) -> tuple[str, str]:
    return obj["kind"], obj["metadata"].get("name") or obj["metadata"].get("generateName", "")


def strategic_merge(base: Any, patch: Any, field: str = "") -> Any:
    if isinstance(base, dict) and isinstance(patch, dict):
        merged = dict(base)
        for name, value in patch.items():
            if value is None:
                merged.pop(name, None)
            elif name in merged:
                merged[name] = strategic_merge(merged[name], value, name)
            else:
                merged[name] = copy.deepcopy(value)
        return merged
    if isinstance(base, list) and isinstance(patch, list) and field in MERGE_KEYS:
        merge_key = MERGE_KEYS[field]
        merged = [copy.deepcopy(item) for item in base]
        for item in patch:
            index = next((i for i, old in enumerate(merged) if old.get(merge_key) == item.get(merge_key)), None)
            if index is None:
                merged.append(copy.deepcopy(item))
            else:
                merged[index] = strategic_merge(merged[index], item, field)
        return merged
    return copy.deepcopy(patch)


def _set_images(node: Any, images: list[dict]) -> None:
    if isinstance(node, dict):
        for field in ("containers", "initContainers"):
            for container in node.get(field, []) if isinstance(node.get(field), list) else []:
                name, _, tag = container["image"].partition(":")
                for rule in images:
                    if rule["name"] == name:
                        container["image"] = f"{rule.get('newName', name)}:{rule.get('newTag', tag or 'latest')}"
        for value in node.values():
            _set_images(value, images)
    elif isinstance(node, list):
        for value in node:
            _set_images(value, images)


def build(directory: Path) -> list[dict]:
    """The objects ``kustomize build directory`` would print (order aside)."""
    directory = Path(directory)
    kustomization = yaml.safe_load((directory / "kustomization.yaml").read_text())
    unknown = set(kustomization) - SUPPORTED
    if unknown:
        raise NotImplementedError(f"{directory}: kustomization fields not supported by this renderer: {unknown}")
    objects: list[dict] = []
    for resource in kustomization.get("resources", []):
        target = directory / resource
        objects += build(target) if target.is_dir() else load_documents(target)
    patches = list(kustomization.get("patches", []))
    for component in kustomization.get("components", []):
        component_dir = directory / component
        spec = yaml.safe_load((component_dir / "kustomization.yaml").read_text())
        patches += [{**p, "path": str(component_dir / p["path"])} for p in spec.get("patches", [])]
    for patch in patches:
        if set(patch) != {"path"}:
            raise NotImplementedError(f"{directory}: only path patches are supported, got {patch}")
        for document in load_documents(directory / patch["path"]):
            matches = [i for i, obj in enumerate(objects) if key(obj) == key(document)]
            if len(matches) != 1:
                raise ValueError(f"{directory}: patch {patch['path']} matches {len(matches)} objects")
            objects[matches[0]] = strategic_merge(objects[matches[0]], document)
    namespace = kustomization.get("namespace")
    for obj in objects:
        metadata = obj["metadata"]
        if namespace:
            if obj["kind"] == "Namespace":
                metadata["name"] = namespace
            elif obj["kind"] not in CLUSTER_SCOPED:
                metadata["namespace"] = namespace
        for rule in kustomization.get("labels", []):
            if rule.get("includeSelectors", False) or rule.get("includeTemplates", False):
                raise NotImplementedError("labels with includeSelectors/includeTemplates")
            metadata["labels"] = {**metadata.get("labels", {}), **rule["pairs"]}
    _set_images(objects, kustomization.get("images", []))
    return objects
