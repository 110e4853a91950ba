# The loss weights of the two distillation stages, sourced by the staged scripts so that a
# stage means the same in each:
#   1 (or a): intermediate layers only, hidden-state MSE + attention KL;
#   2 (or b): gold-label CE + logits KL only.
STAGE1_LOSSES=(--config.distill.ce_weight=0 --config.distill.kd_weight=0
               --config.distill.hidden_weight=1 --config.distill.attention_weight=1)
STAGE2_LOSSES=(--config.distill.ce_weight=1 --config.distill.kd_weight=1
               --config.distill.hidden_weight=0 --config.distill.attention_weight=0)
