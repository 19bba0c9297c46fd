"""Models: the registered model variant specs, and registering one (when the service serves models)."""

from __future__ import annotations

import pandas as pd
import streamlit as st

from ui.common import ErrorSlots, get_client, identity, needs_role, not_available, present, show_refusal

client = get_client()
st.title("Models")

if flash := st.session_state.pop("model_created", None):
    st.success(f"Registered model **{flash}**.", icon="✅")

reply = client.models()
if reply.missing:
    not_available("Model serving (/v1/models)")
    st.stop()
if not reply.ok:
    show_refusal(reply, "Listing models")
    st.stop()
if reply.data:
    st.dataframe(present(pd.DataFrame([{k: m.get(k) for k in ("key", "task", "path", "dtype", "device", "max_batch",
                                                      "max_length", "pooling", "loaded")} for m in reply.data])),
                 hide_index=True, width="stretch")
else:
    st.info("No models registered yet.")

st.subheader("Register a model variant")
if not identity().may("register_model"):
    needs_role("register_model", "Registering a model")
    st.stop()
slot = ErrorSlots()
with st.form("model_form"):
    slot()
    c1, c2 = st.columns(2)
    with c1:
        key = st.text_input("Key", placeholder="ranker-v2-bf16", key="mo_key")
        slot("key")
    with c2:
        task = st.selectbox("Task", ["text-classification", "embedding"], key="mo_task")
    path = st.text_input("Path (local directory of a transformers model)", key="mo_path")
    slot("path")
    c1, c2, c3, c4 = st.columns(4)
    dtype = c1.selectbox("dtype", ["float32", "bfloat16", "float16"], key="mo_dtype")
    device = c2.text_input("device", "auto", key="mo_device")
    max_batch = c3.number_input("max batch", 1, 4096, 64, key="mo_max_batch")
    max_length = c4.number_input("max length", 1, 32768, 128, key="mo_max_length")
    slot("device")
    submitted = st.form_submit_button("Register model", type="primary")

if submitted:
    created = client.create_model({"key": key.strip(), "task": task, "path": path.strip(), "dtype": dtype,
                                   "device": device.strip(), "max_batch": int(max_batch),
                                   "max_length": int(max_length)})
    if created.ok:
        st.session_state["model_created"] = created.data["key"]
        st.rerun()
    elif created.field_errors:
        slot.place(created.field_errors)
    else:
        show_refusal(created, "Registering the model")
