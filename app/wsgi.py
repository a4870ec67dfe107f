"""WSGI entry point for gunicorn: ``gunicorn app.wsgi:application``."""

from app import create_app
from app.logging import configure

configure()
application = create_app()
application.extensions["smart_draft"].warm_up()  # the first launch should not wait for the model
