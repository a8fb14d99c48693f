"""Training: single-shape fitting (``fit``), the fitted model (``FittedSDF``, ``load_model``), losses,
training data and checkpoints."""
