"""Shared models: Lightning modules that every paper reuses (sequential recommenders, ...)."""
