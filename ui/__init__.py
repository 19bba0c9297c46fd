"""The Streamlit console: talks to the titrate service only over REST."""
