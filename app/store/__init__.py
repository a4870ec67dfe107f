"""Persistence: SQLAlchemy on SQLite by default, Postgres when scaled out."""
