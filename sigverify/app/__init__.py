"""The interactive app (Streamlit): ``sigverify app --model MODEL_DIR``."""
