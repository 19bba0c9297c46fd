"""Who is signed in to this browser session, and what their key's role lets the console show and do.

Each person signs in with their own API key. The key is checked against the service (``GET /v1/keys/me``, which
also tells its name and role) and then kept only in that browser session's ``st.session_state`` — never in a
file, an environment variable, a cache shared between sessions or the URL — so every request goes with that
person's key, the service enforces that person's role, and the audit log names them. Reloading the page starts
a new session: sign in again.

The console hides what the role may not do, with the same minimum roles as the service (README, "Using the
API"); the service still refuses anything a hidden control would have sent (403).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

import streamlit as st

from ui.client import TitrateClient

SESSION_KEY = "titrate_identity"
ROLE_RANK = {"sdk": 0, "analyst": 1, "admin": 2}
CONSOLE_ROLES = ("analyst", "admin")  # an sdk key reads nothing the console shows

Action = Literal["start", "pause", "resume", "stop", "ship", "rollback", "create_experiment", "create_metric",
                 "register_model", "refresh_scorecard"]
#: the minimum role of each action the console offers: the service's rule for the route it calls
REQUIRED_ROLE: dict[Action, str] = {
    "start": "admin", "pause": "admin", "resume": "admin", "stop": "admin", "ship": "admin", "rollback": "admin",
    "create_experiment": "analyst", "create_metric": "analyst", "register_model": "analyst",
    "refresh_scorecard": "analyst",
}


@dataclass(frozen=True)
class Identity:
    """A signed-in person: their key (kept out of ``repr``), its name, role and how the audit log names it."""

    api_key: str = field(repr=False)
    name: str
    role: str
    actor: str

    def may(self, action: Action) -> bool:
        """Whether this key's role may do ``action`` (``REQUIRED_ROLE``)."""
        return ROLE_RANK.get(self.role, -1) >= ROLE_RANK[REQUIRED_ROLE[action]]


@dataclass(frozen=True)
class SignInRefused:
    """Why a key was not accepted, in words for the sign-in page."""

    message: str


def verify(client: TitrateClient, api_key: str) -> Identity | SignInRefused:
    """Ask the service who ``api_key`` is (``client`` must carry that key); refuse unknown, revoked and sdk keys."""
    if not api_key:
        return SignInRefused("Enter your API key.")
    reply = client.whoami()
    if reply.status == 0:
        return SignInRefused(reply.message)
    if reply.status == 401:
        return SignInRefused("The service does not know this key (mistyped or revoked).")
    if not reply.ok or not isinstance(reply.data, dict):
        return SignInRefused(f"The service could not check the key — {reply.message}")
    role = str(reply.data.get("role"))
    if role not in CONSOLE_ROLES:
        return SignInRefused(f"A key with the '{role}' role cannot use the console: sign in with an analyst or "
                             "admin key (`titrate keys create --role analyst --name you`).")
    name = str(reply.data.get("name"))
    return Identity(api_key=api_key, name=name, role=role, actor=str(reply.data.get("actor") or name))


def current() -> Identity | None:
    """The person signed in to this browser session, if anyone."""
    identity = st.session_state.get(SESSION_KEY)
    return identity if isinstance(identity, Identity) else None


def sign_in(identity: Identity) -> None:
    """Remember ``identity`` for this browser session only."""
    st.session_state[SESSION_KEY] = identity


def sign_out() -> None:
    """Forget the signed-in person (and their key) in this browser session."""
    st.session_state.pop(SESSION_KEY, None)
