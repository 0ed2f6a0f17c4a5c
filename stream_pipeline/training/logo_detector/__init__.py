"""Logo (badge) detector: dataset building, training, evaluation."""
