"""The MONAI checks of the Model Zoo CI (ci/verify_bundle.py), run in one process inside the bundle
folder the way that script runs them: the bundle folder first on ``sys.path`` (so its own ``scripts``
package is imported), ``verify_metadata`` against the schema file, then ``verify_net_in_out`` and
``ckpt_export`` of ``network_def`` with configs/inference.yaml alone (the CI passes no other config), and
the workflows' ``check_properties()``: infer on inference.yaml alone, train on train.yaml. Started by
bundle/check.py:

    cd BUNDLE && python /path/to/bundle/zoo_checks.py '{"schema": ..., "work": ..., "only": [...], ...}'

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

NET_ID = "network_def"  # verify_bundle.py's _get_net_id for every bundle but two
INFER_CONFIG = "configs/inference.yaml"
TRAIN_CONFIG = "configs/train.yaml"
META = "configs/metadata.json"


def _metadata_schema(args: dict[str, Any]) -> str:
    # the schema file exists, so verify_metadata validates against it without downloading (as the CI's
    # eval/schema.json, put there by ci/prepare_schema.py)
    verify_metadata(meta_file=META, filepath=args["schema"])
    return f"metadata is verified with no error against {os.path.basename(args['schema'])}"


def _net_in_out(args: dict[str, Any]) -> str:
    verify_net_in_out(net_id=NET_ID, meta_file=META, config_file=INFER_CONFIG, bundle_root=args["bundle"])
    return f"data shape of network is verified with no error ({NET_ID} of {INFER_CONFIG} alone)"


def _torchscript(args: dict[str, Any]) -> str:
    if not os.path.isfile("models/model.pt"):
        raise FileNotFoundError("models/model.pt is absent (listed in large_files.yml: download it first)")
    ts = os.path.join(args["work"], "verify_model.ts")
    ckpt_export(
        net_id=NET_ID,
        filepath=ts,
        ckpt_file="models/model.pt",
        meta_file=META,
        config_file=INFER_CONFIG,
        bundle_root=args["bundle"],
    )
    if os.path.isfile("models/model.ts"):
        torch.jit.load("models/model.ts")
    net = torch.jit.load(ts, map_location="cpu").eval()
    with open(META) as f:
        fmt = json.load(f)["network_data_format"]
    with torch.no_grad():
        pred = net(torch.zeros(1, fmt["inputs"]["image"]["num_channels"], 16, 16, 16))
    expected = (1, fmt["outputs"]["pred"]["num_channels"], 16, 16, 16)
    if tuple(pred.shape) != expected:
        raise ValueError(f"TorchScript output {tuple(pred.shape)}, expected {expected}")
    return (
        f"{NET_ID} of {INFER_CONFIG} alone exported ({os.path.getsize(ts)} bytes); it loads and maps 16^3 to {expected}"
    )


def _properties(args: dict[str, Any]) -> str:
    # the bundle generates its embedded set only into <bundle_root>/data/synthetic: a tiny one elsewhere is
    # made first, with the bundle's own generator
    from scripts.data.synthetic import ensure_dataset

    common = {
        "bundle_root": args["bundle"],
        "dataset_dir": os.path.dirname(ensure_dataset(os.path.join(args["work"], "data"), **args["synthetic"])),
        "num_workers": 0,
    }
    jobs = [
        ("infer", INFER_CONFIG, {"output_dir": os.path.join(args["work"], "pred")}),
        (
            "train",
            TRAIN_CONFIG,
            {"output_dir": os.path.join(args["work"], "out"), "ckpt_dir": os.path.join(args["work"], "models")},
        ),
    ]
    found = []
    for wtype, config, extra in jobs:
        wf = ConfigWorkflow(
            config_file=config,
            meta_file=META,
            logging_file="configs/logging.conf",
            workflow_type=wtype,
            **common,
            **extra,
        )
        wf.initialize()
        missing = wf.check_properties()
        if missing:
            raise ValueError(f"{wtype} workflow ({config}) lacks or misreferences {missing}")
        found.append(f"{wtype} ({config} alone): {missing}")
    return "; ".join(found)


CHECKS: list[tuple[str, Callable[[dict[str, Any]], str]]] = [
    ("metadata schema", _metadata_schema),
    ("verify_net_in_out", _net_in_out),
    ("ckpt_export TorchScript", _torchscript),
    ("check_properties", _properties),
]


def main(args: dict[str, Any]) -> None:
    sys.path.insert(0, os.getcwd())  # as verify_bundle.py: the bundle's own code first
    os.makedirs(args["work"], exist_ok=True)
    for label, fn in CHECKS:
        if label not in args.get("only", [c for c, _ in CHECKS]):
            continue
        try:
            result = {"check": label, "ok": True, "detail": fn(args)}
        except Exception as e:  # noqa: BLE001 - every failure is reported, the other checks still run
            detail = f"{type(e).__name__}: {e}\n{traceback.format_exc()[-1500:]}"
            result = {"check": label, "ok": False, "detail": detail}
        print("RESULT " + json.dumps(result), flush=True)


if __name__ == "__main__":
    main(json.loads(sys.argv[1]))
