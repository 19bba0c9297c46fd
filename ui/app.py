"""The titrate console: ``titrate console`` (or ``streamlit run ui/app.py``; ``ui/.streamlit/config.toml`` keeps
either headless, bound to 127.0.0.1 and without usage statistics).

Talks to the service only over REST (``TITRATE_API_URL``; see ``ui/client.py``). Each person signs in with their
own API key (``ui/auth.py``): before that the navigation holds only the sign-in page; after it, the pages act
with that key and show only what its role may do.
"""

from __future__ import annotations

import sys
from pathlib import Path

import streamlit as st

HERE = Path(__file__).resolve().parent
if str(HERE.parent) not in sys.path:  # `streamlit run ui/app.py` puts ui/ on the path, not the repository root
    sys.path.insert(0, str(HERE.parent))

from ui import auth  # noqa: E402
from ui.client import api_url_from_env  # noqa: E402
from ui.common import service_client  # noqa: E402

st.set_page_config(page_title="titrate console", page_icon=":material/science:", layout="wide")

VIEWS = HERE / "views"
identity = auth.current()
if identity is None:
    page = st.navigation([st.Page(VIEWS / "sign_in.py", title="Sign in", icon=":material/login:",
                                  url_path="sign-in", default=True)])
else:
    page = st.navigation({
        "Experiments": [
            st.Page(VIEWS / "experiments.py", title="Experiments", icon=":material/science:", default=True),
            st.Page(VIEWS / "new_experiment.py", title="New experiment", icon=":material/add_circle:",
                    url_path="new"),
            st.Page(VIEWS / "experiment.py", title="Experiment", icon=":material/monitoring:", url_path="experiment"),
            st.Page(VIEWS / "review.py", title="Ship / no-ship review", icon=":material/rocket_launch:",
                    url_path="review"),
        ],
        "Catalog & tools": [
            st.Page(VIEWS / "metrics.py", title="Metrics catalog", icon=":material/straighten:", url_path="metrics"),
            st.Page(VIEWS / "models.py", title="Models", icon=":material/memory:", url_path="models"),
            st.Page(VIEWS / "design.py", title="Design calculator", icon=":material/calculate:", url_path="design"),
        ],
    })

with st.sidebar:
    health = service_client("").health()  # public: says nothing but "up"
    if health.ok:
        st.caption(f"service: {api_url_from_env()} ✅")
    else:
        st.error(f"service unreachable at {api_url_from_env()}: {health.message}", icon="🔌")
    if identity is not None:
        st.caption(f"signed in as **{identity.name}** · {identity.role}")
        st.button("Sign out", key="sign_out", icon=":material/logout:", on_click=auth.sign_out)

page.run()
