"""The majority-class baseline of GLUE classification tasks: train's most frequent label
predicted for every dev example, scored with the task's metrics.

    python scripts/majority_baseline.py GLUE_DIR TASK [TASK ...]
"""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import numpy as np  # noqa: E402

from bitmaps_jax.errors import UserError  # noqa: E402
from bitmaps_jax.tasks.glue import data as glue_data  # noqa: E402
from bitmaps_jax.tasks.glue import evaluate  # noqa: E402


def main(argv):
  if len(argv) < 2:
    print(__doc__.strip().splitlines()[-1].strip(), file=sys.stderr)
    return 2
  try:
    for name in argv[1:]:
      task = glue_data.get_task(name)
      if task.is_regression:
        raise UserError(f'{name}: a regression task has no majority class')
      train, dev = (glue_data.load_split(task, s, argv[0]) for s in ('train', 'validation'))
      k = int(np.bincount(train.labels, minlength=task.num_labels).argmax())
      logits = np.eye(task.num_labels, dtype=np.float32)[np.full(len(dev.labels), k)]
      out = evaluate.task_metrics(task, logits, dev.labels)
      print(f'{name}: majority {task.labels[k]!r}, dev ' +
            ', '.join(f'{m} {out[m]:.4f}' for m in task.metrics) + f' ({len(dev.labels)})')
  except UserError as e:
    print(f'error: {e}', file=sys.stderr)
    return 2
  return 0


if __name__ == '__main__':
  sys.exit(main(sys.argv[1:]))
