"""The tasks train.py runs: MLM pretraining (`mlm`) and GLUE fine-tuning (`glue`)."""

TASKS = ('mlm', 'glue')


def run(config, workdir: str) -> dict:
  """Trains the config's task into `workdir`; returns the final validation metrics.
  Raises `UserError` for mistakes the user can fix."""
  from bitmaps_jax.errors import UserError
  task = config.get('task', 'mlm')
  if task == 'mlm':
    from bitmaps_jax.tasks.mlm import task as mlm_task
    return mlm_task.run(config, workdir)
  if task == 'glue':
    from bitmaps_jax.tasks.glue import task as glue_task
    return glue_task.run(config, workdir)
  raise UserError(f'config.task: unknown task {task!r}; expected one of {", ".join(TASKS)}')
