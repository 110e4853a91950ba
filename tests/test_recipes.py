"""The recipe configs are the settings their stages were measured with."""

import pytest

from configs import glue
from configs.recipes import cola, pairs

STAGE1 = {'distill.ce_weight': 0.0, 'distill.kd_weight': 0.0, 'distill.hidden_weight': 1.0,
          'distill.attention_weight': 1.0}
STAGE2 = {'distill.ce_weight': 1.0, 'distill.kd_weight': 1.0, 'distill.hidden_weight': 0.0,
          'distill.attention_weight': 0.0}
STUDENT = {'max_seq_length': 64, 'binarize.granularity': 'per_channel'}
# The flags each stage of the CoLA recipe ran with, on top of configs/glue.py:cola.
COLA = {
    'teacher': {'binarize.layers': False, 'learning_rate': 5e-5, 'num_epochs': 4.0},
    'stage1': {**STUDENT, **STAGE1, 'augment.copies': 2, 'learning_rate': 5e-4,
               'num_epochs': 2.0},
    'stage1b': {**STUDENT, **STAGE1, 'augment.copies': 2, 'learning_rate': 5e-4,
                'num_epochs': 2.0},
    'stage2': {**STUDENT, **STAGE2, 'augment.copies': 4, 'num_epochs': 1.0,
               'checkpoint_every_steps': 167, 'keep_checkpoints': 4, 'learning_rate': 2e-4},
    'last': {**STUDENT, **STAGE2, 'augment.copies': 4, 'num_epochs': 1.0,
             'binarize.granularity': 'rank1', 'distill.temperature': 1.0,
             'dropout_rate': 0.05, 'learning_rate': 1e-4},
}


@pytest.mark.parametrize('stage', cola.STAGES)
def test_cola_stages_are_the_measured_settings(stage):
  expected = glue.get_config('cola')
  for field, value in COLA[stage].items():
    node = expected
    *parents, leaf = field.split('.')
    for p in parents:
      node = node[p]
    node[leaf] = value
  assert cola.get_config(stage).to_dict() == expected.to_dict()


def test_unknown_stage():
  with pytest.raises(ValueError, match='unknown stage'):
    cola.get_config('stage3')


PAIR_STAGE2 = {**STAGE2, 'binarize.granularity': 'per_channel', 'learning_rate': 2e-4,
               'num_epochs': 4.0, 'keep_checkpoints': 4}


@pytest.mark.parametrize('task', pairs.TASKS)
def test_pair_recipe_stages(task):
  base = glue.get_config(task)
  teacher = pairs.get_config(f'{task},teacher')
  assert not teacher.binarize.layers and teacher.learning_rate == 5e-5
  assert teacher.num_epochs == 4.0 and teacher.task_name == task
  assert teacher.max_seq_length == base.max_seq_length == 128
  stage1 = pairs.get_config(f'{task},stage1')
  assert stage1.binarize.layers and stage1.binarize.granularity == 'per_channel'
  assert (stage1.distill.ce_weight, stage1.distill.kd_weight, stage1.distill.hidden_weight,
          stage1.distill.attention_weight) == (0.0, 0.0, 1.0, 1.0)
  assert stage1.learning_rate == 5e-4 and stage1.augment.copies == 0
  stage2 = pairs.get_config(f'{task},stage2')
  expected = ({**PAIR_STAGE2, 'learning_rate': 5e-5} if task in ('mrpc', 'rte', 'stsb')
              else PAIR_STAGE2)
  for field, value in expected.items():
    node = stage2
    *parents, leaf = field.split('.')
    for p in parents:
      node = node[p]
    assert node[leaf] == value, field
  # Four checkpoints half an epoch apart: the last two epochs of 32-example batches.
  train_rows = {'mrpc': 3667, 'rte': 2490, 'stsb': 5749, 'wnli': 635}[task]
  assert stage2.checkpoint_every_steps == train_rows // 32 // 2
  # Binary word embeddings on top of the student: the stage losses again, 2 epochs each.
  for name, losses, rate in (('embed1', STAGE1, 2e-4), ('embed2', STAGE2,
                                                         expected['learning_rate'])):
    embed = pairs.get_config(f'{task},{name}')
    assert embed.binarize.embeddings == 'per_dim' and embed.binarize.layers
    assert embed.binarize.granularity == 'per_channel'
    assert {f: embed.distill[f.split('.')[1]] for f in losses} == losses
    assert (embed.learning_rate, embed.num_epochs) == (rate, 2.0)
  assert (stage1.binarize.embeddings, stage2.binarize.embeddings) == ('none', 'none')


def test_pair_recipe_runs_every_stage_but_the_gold_label_ones_on_rte():
  assert pairs.stages('rte') == ('teacher', 'stage1', 'embed1')
  for task in ('mrpc', 'stsb', 'wnli'):
    assert pairs.stages(task) == pairs.STAGES
  # The skipped stages still build: a user may run them by hand.
  assert pairs.get_config('rte,stage2').distill.ce_weight == 1.0
  with pytest.raises(ValueError, match='unknown task'):
    pairs.stages('cola')


def test_unknown_pair_recipe_argument():
  for arg in ('rte', 'cola,teacher', 'rte,last'):
    with pytest.raises(ValueError, match='unknown argument'):
      pairs.get_config(arg)


def test_torch_anchor_runs_on_a_small_pair_task(tmp_path, minilm_dir):
  import json
  import os
  import subprocess
  import sys
  from conftest import write_pair_glue_dir
  write_pair_glue_dir(tmp_path)
  repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
  out = subprocess.run([sys.executable, 'scripts/torch_anchor.py', 'stsb', str(tmp_path),
                        f'--init={minilm_dir}', '--epochs=1', '--threads=1'], cwd=repo,
                       capture_output=True, text=True)
  assert out.returncode == 0, out.stderr
  result = json.loads(out.stdout.strip().splitlines()[-1])
  assert result['epochs'] == 1.0 and result['learning_rate'] == 5e-5
  assert result['num_examples'] == 48 and 'pearson_interval95' in result
  out = subprocess.run([sys.executable, 'scripts/torch_anchor.py', 'rte', str(tmp_path / 'no')],
                       cwd=repo, capture_output=True, text=True)
  assert out.returncode == 2 and out.stderr.strip().splitlines() == [
      f'error: {tmp_path / "no"}/RTE/train.tsv: train split file not found']


def test_majority_baseline_scores_the_most_frequent_train_label(tmp_path):
  import os
  import subprocess
  import sys
  from conftest import write_pair_glue_dir
  labels = write_pair_glue_dir(tmp_path)['MRPC'][1]
  repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
  out = subprocess.run([sys.executable, 'scripts/majority_baseline.py', str(tmp_path), 'mrpc',
                        'stsb'], cwd=repo, capture_output=True, text=True)
  k = int(sum(labels) * 2 > len(labels))  # train and dev hold the same pairs here
  share = sum(l == k for l in labels) / len(labels)
  f1 = 2 * share / (1 + share) if k == 1 else 0.0
  assert out.stdout.splitlines() == [
      f"mrpc: majority '{k}', dev f1 {f1:.4f}, accuracy {share:.4f} ({len(labels)})"]
  assert out.returncode == 2 and out.stderr.strip().splitlines() == [
      'error: stsb: a regression task has no majority class']
