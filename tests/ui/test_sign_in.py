"""The console signs people in (AppTest against the live service): nothing shows or acts before sign-in, each
person acts with their own key and role, and the audit log names the key that acted."""

from __future__ import annotations

import os

import pytest
from streamlit.testing.v1 import AppTest

from tests.ui.conftest import APP, ROOT, Service, experiment_body, sign_in
from ui import auth
from ui.client import api_url_from_env
from ui.common import get_http

pytestmark = pytest.mark.usefixtures("console_env")
VIEWS = ROOT / "ui" / "views"
ADMIN_ACTOR_NAME = "console-tests-admin"
ANALYST_NAME = "console-tests-analyst"


def texts(at: AppTest) -> str:
    parts = [m.value for m in at.markdown] + [c.value for c in at.caption] + [e.value for e in at.info]
    parts += [e.value for e in at.error] + [e.value for e in at.warning] + [e.value for e in at.success]
    parts += [t.value for t in at.title] + [h.value for h in at.subheader] + [h.value for h in at.header]
    return "\n".join(str(p) for p in parts)


def fresh() -> AppTest:
    return AppTest.from_file(APP, default_timeout=60)


def running(service: Service, key: str) -> None:
    with service.client() as http:
        http.post("/v1/experiments", json=experiment_body(key)).raise_for_status()
        http.post(f"/v1/experiments/{key}/start").raise_for_status()


def audit(service: Service, key: str) -> list[dict[str, object]]:
    with service.client() as http:
        return list(http.get(f"/v1/experiments/{key}/audit").raise_for_status().json())


def me(service: Service, api_key: str) -> dict[str, str]:
    with service.client(api_key) as http:
        return dict(http.get("/v1/keys/me").raise_for_status().json())


def shows_no_data(at: AppTest) -> None:
    assert not at.exception, [e.value for e in at.exception]
    assert not at.dataframe
    assert not at.get("vega_lite_chart")
    assert not at.metric
    assert [b.key for b in at.button if b.key != "FormSubmitter:sign_in-Sign in"] == []


# --- before sign-in ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize("page", ["views/experiments.py", "views/experiment.py", "views/review.py",
                                  "views/new_experiment.py", "views/metrics.py", "views/models.py",
                                  "views/design.py"])
def test_before_sign_in_every_page_shows_the_sign_in_page_only(page: str) -> None:
    at = fresh()
    at.query_params["key"] = "live-exp"
    at.run()
    assert at.title[0].value == "Sign in to titrate"
    shows_no_data(at)
    with pytest.raises(ValueError, match="Could not find a navigation page"):  # the navigation holds the
        at.switch_page(page)                                                 # sign-in page only
    at.run()
    assert at.title[0].value == "Sign in to titrate"
    shows_no_data(at)


@pytest.mark.parametrize("page", ["experiments.py", "experiment.py", "review.py", "new_experiment.py", "metrics.py",
                                  "models.py", "design.py"])
def test_a_page_run_on_its_own_refuses_without_a_signed_in_key(page: str) -> None:
    """Defence in depth: even run outside the navigation, a page stops before its first request."""
    at = AppTest.from_file(str(VIEWS / page), default_timeout=60)
    at.query_params["key"] = "live-exp"
    at.run()
    shows_no_data(at)
    assert [w.value for w in at.warning] == ["Sign in with your API key first."]


def test_wrong_sdk_and_empty_keys_are_refused(console_env: Service) -> None:
    with console_env.client() as http:
        sdk_key = http.post("/v1/keys", json={"role": "sdk", "name": "console-sdk"}).raise_for_status().json()["key"]
    for attempt, expected in (("tk_not-a-key", "does not know this key"), (sdk_key, "'sdk' role cannot use"),
                              ("   ", "Enter your API key")):
        at = sign_in(fresh(), attempt)
        assert any(expected in e.value for e in at.error), (attempt, [e.value for e in at.error])
        assert auth.SESSION_KEY not in at.session_state
        assert at.title[0].value == "Sign in to titrate"
        shows_no_data(at)


# --- signed in ----------------------------------------------------------------------------------------------------

