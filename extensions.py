"""Flask extensions, created unbound here and bound to the app in create_app()."""

from flask_login import LoginManager
from flask_sqlalchemy import SQLAlchemy
from flask_wtf.csrf import CSRFProtect
from sqlalchemy.orm import DeclarativeBase


class Base(DeclarativeBase):
    """Declarative base shared by every model."""


db = SQLAlchemy(model_class=Base)


# The dashboard's logins (flask-login) and CSRF tokens (flask-wtf). CSRF is checked by the
# dashboard blueprints themselves (WTF_CSRF_CHECK_DEFAULT off): the proxy never pays for it.
login_manager = LoginManager()
csrf = CSRFProtect()
