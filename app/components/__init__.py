"""Custom Streamlit components: static HTML and JavaScript, no build step, no network."""
