"""Putting a trained model to work: export to a model folder, verify, serve. Everything here except
``export.py`` runs without torch (``pip install sigverify[serve]``)."""
