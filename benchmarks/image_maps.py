"""Which film map points at the planted finding: the pointing game for several map choices, per disease.

Why: the faithfulness benchmark scores one map (the explainer's default) on the held-out cohort. Choosing
that map is model selection, so it is done here on a *validation* cohort (a synthetic cohort the model
never saw, other than the held-out one), and the table shows what each choice gets for each finding:
- ``ig+``: IntegratedGradients from the black film (``black``), from the film blurred with sigma = 5% of
  the side (``blurred``), or their mean (``mean``, what ``smoothed_ig`` uses), positive part, smoothed
  with a Gaussian of sigma = the given fraction of the side (0: raw);
- ``gradcam stage s``: LayerGradCam on ResNet stage s (ReLU), upsampled;
- ``gradcam stage s x ig+ blurred, smoothing w``: the two above, each scaled to maximum 1, multiplied
  (Grad-CAM says which region holds the class evidence, IG which structure in it; Guided Grad-CAM's
  product, with IG in place of guided backpropagation; ``gradcam_ig_product``, the explainer's own
  function); the row of stage ``GRADCAM_IG_STAGE`` at ``GRADCAM_IG_SMOOTHING`` is the shipped map
  (``gradcam_ig``, marked "(shipped)"; tests/explain/test_evidence.py checks the explainer's map is
  this product).
A hit: the map's maximum, mapped back onto the film, lies inside the union of the planted masks of
that disease (true positives of the checkpoint with planted film evidence on the film it used). The
masks hold what the generator painted (tests/sources/synth/test_routes.py compares each film with its
finding-free twin), so a miss is the map's, not the truth's.

    python benchmarks/image_maps.py --checkpoint assets/demo_model --data VALIDATION_DIR [--max-patients 400]

Writes benchmarks/results/image_maps.json and .md.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections import defaultdict
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parent.parent
RESULTS = Path(__file__).resolve().parent / "results"
sys.path.insert(0, str(ROOT))

from medfuse_core.explain.evidence import (  # noqa: E402
    GRADCAM_IG_SMOOTHING,
    GRADCAM_IG_STAGE,
    IMAGE_BLUR_BASELINE,
    IMAGE_SMOOTHING,
    EvidenceExplainer,
    blurred,
    gradcam_ig_product,
)
from medfuse_core.benchmarking.faithfulness import (  # noqa: E402
    DISEASES_BY_NAME,
    load_cases,
    planted_film_mask,
    pointing_hit,
    route_pair,
)
from medfuse_core.predictor import Predictor  # noqa: E402
from medfuse_core.provenance import write_benchmark_result

SMOOTHING = (0.0, 0.02, 0.04, 0.06, 0.08, IMAGE_SMOOTHING)  # "ig+ mean" at IMAGE_SMOOTHING is smoothed_ig
PRODUCT_SMOOTHING = (0.02, 0.04, 0.06, 0.08)  # of the IG factor of the Grad-CAM x IG products
assert GRADCAM_IG_SMOOTHING in PRODUCT_SMOOTHING  # the shipped map is one of the rows


def candidate_maps(explainer: EvidenceExplainer, k: int, n_steps: int) -> dict[str, torch.Tensor]:
    """Every map choice of the module docstring for label k, (1, 1, size, size) at model resolution."""
    from captum.attr import IntegratedGradients, LayerAttribution, LayerGradCam

    x = explainer.batch.image.float()
    size = x.shape[-1]
    maps: dict[str, torch.Tensor] = {}
    with explainer._grad():
        forward = explainer._forward("image", "image")
        ig = IntegratedGradients(forward)
        raw = {"black": ig.attribute(x, baselines=torch.zeros_like(x), target=k, n_steps=n_steps, internal_batch_size=8),
               "blurred": ig.attribute(x, baselines=blurred(x, IMAGE_BLUR_BASELINE * size), target=k,
                                       n_steps=n_steps, internal_batch_size=8)}
        raw = {name: a.detach() for name, a in raw.items()}
        raw["mean"] = (raw["black"] + raw["blurred"]) / 2
        stages = explainer.model.image_encoder.model.encoder.stages
        for s, stage in enumerate(stages):
            cam = LayerGradCam(forward, stage).attribute(x, target=k, relu_attributions=True)
            maps[f"gradcam stage {s}"] = LayerAttribution.interpolate(cam.detach(), (size, size), "bilinear")
    for name, attribution in raw.items():
        for sigma in SMOOTHING:
            positive = attribution.clamp(min=0)
            maps[f"ig+ {name}, smoothing {sigma:g}"] = blurred(positive, sigma * size) if sigma else positive
    for s in range(len(stages)):
        for sigma in PRODUCT_SMOOTHING:
            shipped = s == len(stages) + GRADCAM_IG_STAGE and sigma == GRADCAM_IG_SMOOTHING
            name = f"gradcam stage {s} x ig+ blurred, smoothing {sigma:g}" + (" (shipped)" if shipped else "")
            maps[name] = gradcam_ig_product(maps[f"gradcam stage {s}"], raw["blurred"], sigma * size)
    return maps


def score_checkpoint(checkpoint: str, data: str, max_patients: int | None, n_steps: int) -> dict:
    predictor = Predictor.load(checkpoint, device="cpu")
    cases = load_cases([data], max_patients)
    features, indices = predictor.featurize([c.record for c in cases])
    _, _, positive = route_pair(predictor, features)
    labels = list(predictor.labels)
    hits: dict[str, dict[str, list[bool]]] = defaultdict(lambda: defaultdict(list))
    for b, (case, f, ix) in enumerate(zip(cases, features, indices)):
        if ix.image_geometry is None or not f.present[3]:
            continue
        truth = (case.record.truth or {}).get("evidence", {})
        for k, name in enumerate(labels):
            if DISEASES_BY_NAME.get(name) is None or not (f.labels[k] == 1 and positive[b, k]):
                continue
            geometry = ix.image_geometry
            mask = planted_film_mask(case, truth.get(name, {}).get("image") or [], ix.image_index,
                                     (geometry.rows, geometry.cols))
            if mask is None:
                continue
            explainer = EvidenceExplainer(predictor.model, f, ix, case.record, None, predictor.featurizer.vocabulary)
            for method, model_map in candidate_maps(explainer, k, n_steps).items():
                hit = bool(pointing_hit(geometry.to_original(model_map[0, 0].float().numpy()), mask))
                hits[method][name].append(hit)
                hits[method]["all"].append(hit)
    return {"checkpoint": checkpoint, "n_patients": len(cases),
            "methods": {m: {d: {"hit_rate": float(np.mean(v)), "n": len(v)} for d, v in per.items()}
                        for m, per in hits.items()}}


def render(payload: dict) -> str:
    lines = ["# Film maps: the pointing game per map choice (validation cohort)", "",
             f"Cohort `{payload['data']}` (a validation cohort, not the held-out one), first {payload['max_patients']} "
             f"patients; IG with {payload['n_steps']} steps. Hit: the map's maximum inside the planted masks of the "
             "disease, on true positives with planted film evidence. See benchmarks/image_maps.py.", ""]
    for result in payload["checkpoints"]:
        methods = result["methods"]
        diseases = sorted({d for per in methods.values() for d in per if d != "all"})
        lines += [f"## {result['name']} (`{result['checkpoint']}`)", "",
                  "| map | all | " + " | ".join(d.split(";")[0].split(" (")[0] for d in diseases) + " |",
                  "|---|---:|" + "---:|" * len(diseases)]
        for method, per in sorted(methods.items(), key=lambda kv: -kv[1]["all"]["hit_rate"]):
            cells = [f"{per[d]['hit_rate']:.2f} ({per[d]['n']})" if d in per else "" for d in diseases]
            lines.append(f"| {method} | {per['all']['hit_rate']:.2f} ({per['all']['n']}) | " + " | ".join(cells) + " |")
        lines.append("")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", action="append", required=True)
    parser.add_argument("--name", action="append", default=[])
    parser.add_argument("--data", required=True, help="a synthetic validation cohort (not the held-out one)")
    parser.add_argument("--max-patients", type=int, default=400)
    parser.add_argument("--n-steps", type=int, default=32)
    parser.add_argument("--out-dir", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    started = time.perf_counter()
    names = list(args.name) + [Path(c).name for c in args.checkpoint[len(args.name):]]
    results = []
    for name, checkpoint in zip(names, args.checkpoint):
        results.append({"name": name, **score_checkpoint(checkpoint, args.data, args.max_patients, args.n_steps)})
    payload = {"data": args.data, "max_patients": args.max_patients, "n_steps": args.n_steps, "checkpoints": results,
               "seconds": time.perf_counter() - started}
    write_benchmark_result(args.out_dir, "image_maps", payload, render(payload))
    print(render(payload))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
