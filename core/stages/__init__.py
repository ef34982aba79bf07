"""The six stages as plain functions; pipelines/ wraps each in a Prefect flow."""

from graftflow.core.stages import acquire, augment, evaluate, export, finetune, lr_find, pretrain

STAGE_FUNCTIONS = {
    "acquire": acquire.run,
    "augment": augment.run,
    "pretrain": pretrain.run,
    "finetune": finetune.run,
    "evaluate": evaluate.run,
    "export": export.run,
    "lr-find": lr_find.run,  # on demand (`graft lr-find`), not part of the transfer chain
}
