"""SQLAlchemy models, one module per aggregate."""

from models.alerts import BudgetAlert
from models.client_keys import ClientKey
from models.credits import CreditTransaction
from models.jobs import JobRun
from models.members import Invite, Member, MemberToken
from models.meta import DATABASE_ID, InstanceMeta
from models.pins import ConversationPin
from models.pricing import PriceOverride
from models.profiles import DEFAULT_PROFILE, Profile
from models.provider_keys import ProviderKey
from models.request_logs import Attempt, RequestLog
from models.responses import StoredResponse
from models.routes import Route
from models.usage import UsageDaily
from models.users import AuditEntry, LoginThrottle, User

__all__ = [
    "DATABASE_ID",
    "DEFAULT_PROFILE",
    "Attempt",
    "AuditEntry",
    "BudgetAlert",
    "ClientKey",
    "ConversationPin",
    "CreditTransaction",
    "InstanceMeta",
    "Invite",
    "JobRun",
    "LoginThrottle",
    "Member",
    "MemberToken",
    "PriceOverride",
    "Profile",
    "ProviderKey",
    "RequestLog",
    "Route",
    "StoredResponse",
    "UsageDaily",
    "User",
]
