"""The digitrec Streamlit dashboard: `streamlit run dashboard/app.py`. Pages are in views/."""