def test_sign_in_keeps_the_key_in_this_session_only_and_sign_out_forgets_it(console_env: Service) -> None:
    at = sign_in(fresh(), console_env.admin_key)
    assert not at.exception
    identity = at.session_state[auth.SESSION_KEY]
    assert (identity.name, identity.role) == (ADMIN_ACTOR_NAME, "admin")
    assert at.title[0].value == "Experiments"
    assert "signed in as **console-tests-admin** · admin" in texts(at)
    assert "sign_in_key" not in at.session_state  # the form is gone with its value: the key is only in the identity
    assert console_env.admin_key not in repr(identity)
    assert console_env.admin_key not in os.environ.get("TITRATE_API_KEY", "")
    # the one HTTP client cached for every session carries no credentials
    shared = get_http(api_url_from_env())
    assert "authorization" not in {k.lower() for k in shared.headers}
    assert console_env.admin_key not in str(shared.headers)
    # a second session in the same process is not signed in by the first
    other = fresh()
    other.run()
    assert other.title[0].value == "Sign in to titrate"
    shows_no_data(other)

    at.button(key="sign_out").click().run()
    assert auth.SESSION_KEY not in at.session_state
    assert at.title[0].value == "Sign in to titrate"
    shows_no_data(at)


def test_an_analyst_cannot_ship_an_admin_can_and_the_audit_names_each(console_env: Service) -> None:
    running(console_env, "signin-ship-exp")
    admin = sign_in(fresh(), console_env.admin_key)
    analyst = sign_in(fresh(), console_env.analyst_key)  # both sessions live side by side in one process
    for at in (admin, analyst):
        at.query_params["key"] = "signin-ship-exp"
        at.switch_page("views/review.py").run()
        assert not at.exception, [e.value for e in at.exception]
        assert "Decision:" in texts(at)  # both see the review
    # the analyst: no ship, rollback or stop, and the reason why
    assert not [b for b in analyst.button if b.key in {"ship", "rollback", "stop"}]
    assert any("needs the 'admin' role" in i.value and ANALYST_NAME in i.value for i in analyst.info)
    # the analyst's key is refused by the service too, whatever a page would send
    with console_env.client(console_env.analyst_key) as http:
        refused = http.post("/v1/experiments/signin-ship-exp/ship", json={"variant": "v2", "override_reason": "x"})
    assert refused.status_code == 403
    # the admin ships through the page
    admin.text_area(key="override_reason").input("launch call by the admin").run()
    admin.button(key="ship").click().run()
    assert not admin.exception
    assert "Shipped v2" in texts(admin)
    ship_rows = [a for a in audit(console_env, "signin-ship-exp") if a["action"] == "experiment.ship"]
    assert [a["actor"] for a in ship_rows] == [me(console_env, console_env.admin_key)["actor"]]
    assert str(ship_rows[0]["actor"]).startswith(f"{ADMIN_ACTOR_NAME} (")


def test_an_analyst_drafts_with_their_own_name_in_the_audit(console_env: Service) -> None:
    at = sign_in(fresh(), console_env.analyst_key)
    at.switch_page("views/new_experiment.py").run()
    for key, value in (("f_key", "analyst-draft"), ("f_name", "Analyst draft"), ("f_owner", "ana"),
                       ("f_change", "serve the analyst's idea"), ("f_rationale", "it should help")):
        at.text_input(key=key).input(value)
    at.button(key="f_submit").click().run()
    assert "Created experiment **analyst-draft**" in texts(at), texts(at)
    rows = audit(console_env, "analyst-draft")
    assert [(a["action"], a["actor"]) for a in rows] == [("experiment.create",
                                                          me(console_env, console_env.analyst_key)["actor"])]
    # …and the draft's page offers the analyst no start button
    at.query_params["key"] = "analyst-draft"
    at.switch_page("views/experiment.py").run()
    assert at.metric[0].value == "draft"
    assert not [b for b in at.button if (b.key or "").startswith("action_")]


def test_a_key_revoked_after_sign_in_signs_the_session_out(console_env: Service) -> None:
    with console_env.client() as http:
        created = http.post("/v1/keys", json={"role": "admin", "name": "soon-revoked"}).raise_for_status().json()
    at = sign_in(fresh(), created["key"])
    assert at.session_state[auth.SESSION_KEY].name == "soon-revoked"
    with console_env.client() as http:
        http.delete(f"/v1/keys/{created['id']}").raise_for_status()
    at.switch_page("views/metrics.py").run()
    assert any("no longer accepts your API key" in e.value for e in at.error), [e.value for e in at.error]
    assert auth.SESSION_KEY not in at.session_state
    at.run()
    assert at.title[0].value == "Sign in to titrate"


def test_the_service_is_named_before_sign_in(console_env: Service) -> None:
    at = fresh()
    at.run()
    assert f"service: {console_env.url} ✅" in texts(at)
    shows_no_data(at)
