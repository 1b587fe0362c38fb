"""slimbert's ONNX artifacts against the Optimum pipeline a user would otherwise run.

    python benchmarks/optimum_side_by_side.py --run runs/default [--work runs/optimum-peer]
        [--extra student 'pruned + INT8' runs/prune-student/student-small-int8]

On the same fine-tuned teacher and distilled student of a finished default run:

- peer (Optimum): ``ORTModelForSequenceClassification.from_pretrained(..., export=True)``,
  then ``ORTOptimizer`` with the O2 preset, and ``ORTQuantizer`` dynamic INT8 with the
  ``avx512_vnni`` preset (per_channel=False, as in Optimum's docs). The INT8 model quantizes
  the plain export, as a user must: quantizing the O2 graph fails in onnxruntime 1.32
  ("Unable to find data type for weight_name"), see ../shared/STACK.md.
- slimbert: the run's fused ONNX exports and INT8 graphs (the teacher's INT8 is made here
  with slimbert's quantize_onnx, since the default recipe quantizes only the student).

Every model is measured in this one process with the same harness: slimbert's ``ort-cpu``
runtime (thread spinning off, so sessions taking turns do not steal each other's cores)
loading each folder; accuracy on the run's test split, latency p50/p90/p99 at batch 1 and
sequence length 128 on full-length synthetic inputs. Writes
benchmarks/results/optimum_side_by_side.json.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import shutil
import time
import warnings
from pathlib import Path

from slimbert.artifacts import write_json_atomic
from slimbert.bench.latency import measure_latency, synthetic_batch
from slimbert.data import classification_metrics, encode_split, load_dataset
from slimbert.export.onnx import copy_model_metadata
from slimbert.formats import ONNX_FILE
from slimbert.models import load_tokenizer
from slimbert.quantize.config import OnnxQuantizeConfig
from slimbert.quantize.onnx_ptq import quantize_onnx
from slimbert.recipe import recipe_from_dict
from slimbert.runtimes import get_runtime

RESULTS = Path(__file__).parent / "results" / "optimum_side_by_side.json"


def _as_slimbert_folder(src_dir: Path, onnx_name: str, dest: Path, model_dir: Path) -> Path:
    """Optimum names its files model_optimized.onnx etc.; the ort-cpu runtime loads model.onnx."""
    dest.mkdir(parents=True, exist_ok=True)
    shutil.copy2(src_dir / onnx_name, dest / ONNX_FILE)
    copy_model_metadata(model_dir, dest)
    return dest


def optimum_pipeline(model_dir: Path, work: Path) -> dict[str, tuple[Path, float]]:
    """Export, O2-optimize and INT8-quantize ``model_dir`` the Optimum way; folder and seconds each."""
    from optimum.onnxruntime import ORTModelForSequenceClassification, ORTOptimizer, ORTQuantizer
    from optimum.onnxruntime.configuration import AutoOptimizationConfig, AutoQuantizationConfig

    out: dict[str, tuple[Path, float]] = {}
    start = time.perf_counter()
    model = ORTModelForSequenceClassification.from_pretrained(model_dir, export=True)
    export_dir = work / "export"
    model.save_pretrained(export_dir)
    out["fp32"] = (_as_slimbert_folder(export_dir, "model.onnx", work / "fp32", model_dir),
                   time.perf_counter() - start)

    start = time.perf_counter()
    optimizer = ORTOptimizer.from_pretrained(model)
    optimizer.optimize(AutoOptimizationConfig.O2(), save_dir=work / "o2-raw")
    out["O2"] = (_as_slimbert_folder(work / "o2-raw", "model_optimized.onnx", work / "o2", model_dir),
                 time.perf_counter() - start)

    start = time.perf_counter()
    quantizer = ORTQuantizer.from_pretrained(export_dir)  # the plain export: the O2 graph fails
    qconfig = AutoQuantizationConfig.avx512_vnni(is_static=False, per_channel=False)
    quantizer.quantize(qconfig, save_dir=work / "int8-raw")
    out["dynamic INT8"] = (_as_slimbert_folder(work / "int8-raw", "model_quantized.onnx", work / "int8",
                                               model_dir), time.perf_counter() - start)
    return out


def measure(folder: Path, target: str, enc, num_labels: int, threads: int, budget_s: float) -> dict:
    session = get_runtime(target).load(folder, threads=threads)
    logits = session.predict(enc, 64)
    accuracy = classification_metrics(enc.labels, logits.argmax(-1), num_labels)
    batch = synthetic_batch(1, 128, load_tokenizer(folder).vocab_size, session.input_names)
    stats = measure_latency(session, batch, warmup=5, min_iters=20, max_iters=500, budget_s=budget_s)
    files = [f for f in folder.iterdir() if f.suffix in (".onnx", ".safetensors")]
    return {"accuracy": accuracy["accuracy"], "macro_f1": accuracy["macro_f1"],
            "p50_ms": round(stats.p50_ms, 3), "p90_ms": round(stats.p90_ms, 3),
            "p99_ms": round(stats.p99_ms, 3), "iterations": stats.iterations,
            "size_mb": round(sum(f.stat().st_size for f in files) / 1e6, 1)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", type=Path, default=Path("runs/default"), help="a finished default run")
    parser.add_argument("--work", type=Path, default=Path("runs/optimum-peer"), help="scratch folder")
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--budget-s", type=float, default=5.0, help="timing budget per model")
    parser.add_argument("--results", type=Path, default=RESULTS)
    parser.add_argument("--extra", nargs=3, action="append", default=[],
                        metavar=("MODEL", "VARIANT", "FOLDER"),
                        help="another slimbert ONNX artifact of MODEL (teacher/student) to measure in the "
                        "same run, e.g. --extra student 'pruned + INT8' runs/prune/student-small-int8")
    args = parser.parse_args()
    logging.basicConfig(level=logging.ERROR)
    warnings.filterwarnings("ignore")

    load_at_start = os.getloadavg()
    run = args.run
    recipe = recipe_from_dict(json.loads((run / "recipe.json").read_text()), str(run / "recipe.json"))
    data = load_dataset(recipe.dataset, seed=recipe.seed)
    test = data.splits["test"]

    models: list[tuple[str, str, str, Path, float | None]] = []  # model, pipeline, variant, folder, s
    for name in ("teacher", "student"):
        models.append((name, "pytorch", "fp32 eager (torch-cpu)", run / name, None))
        peer = optimum_pipeline(run / name, args.work / name)
        models += [(name, "optimum", variant, folder, secs) for variant, (folder, secs) in peer.items()]
        models.append((name, "slimbert", "fp32 fused", run / f"{name}-onnx", None))
        int8 = run / f"{name}-int8"
        if not (int8 / ONNX_FILE).is_file():  # the default recipe quantizes only the student
            int8 = args.work / name / "slimbert-int8"
            int8.mkdir(parents=True, exist_ok=True)
            enc_dev = encode_split(load_tokenizer(run / name), data.splits["dev"].take(list(range(512))),
                                   recipe.dataset.max_length)
            quantize_onnx(run / f"{name}-onnx", int8, OnnxQuantizeConfig(), enc_dev)
        models.append((name, "slimbert", "INT8 (fused graph)", int8, None))
        models += [(name, "slimbert", variant, Path(folder), None)
                   for model, variant, folder in args.extra if model == name]

    rows = []
    for name, pipeline, variant, folder, secs in models:
        target = "torch-cpu" if pipeline == "pytorch" else "ort-cpu"
        enc = encode_split(load_tokenizer(folder), test, recipe.dataset.max_length)
        row = {"model": name, "pipeline": pipeline, "variant": variant, "target": target,
               "folder": str(folder), "build_seconds": round(secs, 1) if secs is not None else None,
               **measure(folder, target, enc, data.num_labels, args.threads, args.budget_s),
               # the machine may be shared: the 1-minute load average says how busy it was
               "load_avg_1m": round(os.getloadavg()[0], 2)}
        rows.append(row)
        print(f"{name:<8} {pipeline:<9} {variant:<24} acc {row['accuracy']:.2%}  "
              f"p50 {row['p50_ms']:7.2f} ms  p90 {row['p90_ms']:7.2f}  {row['size_mb']:6.1f} MB", flush=True)

    import onnxruntime
    import optimum.version
    import torch

    summary = {
        "source_run": str(run.resolve()),
        "dataset": {"source": recipe.dataset.source, "split": "test", "examples": len(test),
                    "max_length": recipe.dataset.max_length, "seed": recipe.seed,
                    "fingerprint": data.fingerprint},
        "latency": {"batch_size": 1, "seq_len": 128, "threads": args.threads, "budget_s": args.budget_s,
                    "harness": "slimbert ort-cpu runtime (allow_spinning=0), one process, models in turn"},
        "environment": {"platform": platform.platform(), "cores": os.cpu_count(),
                        "onnxruntime": onnxruntime.__version__, "optimum": optimum.version.__version__,
                        "torch": torch.__version__,
                        "load_average_at_start": load_at_start, "load_average_at_end": os.getloadavg()},
        "notes": ["Optimum INT8 quantizes the plain export (quantizing the O2 graph fails in ORT 1.32); "
                  "slimbert INT8 quantizes its fused graph.",
                  "avx512_vnni preset with is_static=False, per_channel=False."],
        "rows": rows,
    }
    write_json_atomic(args.results, summary)
    print(f"wrote {args.results}")


if __name__ == "__main__":
    main()
