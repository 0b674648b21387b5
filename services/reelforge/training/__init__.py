"""Data and evaluation for training the built-in model: the seeded clip generator and the evaluator."""
