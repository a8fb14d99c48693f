"""Training: single-shape fitting (``fit``), the fitted model (``FittedSDF``), DeepSDF's auto-decoder
(``train_deepsdf``, ``AutoDecoder``, ``reconstruct``), saved models (``load_model``), losses,
training data and checkpoints."""
