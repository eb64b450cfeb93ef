"""Shared data layer: sequence datasets, leave-one-out splits, loaders for the field's formats."""
