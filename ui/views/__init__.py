"""The console's pages (``st.Page`` scripts), one per screen."""
