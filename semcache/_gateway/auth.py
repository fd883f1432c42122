"""Who is calling: the tenant behind a bearer key, and whether a key opens the admin side.

A presented key is hashed and compared with every stored hash in constant
time (:func:`hmac.compare_digest`, no early exit), so neither the key nor
which tenant owns it can be learnt from timing.  Keys are never logged.

>>> from semcache._gateway.config import Tenant, hash_key
>>> keys = KeyTable([Tenant("team-a", (hash_key("sk-a"),))], admin_hashes=(hash_key("adm"),))
>>> keys.tenant_of("sk-a").name, keys.tenant_of("sk-b"), keys.is_admin("adm")
('team-a', None, True)
"""

from __future__ import annotations

import hashlib
import hmac
import os
import secrets
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, replace

from .config import Passthrough, Tenant, hash_key

__all__ = ["Caller", "KeyTable", "bearer_key"]


@dataclass(frozen=True)
class Caller:
    """An authenticated request's tenant, and the provider key to forward (pass-through mode only)."""

    tenant: Tenant
    forward_key: str | None = None
    passthrough: bool = False


def bearer_key(headers: Mapping[str, str]) -> str | None:
    """The key of an ``Authorization: Bearer <key>`` header, or None."""
    value = headers.get("authorization", "")
    scheme, _, key = value.partition(" ")
    key = key.strip()
    return key if scheme.lower() == "bearer" and key else None


class KeyTable:
    """The tenant keys and admin keys of a config, by hash."""

    def __init__(
        self,
        tenants: Iterable[Tenant],
        *,
        admin_hashes: Iterable[str] = (),
        passthrough: Passthrough | None = None,
    ) -> None:
        self._by_hash = [(h.encode(), tenant) for tenant in tenants for h in tenant.key_hashes]
        self._admin = [h.encode() for h in admin_hashes]
        self._passthrough = passthrough or Passthrough()
        secret = os.environ.get(self._passthrough.secret_env) if self._passthrough.secret_env else None
        self._passthrough_secret = (secret or secrets.token_hex(32)).encode()

    def tenant_of(self, key: str) -> Tenant | None:
        """The tenant that owns ``key``, or None."""
        digest = hash_key(key).encode()
        found = None
        for stored, tenant in self._by_hash:  # every entry compared: the time does not depend on which matched
            if hmac.compare_digest(stored, digest):
                found = tenant
        return found

    def is_admin(self, key: str | None) -> bool:
        """Whether ``key`` is one of the admin keys."""
        if key is None:
            return False
        digest = hash_key(key).encode()
        matched = False
        for stored in self._admin:
            matched |= hmac.compare_digest(stored, digest)
        return matched

    def caller(self, key: str | None, default: Tenant) -> Caller | None:
        """The caller presenting ``key``: a configured tenant, a pass-through tenant, or None (a 401).

        Args:
            default: the settings a pass-through tenant takes (its name is derived from the key).
        """
        if key is None:
            return None
        tenant = self.tenant_of(key)
        if tenant is not None:
            return Caller(tenant)
        if not self._passthrough.enabled:
            return None
        # A keyed hash: the tenant name reveals nothing of the key, and is stable while the secret is.
        name = "pt-" + hmac.new(self._passthrough_secret, key.encode(), hashlib.sha256).hexdigest()[:24]
        return Caller(replace(default, name=name, key_hashes=()), forward_key=key, passthrough=True)

    def dashboard_cookie(self) -> str:
        """The value of the dashboard's session cookie: a keyed hash, so it opens nothing but this process."""
        return hmac.new(self._passthrough_secret, b"dashboard:" + b"|".join(self._admin), hashlib.sha256).hexdigest()

    def has_admin(self) -> bool:
        """Whether any admin key is configured (without one, the admin side is closed)."""
        return bool(self._admin)
