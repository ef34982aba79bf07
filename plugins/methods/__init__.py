"""Built-in fine-tuning methods (`finetune.method`): the standard recipe, domain adaptation, LwF."""
