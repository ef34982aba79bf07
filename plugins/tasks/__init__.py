"""Built-in tasks (`graft_tasks()`): classification, multilabel, segmentation."""
