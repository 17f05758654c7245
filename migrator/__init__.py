"""migrator: move a group of tables between PostgreSQL servers while the application runs."""

__version__ = "0.1.0"
