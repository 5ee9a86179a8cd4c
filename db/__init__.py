"""Persistence: tortoise-orm models, migrations and connection setup."""
