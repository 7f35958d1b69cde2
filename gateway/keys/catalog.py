"""The model catalog: which models each provider key serves, and the model list a caller
sees (/v1/models).

A key serves its declared `models`; when none were declared, the models its last
successful test discovered (the upstream's own model list); failing that, its provider's
list (a preset's; a CLI provider's is `*`: it runs whatever model it is asked for and
has no list). Otherwise `*` (any model) only when declared so. Models the upstream
answered "model not found" for are taken out (`unserved_models`) until a test lists them
again. A key with nothing declared, nothing discovered and no provider list serves no
model: its test has to answer first.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from sqlalchemy import Engine

from gateway import periods
from gateway.errors import GatewayError
from gateway.providers import ADAPTERS, OWNERS

if TYPE_CHECKING:
    from gateway.keys.client_keys import Caller

ANY = "*"
# Key states that serve nothing until an admin acts (or a test passes): their models are
# not offered. A key cooling down or at a limit is back soon: its models stay listed.
OUT_OF_SERVICE = frozenset(
    {"disabled", "auth_failed", "expired", "secret_unreadable", "secret_insecure"}
)
# Google names its models `models/<id>` (its OpenAI-compatible model list too) and takes
# either spelling: a Google key serves both.
GOOGLE_PREFIX = "models/"
_GOOGLE = frozenset({"gemini", "google-ai-studio-openai"})
# Where a key's catalog comes from (shown with the key).
DECLARED, DISCOVERED, PROVIDER, UNKNOWN = "declared", "discovered", "provider", "unknown"


def source(key) -> str:
    """Where the key's catalog comes from: declared, discovered, provider or unknown."""
    if key.models:
        return DECLARED
    if key.discovered_models is not None:
        return DISCOVERED
    adapter = ADAPTERS.get(key.provider)
    return PROVIDER if adapter is not None and adapter.default_models else UNKNOWN


def listed(key) -> Sequence[str]:
    """The models the key serves before what upstreams said: declared, discovered, the
    provider's list (["*"] for any), or () when none is known. Not copied: read only."""
    if key.models:
        return key.models
    if key.discovered_models is not None:
        return key.discovered_models
    adapter = ADAPTERS.get(key.provider)
    return adapter.default_models if adapter is not None else ()


def serves(key, model: str) -> bool:
    """Whether the key serves the model (its catalog, less what its upstream disowned).
    On every request's path, for every key of the profile: no copies."""
    unserved = getattr(key, "unserved_models", None)
    if unserved and model in unserved:
        return False
    names = listed(key)
    if model in names or ANY in names:
        return True
    if key.provider not in _GOOGLE:
        return False
    bare = model.removeprefix(GOOGLE_PREFIX)
    other = GOOGLE_PREFIX + bare if bare == model else bare
    return other in names and not (unserved and other in unserved)


def served(key) -> list[str]:
    """The model ids the key serves, for lists (["*"] for any; [] when none is known)."""
    gone = set(getattr(key, "unserved_models", None) or ())
    return [name for name in listed(key) if name not in gone]


def named(key) -> list[str]:
    """The concrete model ids the key serves (a `*` key: what its test discovered)."""
    names = served(key)
    if ANY not in names:
        return names
    gone = set(getattr(key, "unserved_models", None) or ())
    return [name for name in key.discovered_models or () if name not in gone]


_WHY = {
    DECLARED: "as declared",
    DISCOVERED: "as its last test discovered",
    PROVIDER: "its provider's list",
}


def explain(key) -> str:
    """What the key serves and why, in a sentence for the dashboard."""
    names = served(key)
    if not names:
        if source(key) == UNKNOWN:
            return "Serves no model yet: test the key, or declare its models."
        text = "Serves no model"
    else:
        text = "Serves any model" if ANY in names else "Serves " + ", ".join(names)
    text += f" ({_WHY.get(source(key), 'none known')})"
    gone = getattr(key, "unserved_models", None)
    if gone:
        text += f"; its upstream said it has no {', '.join(sorted(gone))}"
    return text + "."


@dataclass
class ModelList:
    """/v1/models: the models a caller may use in a profile, with the provider owning each."""

    engine: Engine
    profiles: object  # candidates.Profiles
    routes: object  # routes.Routes
    clock: object

    def models(self, profile: str, caller: Caller | None = None) -> list[dict]:
        """The union of the models the profile's keys serve that the caller may use (None:
        the master key, every model), and the route aliases whose target or one of whose
        fallbacks is served."""
        from gateway import store  # store's KeyRow asks this module what a key serves

        profile_id = self.profiles.resolve(profile).id
        with self.engine.connect() as conn:
            keys = store.load_keys(conn, profile_id, periods.local_day(self.clock.now()))
        keys = [key for key in keys if key.status not in OUT_OF_SERVICE]
        allowed = caller.models if caller is not None else None
        owners: dict[str, str] = {}
        for key in keys:
            owner = OWNERS.get(key.provider, key.provider)
            # A client key's own models that the key serves (a `*` key serves them all).
            names = named(key) if allowed is None else [m for m in allowed if serves(key, m)]
            for name in names:
                owners.setdefault(name, owner)
        table = self.routes.table()
        for alias in table.aliases():  # listed when its target or a fallback is served
            if allowed is not None and alias not in allowed:
                continue
            chain = table.chain(alias, paid_allowed=True)
            if any(serves(k, model) for model in chain for k in keys):
                owners.setdefault(alias, "keyrelay")
        return [
            {"id": name, "object": "model", "created": 0, "owned_by": owner}
            for name, owner in sorted(owners.items())
        ]

    def model(self, profile: str, model_id: str, caller: Caller | None = None) -> dict:
        """One model (a Google one by either name), or a 404 naming where to look."""
        found = {entry["id"]: entry for entry in self.models(profile, caller)}
        if model_id in found:
            return found[model_id]
        bare = model_id.removeprefix(GOOGLE_PREFIX)
        spellings = {bare, GOOGLE_PREFIX + bare} - {model_id}
        if caller is not None and caller.models is not None:  # a client key asks by its names
            spellings = set()
        for other in spellings:
            entry = found.get(other)
            if entry is not None and entry["owned_by"] in _GOOGLE:
                return {**entry, "id": model_id}
        raise GatewayError(
            404,
            f"The model '{model_id}' is not served in profile '{profile}'. "
            "GET /v1/models lists the models you can use.",
            code="model_not_found",
            param="model",
        )
