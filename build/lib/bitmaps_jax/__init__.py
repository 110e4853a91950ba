"""bitmaps-jax: binary BERT in JAX/Flax.

The public API; everything else lives in the subpackages:
  binary/  the straight-through sign, binarization schemes, binary layers, bit packing
  model/   BERT, its binary weights, Hugging Face conversion, the packed 1-bit file
  train/   the training loop, data parallelism, optimizer, checkpoints, the run directory
  tasks/   MLM pretraining and GLUE fine-tuning (data, task, distillation, evaluation)
  tools/   commands: memory table, benchmarks, export, packed-model prediction
"""

from bitmaps_jax.binary.schemes import BinarizeConfig
from bitmaps_jax.binary.ste import sign_ste
from bitmaps_jax.model.bert import (BertConfig, BertForMaskedLM, BertForSequenceClassification,
                                    BertModel)
from bitmaps_jax.model.hf import load_hf_bert, save_hf_bert
from bitmaps_jax.model.packed import PackedModel, load_packed, save_packed

__all__ = ['BinarizeConfig', 'sign_ste', 'BertConfig', 'BertModel', 'BertForMaskedLM',
           'BertForSequenceClassification', 'load_hf_bert', 'save_hf_bert', 'PackedModel',
           'load_packed', 'save_packed']
