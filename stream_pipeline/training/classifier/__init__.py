"""Brand classifier: dataset building, training, evaluation."""
