"""Federated-learning core: specs, masks, pruning, schedules, models, training, data."""
