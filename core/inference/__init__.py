"""Using a trained model: predictors, test-time augmentation, the images they read."""
