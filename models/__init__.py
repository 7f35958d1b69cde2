"""SQLAlchemy models, one module per aggregate."""

from models.profiles import DEFAULT_PROFILE, Profile
from models.provider_keys import ProviderKey
from models.request_logs import Attempt, RequestLog
from models.usage import UsageDaily

__all__ = ["DEFAULT_PROFILE", "Attempt", "Profile", "ProviderKey", "RequestLog", "UsageDaily"]
