"""The binary-layers CoLA recipe, one config per stage (docs/results/cola.md, "Three seeds'
weights as the recipe"); `scripts/cola_recipe.sh` runs them in order and averages.

    python train.py --config configs/recipes/cola.py:STAGE --workdir OUT/NAME \
        --config.data_dir=GLUE_DIR [--config.teacher_checkpoint=OUT/teacher] \
        [--config.init_checkpoint=START] [--config.seed=S]

STAGE:
  teacher  full precision from an HF checkpoint (init_checkpoint), lr 5e-5, 4 epochs
  stage1   per-channel binary layers from the teacher, hidden-state MSE + attention KL only,
           2 passes over the sentences and 2 perturbed copies each, lr 5e-4
  stage1b  stage1 again from stage1's weights (init_checkpoint=OUT/stage1)
  stage2   gold-label CE + logits KL only, one pass of 4 copies, lr 2e-4, keeping the last
           four of a checkpoint every 167 steps (init_checkpoint=OUT/stage1b; seeds 0, 1)
  last     rank-1 dense scales, logits KL at temperature 1, lr 1e-4, one pass of 4 copies,
           dropout 0.05 (init_checkpoint: the mean of stage 2's last checkpoints; seeds 0-2)
The run-specific paths (data_dir, teacher_checkpoint, init_checkpoint) and config.seed come from
flags. Fields are set in groups, by the code that reads them.
"""

from configs import glue

STAGES = ('teacher', 'stage1', 'stage1b', 'stage2', 'last')


def _model(config, stage):
  """The model the stage trains (tasks/glue/task.py, model/bert.py)."""
  if stage == 'teacher':
    config.binarize.layers = False
    return
  config.max_seq_length = 64
  config.binarize.granularity = 'rank1' if stage == 'last' else 'per_channel'
  if stage == 'last':
    config.dropout_rate = 0.05


def _data(config, stage):
  """Perturbed copies of the training sentences (tasks/glue/augment.py)."""
  if stage in ('stage1', 'stage1b'):
    config.augment.copies = 2
  elif stage in ('stage2', 'last'):
    config.augment.copies = 4


def _distill(config, stage):
  """The loss weights (tasks/glue/distill.py): stage 1 matches the teacher's intermediate
  layers only, the later stages its logits and the gold labels only."""
  if stage == 'teacher':
    return
  first = stage in ('stage1', 'stage1b')
  config.distill.update(ce_weight=0.0 if first else 1.0, kd_weight=0.0 if first else 1.0,
                        hidden_weight=1.0 if first else 0.0,
                        attention_weight=1.0 if first else 0.0)
  if stage == 'last':
    config.distill.temperature = 1.0


def _optim(config, stage):
  """The peak learning rate (train/optim.py)."""
  config.learning_rate = {'teacher': 5e-5, 'stage1': 5e-4, 'stage1b': 5e-4, 'stage2': 2e-4,
                          'last': 1e-4}[stage]


def _schedule(config, stage):
  """Passes over originals + copies (the steps are derived from them)."""
  config.num_epochs = {'teacher': 4.0, 'stage1': 2.0, 'stage1b': 2.0}.get(stage, 1.0)


def _loop(config, stage):
  """Checkpoints (train/loop.py): stage 2 keeps its last four for the average."""
  if stage == 'stage2':
    config.checkpoint_every_steps = 167
    config.keep_checkpoints = 4


def get_config(stage: str = 'stage1'):
  if stage not in STAGES:
    raise ValueError(f'configs/recipes/cola.py: unknown stage {stage!r}; expected one of '
                     f'{", ".join(STAGES)}')
  config = glue.get_config('cola')
  for group in (_model, _data, _distill, _optim, _schedule, _loop):
    group(config, stage)
  return config
