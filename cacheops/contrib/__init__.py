"""Integrations with other Django apps, each imported only by projects that use it."""
