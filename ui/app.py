"""The titrate console: ``streamlit run ui/app.py`` (or ``titrate console``).

Talks to the service only over REST (``TITRATE_API_URL``, ``TITRATE_API_KEY``); see ``ui/client.py``.
"""

from __future__ import annotations

import sys
from pathlib import Path

import streamlit as st

HERE = Path(__file__).resolve().parent
if str(HERE.parent) not in sys.path:  # `streamlit run ui/app.py` puts ui/ on the path, not the repository root
    sys.path.insert(0, str(HERE.parent))

from ui.common import get_client  # noqa: E402

st.set_page_config(page_title="titrate console", page_icon=":material/science:", layout="wide")

VIEWS = HERE / "views"
pages = {
    "Experiments": [
        st.Page(VIEWS / "experiments.py", title="Experiments", icon=":material/science:", default=True),
        st.Page(VIEWS / "new_experiment.py", title="New experiment", icon=":material/add_circle:", url_path="new"),
        st.Page(VIEWS / "experiment.py", title="Experiment", icon=":material/monitoring:", url_path="experiment"),
        st.Page(VIEWS / "review.py", title="Ship / no-ship review", icon=":material/rocket_launch:", url_path="review"),
    ],
    "Catalog & tools": [
        st.Page(VIEWS / "metrics.py", title="Metrics catalog", icon=":material/straighten:", url_path="metrics"),
        st.Page(VIEWS / "models.py", title="Models", icon=":material/memory:", url_path="models"),
        st.Page(VIEWS / "design.py", title="Design calculator", icon=":material/calculate:", url_path="design"),
    ],
}
page = st.navigation(pages)

client = get_client()
with st.sidebar:
    health = client.health()
    if health.ok:
        st.caption(f"service: {client.base_url} ✅")
    else:
        st.error(f"service unreachable at {client.base_url}: {health.message}", icon="🔌")

page.run()
