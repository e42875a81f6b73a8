"""The MONAI checks of the Model Zoo CI (ci/verify_bundle.py), run in one process inside the bundle
folder the way that script runs them: the bundle folder first on ``sys.path`` (so its own ``scripts``
package is imported), then ``verify_metadata``, ``verify_net_in_out``, ``ckpt_export`` and the
workflows' ``check_properties()``. Started by bundle/check.py:

    cd BUNDLE && python /path/to/bundle/zoo_checks.py '{"schema": ..., "work": ..., ...}'

Prints one ``RESULT {"check", "ok", "detail"}`` line per check. Imports nothing from the checkout.
"""

from __future__ import annotations

import json
import os
import sys
import traceback
from collections.abc import Callable
from typing import Any

import torch
from monai.bundle import ConfigWorkflow, ckpt_export, verify_metadata, verify_net_in_out

TRAIN_CONFIGS = ["configs/train.yaml"]
INFER_CONFIGS = ["configs/train.yaml", "configs/inference.yaml"]  # inference.yaml is merged onto train.yaml
META = "configs/metadata.json"


def _metadata_schema(args: dict[str, Any]) -> str:
    # the schema file exists, so verify_metadata validates against it without downloading
    verify_metadata(meta_file=META, filepath=args["schema"])
    return f"metadata is verified with no error (schema: offline copy {os.path.basename(args['schema'])})"


def _net_in_out(args: dict[str, Any]) -> str:
    verify_net_in_out(net_id="network_def", meta_file=META, config_file=INFER_CONFIGS, bundle_root=args["bundle"],
                      device="cpu")  # fmt: skip
    return "data shape of network is verified with no error (monai.bundle.verify_net_in_out, network_def)"


def _torchscript(args: dict[str, Any]) -> str:
    if not os.path.isfile("models/model.pt"):
        raise FileNotFoundError("models/model.pt is absent (listed in large_files.yml: download it first)")
    ts = os.path.join(args["work"], "model.ts")
    ckpt_export(net_id="network_def", filepath=ts, ckpt_file="models/model.pt", meta_file=META,
                config_file=INFER_CONFIGS, bundle_root=args["bundle"])  # fmt: skip
    net = torch.jit.load(ts, map_location="cpu").eval()
    with open(META) as f:
        fmt = json.load(f)["network_data_format"]
    with torch.no_grad():
        pred = net(torch.zeros(1, fmt["inputs"]["image"]["num_channels"], 16, 16, 16))
    expected = (1, fmt["outputs"]["pred"]["num_channels"], 16, 16, 16)
    if tuple(pred.shape) != expected:
        raise ValueError(f"TorchScript output {tuple(pred.shape)}, expected {expected}")
    return f"exported to model.ts ({os.path.getsize(ts)} bytes); it loads and maps (1, 1, 16, 16, 16) to {expected}"


def _properties(args: dict[str, Any]) -> str:
    common = {"bundle_root": args["bundle"], "dataset_dir": os.path.join(args["work"], "data"),
              "synthetic": args["synthetic"], "num_workers": 0}  # fmt: skip
    jobs = [
        ("train", TRAIN_CONFIGS, {"output_dir": os.path.join(args["work"], "out"),
                                  "ckpt_dir": os.path.join(args["work"], "models")}),  # fmt: skip
        ("infer", INFER_CONFIGS, {"pred_dir": os.path.join(args["work"], "pred")}),
    ]
    found = []
    for wtype, files, extra in jobs:
        wf = ConfigWorkflow(config_file=files, meta_file=META, logging_file="configs/logging.conf",
                            workflow_type=wtype, **common, **extra)  # fmt: skip
        wf.initialize()
        missing = wf.check_properties()
        if missing:
            raise ValueError(f"{wtype} workflow ({' + '.join(files)}) lacks or misreferences {missing}")
        found.append(f"{wtype} ({' + '.join(files)}): {missing}")
    return "; ".join(found)


CHECKS: list[tuple[str, Callable[[dict[str, Any]], str]]] = [
    ("metadata schema", _metadata_schema),
    ("verify_net_in_out", _net_in_out),
    ("ckpt_export TorchScript", _torchscript),
    ("check_properties train+infer", _properties),
]


def main(args: dict[str, Any]) -> None:
    sys.path.insert(0, os.getcwd())  # as verify_bundle.py: the bundle's own code first
    for label, fn in CHECKS:
        try:
            result = {"check": label, "ok": True, "detail": fn(args)}
        except Exception as e:  # noqa: BLE001 - every failure is reported, the other checks still run
            detail = f"{type(e).__name__}: {e}\n{traceback.format_exc()[-1500:]}"
            result = {"check": label, "ok": False, "detail": detail}
        print("RESULT " + json.dumps(result), flush=True)


if __name__ == "__main__":
    main(json.loads(sys.argv[1]))
