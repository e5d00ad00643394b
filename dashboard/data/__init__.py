"""Data access for the dashboard's pages: every read and write lives here, cached with
``st.cache_data`` where it is a read; the page files hold UI only."""
