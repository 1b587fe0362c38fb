"""Is slimbert's trainer the reason its students trail the stack notes' reference runs?

    python benchmarks/plain_student_reference.py --run <finished run with a teacher/> \
        [--layers 0 2 4] [--epochs 4] [--lr 5e-5] [--alpha-kd 0.0] [--results F]

The stack notes report a 3-layer student (teacher layers 0,2,4) at 85.71% with CE alone and
86.33% with logit KD (4 epochs, lr 5e-5, batch 32, max length 64). slimbert's students of
the same shape reach 82-84%. This script trains the same student in the plainest possible
loop, outside slimbert's trainer: transformers + torch only, random batches padded per
batch, AdamW with linear decay and no warmup, no early stopping, evaluated on slimbert's
dev and test splits after every epoch. If it lands where slimbert does, the gap is the
data split and the teacher, not the training code.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from transformers import AutoModelForSequenceClassification, AutoTokenizer, get_linear_schedule_with_warmup

from slimbert.artifacts import write_json_atomic
from slimbert.compress.student import build_student
from slimbert.data import DatasetConfig, load_dataset
from slimbert.schema import from_dict

RESULTS = Path(__file__).parent / "results" / "plain_student_reference.json"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", type=Path, required=True,
                        help="a finished run with teacher/ and recipe.json")
    parser.add_argument("--layers", type=int, nargs="+", default=[0, 2, 4])
    parser.add_argument("--epochs", type=int, default=4)
    parser.add_argument("--lr", type=float, default=5e-5)
    parser.add_argument("--alpha-kd", type=float, default=0.0, help="0.7 for the reference's logit KD")
    parser.add_argument("--temperature", type=float, default=2.0)
    parser.add_argument("--results", type=Path, default=RESULTS)
    args = parser.parse_args()

    recipe = json.loads((args.run / "recipe.json").read_text())
    dataset = from_dict(DatasetConfig, recipe["dataset"], source=str(args.run / "recipe.json"))
    data = load_dataset(dataset, seed=recipe["seed"])  # the run's own train/dev/test split
    max_length = recipe["dataset"]["max_length"]
    folder = args.run / "teacher"
    tokenizer = AutoTokenizer.from_pretrained(folder)
    teacher = AutoModelForSequenceClassification.from_pretrained(folder).eval()
    torch.manual_seed(recipe["seed"])
    student = build_student(teacher, args.layers)  # the cut is not in question; the training is

    def encode(texts: list[str]) -> dict[str, torch.Tensor]:
        return tokenizer(texts, truncation=True, max_length=max_length, padding=True, return_tensors="pt")

    @torch.no_grad()
    def accuracy(split) -> float:
        student.eval()
        correct = sum(int((student(**encode(split.texts[i:i + 64])).logits.argmax(-1).numpy()
                           == split.labels[i:i + 64]).sum()) for i in range(0, len(split), 64))
        student.train()
        return correct / len(split)

    train = data.splits["train"]
    labels = torch.from_numpy(train.labels)
    batch = 32
    steps = args.epochs * -(-len(train) // batch)
    optimizer = torch.optim.AdamW(student.parameters(), lr=args.lr, weight_decay=0.01)
    schedule = get_linear_schedule_with_warmup(optimizer, 0, steps)
    rng = np.random.default_rng(recipe["seed"])
    epochs, start = [], time.perf_counter()
    student.train()
    for epoch in range(args.epochs):
        order = rng.permutation(len(train))
        for i in range(0, len(train), batch):
            index = order[i:i + batch]
            inputs = encode([train.texts[j] for j in index])
            logits = student(**inputs).logits
            loss = F.cross_entropy(logits, labels[index])
            if args.alpha_kd:
                with torch.no_grad():
                    soft = F.softmax(teacher(**inputs).logits / args.temperature, -1)
                kd = F.kl_div(F.log_softmax(logits / args.temperature, -1), soft, reduction="batchmean")
                loss = (1 - args.alpha_kd) * loss + args.alpha_kd * kd * args.temperature ** 2
            loss.backward()
            optimizer.step()
            schedule.step()
            optimizer.zero_grad()
        epochs.append({"epoch": epoch + 1, "dev_accuracy": accuracy(data.splits["dev"]),
                       "test_accuracy": accuracy(data.splits["test"]),
                       "seconds": round(time.perf_counter() - start, 1)})
        print(json.dumps(epochs[-1]), flush=True)

    layers = ",".join(map(str, args.layers))
    key = f"layers={layers} alpha_kd={args.alpha_kd} lr={args.lr} epochs={args.epochs}"
    results = json.loads(args.results.read_text()) if args.results.is_file() else {"runs": {}}
    results["runs"][key] = {"teacher": str(folder), "epochs": epochs,
                            "train_examples": len(train), "test_examples": len(data.splits["test"])}
    write_json_atomic(args.results, results)
    print(f"wrote {args.results}")


if __name__ == "__main__":
    main()
