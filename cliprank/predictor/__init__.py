"""The ranking predictor: model, training and saved files."""
