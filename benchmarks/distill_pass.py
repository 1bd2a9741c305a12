"""The distill pass alone, on a file already compressed: what the compress pipeline runs
after pruning or quantizing, without redoing those (a channel-pruned ddddocr on 1,200
captchas spends 900 CPU seconds pruning before the first training step).

    python -m benchmarks.distill_pass MODEL COMPRESSED CALIB OUT ['{"distill_steps": 500}']

MODEL is a corpus model name (its prepared original is the teacher, its scorer the
metric), COMPRESSED the plain file, CALIB the unlabeled data (a folder of .npz), the
JSON object any CompressOptions fields (task, distill_steps, distill_mix, lr, seed).
Prints one JSON line: the task metric of OUT, the CPU seconds of the pass, whether the
guard kept it, the held-back figures.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import onnx_ir as ir

from benchmarks.corpus import prepare, registry
from onnxcomp.io.data import input_specs, open_data
from onnxcomp.methods.distill import DistillPass
from onnxcomp.options import CompressOptions
from onnxcomp.passes.prepare import prepare_pass


def main() -> None:
    name, plain, calib, out = sys.argv[1:5]
    extra = json.loads(sys.argv[5]) if len(sys.argv) > 5 else {}
    spec, prep = registry()[name], prepare(name)
    teacher = ir.load(str(prep.model))
    prepare_pass()(teacher)  # the pipeline's teacher: the prepared model before compression
    student = ir.load(plain)
    options = CompressOptions(recover="distill", distill_progress=True, **extra)
    distill = DistillPass(options, lambda: open_data(calib, input_specs(student)), lambda: teacher)
    cpu = time.process_time()
    result = distill(student)
    cpu = time.process_time() - cpu
    ir.save(result.model, out)
    figures = {k: distill.figures[k] for k in ("held_first", "held_best", "best_step")}
    figures |= {k: distill.figures[k] for k in ("plain_drop", "distilled_drop")}
    value = spec.score(Path(out), prep, 1).value
    print(json.dumps({"value": value, "cpu_s": cpu, "kept": distill.kept, **figures}))


if __name__ == "__main__":
    main()
