"""The recipe configs are the settings their stages were measured with."""

import pytest

from configs import glue
from configs.recipes import cola

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
