"""Sign in: each person enters their own API key; it is checked against the service and kept only in this
browser session (``ui.auth``). Until then the console shows no data and offers no action."""

from __future__ import annotations

import streamlit as st

from ui import auth
from ui.common import service_client

st.title("Sign in to titrate")
st.markdown("Enter **your own** API key (analyst: read scorecards and reviews, draft experiments; admin: also "
            "start, pause, ship, roll back). Whatever you do here is done with your key and recorded under its "
            "name in the audit log. The key stays in this browser tab's session only: reloading the page or "
            "signing out forgets it.")
st.caption("No key? An admin creates one: `titrate keys create --role analyst --name <you>`.")

with st.form("sign_in", clear_on_submit=True):
    secret = st.text_input("API key", type="password", key="sign_in_key", placeholder="tk_…")
    submitted = st.form_submit_button("Sign in", type="primary")

if submitted:
    secret = secret.strip()
    outcome = auth.verify(service_client(secret), secret)
    if isinstance(outcome, auth.Identity):
        auth.sign_in(outcome)
        st.rerun()
    st.error(outcome.message, icon="🔒")
