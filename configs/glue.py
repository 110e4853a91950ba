"""GLUE fine-tuning (CoLA, SST-2; the pair tasks MRPC, RTE, STS-B, WNLI), optionally
distilled from a teacher.

    python train.py --config configs/glue.py:cola --workdir runs/cola-fp \
        --config.init_checkpoint=HF_OR_RUN_DIR --config.data_dir=GLUE_DIR \
        --config.binarize.layers=False
    python train.py --config configs/glue.py:cola --workdir runs/cola-binary \
        --config.teacher_checkpoint=runs/cola-fp --config.data_dir=GLUE_DIR

data_dir: a GLUE directory (CoLA/{train,dev,test}.tsv, SST-2/..., MRPC/..., STS-B/...);
empty: TFDS glue/<task>.
`configs/glue.py:cola,tiny`: a tiny random model and short sequences (tests).
"""

import ml_collections

from bitmaps_jax.tasks.glue import data as glue_data
from configs import base

TASKS = tuple(glue_data.TASKS)  # the task table's names


def get_config(arg: str = 'cola'):
  task, tiny = base.parse_args(arg, TASKS, 'configs/glue.py')
  config = base.get_base_config()
  config.task = 'glue'
  config.task_name = task or 'cola'
  config.model = 'minilm-l6-h384'  # used only when init_checkpoint is empty
  config.teacher_checkpoint = ''  # empty: no distillation
  config.data_dir = ''
  config.tfds_data_dir = ''
  config.eval_split = 'validation'
  config.max_train_examples = 0  # 0: the whole training split
  # N > 0: a fixed slice of N training sentences (the same in every run) is held out as the
  # split 'holdout', a second labelled evaluation set (eval.py --split=holdout).
  config.holdout_examples = 0
  config.length_bucketing = True  # False: every batch padded to max_seq_length
  # How many batches are sorted by length together: 1, random batches each padded to its own
  # longest row; more, less padding but batches of one length (and so of skewed labels).
  config.bucket_pool = 1
  config.max_seq_length = 128
  config.freeze_embeddings = False
  config.freeze_encoder = False

  config.distill = ml_collections.ConfigDict()
  config.distill.ce_weight = 1.0
  config.distill.kd_weight = 1.0
  config.distill.hidden_weight = 1.0
  config.distill.attention_weight = 0.0  # KL between attention distributions, every layer
  config.distill.temperature = 2.0

  # Perturbed copies of the training sentences, learned from the teacher's outputs only
  # (needs teacher_checkpoint); num_epochs then counts passes over originals + copies.
  config.augment = ml_collections.ConfigDict()
  config.augment.copies = 0
  config.augment.method = 'edits'  # edits, or neighbours (teacher word-embedding neighbours)
  config.augment.max_edits = 2  # edits: 1..max_edits edits per copy
  config.augment.replace_prob = 0.4  # neighbours: chance that a word is replaced
  config.augment.neighbours = 15  # neighbours: how many nearest words a replacement comes from

  config.per_device_batch_size = 32
  config.num_epochs = 3.0
  config.num_train_steps = 0  # 0: num_epochs over the training split
  config.learning_rate = 1e-4
  config.warmup_steps = -1  # -1: warmup_ratio of the steps
  config.warmup_ratio = 0.1
  config.log_every_steps = 50
  config.eval_every_steps = 0  # 0: once per epoch
  config.checkpoint_every_steps = 0  # 0: once per epoch
  config.keep_checkpoints = 1
  if tiny:
    config.model = 'tiny'
    config.max_seq_length = 16
    config.per_device_batch_size = 2
    config.num_epochs = 2.0
    config.learning_rate = 1e-3
    config.log_every_steps = 1
  return config
